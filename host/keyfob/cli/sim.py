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


@sim.command("run")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the token keeps its flash image and clock (default: ~/.local/state/keyfob/sim).")
@click.option("--no-deploy", is_flag=True, help="Boot what is on the flash; do not copy the firmware first.")
@click.option("--heapsize", default=None, help="MicroPython heap, e.g. 96K (a small chip).")
@click.option("--hold", is_flag=True, help="Power on with the button held.")
def run(workdir: Path | None, no_deploy: bool, heapsize: str | None, hold: bool) -> None:
    """Start a virtual token and drive its button from the keyboard.

    Its USB port is printed: use it with mpremote, pyserial or the keyfob commands.
    Keys (then Enter): p = press, l = long press, s = show the screen, c = set the
    DS3231 to now, q = quit.
    """
    from keyfob.sim import SimError, VirtualToken

    workdir = (workdir or _default_workdir()).resolve()
    with VirtualToken(workdir, heapsize=heapsize, register=True) as tok:
        if not tok.state_path.exists():
            tok.set_clock(time.time())
        if no_deploy:
            tok.power_on(hold=hold)
        else:
            files = _firmware(workdir)
            tok.power_on(nomain=True, hold=hold)
            tok.deploy(files)  # then a soft reset: main.py starts
        click.echo(f"virtual token on {tok.port}  (workdir {workdir})")
        click.echo("p = press, l = long press, h/r = hold/release, s = screen, c = clock := now, q = quit")
        while True:
            try:
                key = input("> ").strip().lower()
            except (EOFError, KeyboardInterrupt):
                break
            try:
                if key == "q":
                    break
                if key == "p":
                    tok.press()
                    tok.wait_idle()
                elif key == "l":
                    tok.long_press()
                    tok.wait_idle()
                elif key == "h":
                    tok.hold()
                elif key == "r":
                    tok.release()
                    tok.wait_idle()
                elif key == "c":
                    tok.set_clock(time.time())
                elif key != "s":
                    click.echo("p, l, h, r, s, c or q")
                    continue
                if key in ("p", "l", "r", "s"):
                    click.echo(tok.screen().text_art(half_blocks=True))
                if not tok.is_running:
                    click.echo(f"the token is off (exit status {tok.exit_code})")
                    break
            except SimError as exc:
                click.echo(f"sim: {exc}", err=True)
        tok.power_off()


def register(main: click.Group) -> None:
    main.add_command(sim)
