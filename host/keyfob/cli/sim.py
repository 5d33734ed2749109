"""``keyfob sim``: run a virtual token (the firmware under the MicroPython unix port)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click


def _default_workdir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(state) / "keyfob" / "sim"


def _firmware(workdir: Path):
    """(local, device name) pairs of the sim board's image, built by keyfob.build."""
    from keyfob import build

    return build.build("sim", workdir / "build")


@click.group("sim")
def sim() -> None:
    """The virtual token."""


_HELP = """commands (then Enter):
  p [MS]          press the button (default 80 ms)      l   long press (2.5 s: serial number)
  h / r           hold / release the button             s   show the screen (art, code or text)
  png FILE        save the screen as a PNG
  clock [T [PPM]] set the DS3231 to Unix time T (default now), drifting PPM parts per million
  osf             stop the DS3231's oscillator (the token must then say "Clock lost")
  cut             cut the power at once                 on  power on again (same flash)
  on-held         power on with the button held (factory-reset offer)
  q               quit"""


def _show(tok) -> None:
    from keyfob.sim.textread import text_lines

    screen = tok.screen()
    click.echo(screen.quadrant_art())
    digits = screen.digits()
    if digits is not None:
        click.echo(f"code: {digits}")
    elif screen.kind() == "off":
        click.echo("(display off)")
    else:
        click.echo("text: " + " / ".join(text_lines(screen)))


def _step(tok, words: list[str]) -> bool:
    """One command; False to quit."""
    cmd, args = words[0], words[1:]
    if cmd == "q":
        return False
    if cmd == "p":
        tok.press(int(args[0]) if args else 80)
        tok.wait_idle()
        _show(tok)
    elif cmd == "l":
        tok.long_press()
        tok.wait_idle()
        _show(tok)
    elif cmd == "h":
        tok.hold()
    elif cmd == "r":
        tok.release()
        tok.wait_idle()
        _show(tok)
    elif cmd == "s":
        _show(tok)
    elif cmd == "png":
        if not args:
            raise click.UsageError("png FILE")
        tok.screen().save_png(args[0])
        click.echo(f"saved {args[0]}")
    elif cmd == "clock":
        t = float(args[0]) if args else time.time()
        ppm = float(args[1]) if len(args) > 1 else 0.0
        tok.set_clock(t, ppm)
        click.echo(f"DS3231 set to {t:.0f} ({ppm:+g} ppm)")
    elif cmd == "osf":
        t, ppm, _ = tok.clock()
        tok.set_clock(t, ppm, osf=True)
        click.echo("DS3231 oscillator-stop flag set")
    elif cmd == "cut":
        tok.cut_power()
        click.echo("power cut")
    elif cmd in ("on", "on-held"):
        tok.power_on(hold=cmd == "on-held")
        click.echo("powered on" + (" with the button held (r releases it)" if cmd == "on-held" else ""))
    else:
        click.echo(_HELP)
    return True


@sim.command("run")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the token keeps its flash image and clock (default: ~/.local/state/keyfob/sim).")
@click.option("--deploy/--no-deploy", default=None,
              help="Copy the current firmware onto the flash first (default: yes, unless the token is locked).")
@click.option("--heapsize", default=None, help="MicroPython heap, e.g. 160K (a small chip plus the emulated parts).")
@click.option("--hold", is_flag=True, help="Power on with the button held.")
def run(workdir: Path | None, deploy: bool | None, heapsize: str | None, hold: bool) -> None:
    """Start a virtual token and drive it from the keyboard (type ? for the commands).

    Its USB port is printed: use it with mpremote, pyserial or the keyfob commands
    (keyfob provision --port ..., keyfob time-sync, keyfob reset) from another terminal.
    """
    from keyfob.deploy import LockedTokenError
    from keyfob.sim import SimError, VirtualToken

    workdir = (workdir or _default_workdir()).resolve()
    with VirtualToken(workdir, heapsize=heapsize, register=True) as tok:
        if not tok.state_path.exists():
            tok.set_clock(time.time())
        tok.power_on(hold=hold)
        if deploy is not False:
            # The current firmware, so a `git pull` shows at the next start; a locked token
            # keeps what it has (its USB console is closed: factory-reset it to update).
            try:
                tok.deploy(_firmware(workdir))
            except LockedTokenError:
                if deploy:
                    raise click.ClickException("the virtual token is locked: factory-reset it to deploy") from None
                click.echo("(locked token: keeping the firmware on its flash)")
        click.echo(f"virtual token on {tok.port}  (workdir {workdir})")
        click.echo("type ? for the commands")
        while True:
            try:
                words = input("> ").split()
            except (EOFError, KeyboardInterrupt):
                break
            if not words:
                continue
            try:
                if not _step(tok, words):
                    break
            except (SimError, ValueError, click.UsageError) as exc:
                click.echo(f"sim: {exc}", err=True)
            if not tok.is_running and words[0] != "cut":
                click.echo(f"the token is off (exit status {tok.exit_code}); 'on' powers it on again")
        if tok.is_running:
            tok.power_off()


def register(main: click.Group) -> None:
    main.add_command(sim)
