"""``keyfob sim``: run a virtual token, on the unix tier (the firmware under the MicroPython unix
port) or the Pico tier (the real rp2 port in an emulated RP2040): a keyboard console (``run``), or
a token in the background driven command by command (``start``, ``press``, ``screen``, ...)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from keyfob.errors import BadInput, Refused

from ._common import emit_json, json_option


def _default_workdir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(state) / "keyfob" / "sim"


def _firmware(workdir: Path, board: str = "sim"):
    """(local, device name) pairs of the board's image, built by keyfob.build."""
    from keyfob import build

    return build.build(board, workdir / "build")


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


BOARD_OPTION = click.option(
    "--board",
    type=click.Choice(["unix", "pico"]),
    default="unix",
    show_default=True,
    help="unix: the firmware under the MicroPython unix port; pico: the real Pico port in an emulated RP2040.",
)
WORKDIR_OPTION = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the token keeps its flash image and clock (default: ~/.local/state/keyfob/sim).",
)


@sim.command("run")
@BOARD_OPTION
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the token keeps its flash image and clock (default: ~/.local/state/keyfob/sim).",
)
@click.option(
    "--deploy/--no-deploy",
    default=None,
    help="Copy the current firmware onto the flash first (default: yes, unless the token is locked).",
)
@click.option("--heapsize", default=None, help="MicroPython heap, e.g. 160K (a small chip plus the emulated parts).")
@click.option("--hold", is_flag=True, help="Power on with the button held.")
@json_option(
    help='Announce the token as {"board", "port", "workdir"} on stdout (errors as JSON too); '
    "the console itself stays text."
)
def run(board: str, workdir: Path | None, deploy: bool | None, heapsize: str | None, hold: bool, as_json: bool) -> None:
    """Start a virtual token and drive it from the keyboard (type ? for the commands).

    Its USB port is printed: use it with mpremote, pyserial or the keyfob commands
    (keyfob provision --port ..., keyfob time-sync, keyfob reset) from another terminal.
    """
    from keyfob.deploy import LockedTokenError
    from keyfob.sim import SimError, VirtualToken

    workdir = (workdir or _board_workdir(board)).resolve()
    if board == "pico":
        from keyfob.sim.pico import PicoToken

        if heapsize:
            raise BadInput("--heapsize is the unix tier's: the Pico has its chip's heap")
        token = PicoToken(workdir, register=True)
    else:
        token = VirtualToken(workdir, heapsize=heapsize, register=True)
    with token as tok:
        if not tok.state_path.exists():
            tok.set_clock(time.time())
        tok.power_on(hold=hold)
        if deploy is not False:
            # The current firmware, so a `git pull` shows at the next start; a locked token
            # keeps what it has (its USB console is closed: factory-reset it to update).
            try:
                tok.deploy(_firmware(workdir, tok.deploy_board))
            except LockedTokenError:
                if deploy:
                    raise LockedTokenError("the virtual token is locked: factory-reset it to deploy") from None
                click.echo("(locked token: keeping the firmware on its flash)", err=as_json)
        if as_json:
            emit_json({"board": board, "port": tok.port, "workdir": str(workdir)})
        else:
            click.echo(f"virtual token on {tok.port}  (workdir {workdir})")
        click.echo("type ? for the commands", err=as_json)
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


# -- a token in the background, one command at a time ----------------------------------------


def _board_workdir(board: str) -> Path:
    return _default_workdir() if board == "unix" else _default_workdir() / board


def _workdir(workdir: Path | None, board: str | None = None) -> Path:
    """The workdir given, else the default one of ``board``, else the default one that has a
    token running (the unix tier's first)."""
    if workdir is not None:
        return workdir.resolve()
    if board is not None:
        return _board_workdir(board).resolve()
    from keyfob.sim.daemon import read_state

    for name in ("unix", "pico"):
        if read_state(_board_workdir(name)) is not None:
            return _board_workdir(name).resolve()
    return _default_workdir().resolve()


def _ask(workdir: Path | None, cmd: str, **args) -> dict:
    from keyfob.sim.daemon import request

    return request(_workdir(workdir), cmd, **args)


def _screen_dict(reply: dict) -> dict:
    return {"code": reply["code"], "on": reply["on"], "kind": reply["kind"], "text": reply["text"], "art": reply["art"]}


def _print_screen(reply: dict) -> None:
    click.echo(reply["art"])
    if reply["code"] is not None:
        click.echo(f"code: {reply['code']}")
    elif not reply["on"] or reply["kind"] == "off":
        click.echo("(display off)")
    elif reply["text"]:
        click.echo("text: " + " / ".join(reply["text"]))


@sim.command("start")
@BOARD_OPTION
@WORKDIR_OPTION
@click.option("--bare", is_flag=True, help="A Pico with no MicroPython yet: it shows its BOOTSEL drive.")
@click.option(
    "--oled-addr",
    type=click.Choice(["0x3c", "0x3d"], case_sensitive=False),
    default="0x3c",
    show_default=True,
    help="Where the emulated panel answers (Pico tier).",
)
@json_option(help='Print {"board", "port", "drive", "workdir"}.')
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the token to come up.")
def start(board: str, workdir: Path | None, bare: bool, oled_addr: str, as_json: bool, timeout: float) -> None:
    """Start a virtual token in the background; returns once it is up and prints its USB port.

    The port stays the same for the token's whole life in WORKDIR (flashing, power cycles).
    Drive it with keyfob sim press|hold|release|screen|power and stop it with keyfob sim stop.
    """
    import subprocess
    import sys

    from keyfob.sim import SimError
    from keyfob.sim.daemon import read_state, state_path

    wd = _workdir(workdir, board)
    if bare and board != "pico":
        raise BadInput("--bare is a Pico with no MicroPython yet: use it with --board pico")
    if read_state(wd) is not None:
        raise Refused(f"a virtual token is already running in {wd} (keyfob sim stop --workdir {wd})")
    wd.mkdir(parents=True, exist_ok=True)
    state_path(wd).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "keyfob.sim.daemon", "--board", board, "--workdir", str(wd), "--oled-addr", oled_addr]
    if bare:
        argv.append("--bare")
    with open(wd / "sim.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = read_state(wd)
        if state is not None or proc.poll() is not None:
            break
        time.sleep(0.1)
    if state is None:
        if proc.poll() is None:
            proc.kill()
        lines = (wd / "sim.log").read_text(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"it did not come up within {timeout:g} s"
        raise SimError(f"the virtual token did not start: {why.removeprefix('error: ')}")
    shown = {k: state[k] for k in ("board", "port", "drive", "workdir")}
    if as_json:
        emit_json(shown)
        return
    click.echo(f"virtual token ({board}) on {state['port']}  (workdir {wd})")
    if state["drive"]:
        click.echo(f"BOOTSEL drive: {state['drive']}  (keyfob flash --board rp2040 --drive {state['drive']})")


@sim.command("press")
@click.option("--ms", default=80, show_default=True, help="How long the button is held.")
@WORKDIR_OPTION
@json_option
def press(ms: int, workdir: Path | None, as_json: bool) -> None:
    """Press the button; prints the screen once the token is idle again."""
    _shown(_ask(workdir, "press", ms=ms), as_json)


@sim.command("hold")
@WORKDIR_OPTION
@json_option
def hold_cmd(workdir: Path | None, as_json: bool) -> None:
    """Press the button and keep it down (keyfob sim release lets go)."""
    _ask(workdir, "hold")
    if as_json:
        emit_json({"button": "down"})


@sim.command("release")
@WORKDIR_OPTION
@json_option
def release_cmd(workdir: Path | None, as_json: bool) -> None:
    """Let go of the button; prints the screen once the token is idle again."""
    _shown(_ask(workdir, "release"), as_json)


def _shown(reply: dict, as_json: bool) -> None:
    if as_json:
        emit_json(_screen_dict(reply))
    else:
        _print_screen(reply)


@sim.command("screen")
@WORKDIR_OPTION
@click.option("--code", "what", flag_value="code", help="Only the code shown (exit 1 if none).")
@click.option("--text", "what", flag_value="text", help="Only the text lines shown.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Save the screen as a PNG.")
@json_option(help="The screen as JSON (code, on, kind, text, art; with --png also file).")
def screen_cmd(workdir: Path | None, what: str | None, png: Path | None, as_json: bool) -> None:
    """What the token's OLED shows now."""
    reply = _ask(workdir, "screen")
    if what == "code" and reply["code"] is None:
        raise Refused("the screen shows no code")
    if png is not None:
        from keyfob.sim.screen import Screen

        Screen(bytes.fromhex(reply["pixels"]), on=reply["on"]).save_png(png)
    if as_json:
        emit_json({**_screen_dict(reply), **({"file": str(png)} if png is not None else {})})
    elif png is not None:
        click.echo(f"saved {png}")
    elif what == "code":
        click.echo(reply["code"])
    elif what == "text":
        for line in reply["text"]:
            click.echo(line)
    else:
        _print_screen(reply)


@sim.command("power")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--hold", is_flag=True, help="Power on with the button held (the factory-reset offer).")
@WORKDIR_OPTION
@json_option
def power_cmd(state: str, hold: bool, workdir: Path | None, as_json: bool) -> None:
    """Switch the token off (once idle) or on again, with the same flash and clock."""
    _ask(workdir, "power", on=state == "on", hold=hold)
    if as_json:
        emit_json({"power": state, "hold": hold})


@sim.command("stop")
@WORKDIR_OPTION
@json_option
def stop_cmd(workdir: Path | None, as_json: bool) -> None:
    """Switch the background token off and end it (its flash and clock stay in WORKDIR)."""
    from keyfob.sim.daemon import read_state

    wd = _workdir(workdir)
    _ask(wd, "stop")
    deadline = time.monotonic() + 30
    while read_state(wd) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if as_json:
        emit_json({"workdir": str(wd), "stopped": True})


def register(main: click.Group) -> None:
    main.add_command(sim)
