"""The Pico tier of the virtual token: MicroPython's real rp2 port (the UF2 users flash) in an
emulated RP2040 (rp2040js, driven by ``boards/sim/pico/runner.mjs``), with the same emulated
parts as the unix tier (``boards/sim/hw``: the SSD1306 decoded from the bytes on the bus, the
DS3231 with its BCD registers, drift and oscillator-stop flag) attached outside the chip.

:class:`PicoToken` has :class:`keyfob.sim.VirtualToken`'s interface, so tests and helpers are
written once and a parameter names the tier (docs/internals.md, "Two tiers").

Layout of ``workdir``: ``flash.bin`` (the chip's whole 2 MiB flash: the MicroPython image and
its 1.4 MB LittleFS filesystem; every finished erase/program is written through at once, so a
power cut keeps exactly the finished operations), ``rtc.json`` (the DS3231 and its coin cell),
``RPI-RP2/`` (the BOOTSEL drive, while the chip has no valid boot image), ``frames.log``.
"""

from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
import threading
import time
import tty
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from keyfob.payload import checkout as payload_checkout
from keyfob.payload import root as payload_root
from keyfob.sim.control import SimError, SimTimeout
from keyfob.sim.pty import close_after

if TYPE_CHECKING:
    from keyfob.sim.screen import Screen

FLASH_SIZE = 2 * 1024 * 1024
XIP_BASE = 0x10000000
FS_START = 0xA0000  #: the rp2 port's filesystem: flash 0xA0000-0x200000 (1,441,792 bytes)
ADDR_OLED = 0x3C
ADDR_DS3231 = 0x68
SHORT_PRESS_MS = 80
LONG_PRESS_MS = 2500
#: wait_idle(): this much emulated time with the CPU mostly asleep and no flash write
QUIET_WINDOWS = 8  # of 20 ms
QUIET_BUSY_PERMILLE = 300
UF2_MAGIC = (0x0A324655, 0x9E5D5157, 0x0AB16F30)
RP2040_FAMILY = 0xE48BFF56
_INFO_UF2 = "UF2 Bootloader v3.0\r\nModel: Raspberry Pi RP2\r\nBoard-ID: RPI-RP2\r\n"
_INDEX_HTM = "<html><head><meta http-equiv=\"refresh\" content=\"0;URL='https://raspberrypi.com/device/RP2?version=E0C9125B0D9B'\"/></head><body>Redirecting to <a href='https://raspberrypi.com/device/RP2?version=E0C9125B0D9B'>raspberrypi.com</a></body></html>\r\n"  # noqa: E501


# -- inputs: the UF2, the boot ROM, the runner ---------------------------------------------------


@dataclass(frozen=True)
class PicoInputs:
    uf2: Path
    bootrom: Path


def runner_dir() -> Path:
    """boards/sim/pico: the runner and its lockfile (in an installed wheel, inside the package;
    its node_modules come from ``npm ci`` there, see :func:`check_runner`)."""
    return payload_root() / "boards" / "sim" / "pico"


def find_inputs() -> PicoInputs:
    """The MicroPython UF2 and the RP2040 boot ROM: from ``$KEYFOB_PICO_DIR``, else (in a checkout)
    ``../shared/pico`` beside it, else ``firmware-images/`` in it, else (installed) in
    ``firmware-images/`` of the current folder. Raises :class:`SimError` saying, in one line, what
    is missing."""
    env = os.environ.get("KEYFOB_PICO_DIR")
    root = payload_checkout()
    if env:
        folders = [Path(env)]
    elif root is not None:
        folders = [root.parent / "shared" / "pico", root / "firmware-images"]
    else:
        folders = [Path.cwd() / "firmware-images"]
    for folder in folders:
        uf2s = sorted(folder.glob("RPI_PICO*.uf2")) if folder.is_dir() else []
        roms = sorted(folder.glob("rp2040-bootrom*.bin")) if folder.is_dir() else []
        if uf2s and roms:
            return PicoInputs(uf2s[-1], roms[-1])
    where = " or ".join(str(f) for f in folders)
    raise SimError(f"no RPI_PICO*.uf2 and rp2040-bootrom*.bin in {where}: the Pico tier needs both")


def check_runner() -> Path:
    """The runner script, once its pinned rp2040js is installed (``make`` does it)."""
    folder = runner_dir()
    if not (folder / "node_modules" / "rp2040js" / "package.json").is_file():
        raise SimError(f"rp2040js is not installed in {folder} (run: npm ci --prefix {folder})")
    if shutil.which("node") is None:
        raise SimError("no node executable: the Pico tier runs rp2040js under Node.js")
    return folder / "runner.mjs"


# -- flash images ------------------------------------------------------------------------------


def _crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 (the boot ROM's check of boot2): poly 0x04C11DB7, no reflection."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


def bootable(flash: bytes) -> bool:
    """The boot ROM boots from flash only if the first 256 bytes are a boot2 whose last word
    is the CRC of the 252 before it; otherwise it shows the BOOTSEL drive."""
    return len(flash) >= 256 and _crc32_mpeg2(flash[:252]) == struct.unpack_from("<I", flash, 252)[0]


def uf2_blocks(data: bytes) -> tuple[dict[int, bytes], int] | None:
    """The RP2040 blocks of a UF2 file as {flash offset: payload}, and the number of blocks
    the file says it has; None if it holds no RP2040 block. Blocks of other families are
    ignored, as the boot ROM does."""
    out: dict[int, bytes] = {}
    total = 0
    for at in range(0, len(data) - 511, 512):
        m0, m1, flags, addr, size, _no, count, family = struct.unpack_from("<8I", data, at)
        if (m0, m1) != UF2_MAGIC[:2] or struct.unpack_from("<I", data, at + 508)[0] != UF2_MAGIC[2]:
            continue
        if flags & 1 or not flags & 0x2000 or family != RP2040_FAMILY or size > 476:
            continue
        if not XIP_BASE <= addr < XIP_BASE + FLASH_SIZE:
            continue
        out[addr - XIP_BASE] = data[at + 32 : at + 32 + size]
        total = count
    return (out, total) if out else None


def program_uf2(flash: bytearray, blocks: dict[int, bytes]) -> None:
    """What the boot ROM does with a UF2 copied onto its drive: erase each 4 KB sector it
    touches, then program the blocks."""
    for sector in {off & ~0xFFF for off in blocks}:
        flash[sector : sector + 4096] = b"\xff" * 4096
    for off, payload in blocks.items():
        flash[off : off + len(payload)] = payload


def flash_ops(log: bytes) -> list[tuple[int, int, int, bytes]]:
    """The operations of a runner's ``--op-log``, in order, as (kind, offset, count, data):
    kind 0 an erase (data empty), 1 a program."""
    ops = []
    at = 0
    while at + 9 <= len(log):
        kind, offset, count = struct.unpack_from("<BII", log, at)
        at += 9
        data = b""
        if kind == 1:
            data = log[at : at + count]
            at += count
        ops.append((kind, offset, count, data))
    if at != len(log) or (ops and len(ops[-1][3]) != (ops[-1][2] if ops[-1][0] else 0)):
        raise SimError("the flash op log ends in the middle of an operation")
    return ops


def apply_op(flash: bytearray, op: tuple[int, int, int, bytes]) -> None:
    """One logged operation, by the NOR rules the runner applies: an erase sets 0xFF, a
    program ANDs bits. Applying the first n ops of a log to the flash they started from gives
    what a power cut after those n leaves: the runner writes each op through whole, in order."""
    kind, offset, count, data = op
    if kind == 0:
        flash[offset : offset + count] = b"\xff" * count
    else:
        old = int.from_bytes(flash[offset : offset + count], "big")
        flash[offset : offset + count] = (old & int.from_bytes(data, "big")).to_bytes(count, "big")


# -- the chip ----------------------------------------------------------------------------------


class _Parts:
    """The I2C parts outside the chip (boards/sim/hw), loaded in this process."""

    def __init__(self, hwdir: Path, state_path: Path, oled_addr: int, frame_log: Path | None, now_ms):
        from keyfob.sim.token import load_hw

        self.oled = load_hw(hwdir, "ssd1306_emu").SSD1306Emu()
        if frame_log is not None:
            self.oled.log_frames(str(frame_log), now_ms)
        self.ds3231 = load_hw(hwdir, "ds3231_emu").DS3231Emu(str(state_path))
        self.oled_addr = oled_addr
        self.unplugged: set[int] = set()
        self.i2c_bytes = 0
        self.transactions = 0

    def devices(self) -> dict:
        found = {self.oled_addr: self.oled, ADDR_DS3231: self.ds3231}
        return {a: d for a, d in found.items() if a not in self.unplugged}


class PicoToken:
    """One emulated Pico with its parts. Use as a context manager (or call :meth:`close`).

    ``oled_addr``: 0x3C (default) or 0x3D, where the panel answers. The USB port
    (:attr:`port`) is one pseudo-terminal for the object's whole life: across flashing, power
    cycles and watchdog resets, as a test or a user expects of ``/dev/ttyACM0``."""

    board = "pico"
    deploy_board = "rp2040"
    #: host-side waits are this many times longer than on the unix tier: the emulated
    #: Cortex-M0+ computes at about a third of a real one's speed, less on a loaded machine
    patience = 4

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        bare: bool = False,
        image: str | os.PathLike | None = None,
        oled_addr: int = ADDR_OLED,
        frame_log: bool | str | os.PathLike = False,
        register: bool = False,
        hwdir: str | os.PathLike | None = None,
        inputs: PicoInputs | None = None,
    ) -> None:
        from keyfob.sim.token import hw_dir

        if oled_addr not in (0x3C, 0x3D):
            raise SimError("the OLED answers at 0x3C or 0x3D")
        self.inputs = inputs or find_inputs()
        self.runner = check_runner()
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flash_path = self.workdir / "flash.bin"
        self.state_path = self.workdir / "rtc.json"
        self.drive = self.workdir / "RPI-RP2"
        self.hwdir = Path(hwdir).resolve() if hwdir else hw_dir().resolve()
        self.oled_addr = oled_addr
        if image is not None:  # a copy of another chip's flash (a token out of the same box)
            shutil.copyfile(image, self.flash_path)
        if not self.flash_path.exists():
            flash = bytearray(b"\xff" * FLASH_SIZE)
            if not bare:  # a Pico that already runs MicroPython
                found = uf2_blocks(self.inputs.uf2.read_bytes())
                if found is None:
                    raise SimError(f"{self.inputs.uf2} holds no RP2040 image")
                program_uf2(flash, found[0])
            self.flash_path.write_bytes(flash)
        self.frame_log_path: Path | None = None
        if frame_log:
            self.enable_frame_log(None if frame_log is True else frame_log)
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._proc: subprocess.Popen | None = None
        self._parts: _Parts | None = None
        self._held = False
        self._emu_ms = 0
        self._quiet = 0  # quiet 20 ms windows in a row
        self._windows = 0  # windows reported since power-on
        self._flash_ops = 0
        self._press_left = False  # a timed press is still down
        self._connected = 0  # USB CDC enumerations seen (power-on and resets)
        self._wanted_on = False
        self._cut_at: int | None = None  # flash op index the last power cut happened at
        self.exit_code: int | None = None
        self.resets = 0
        #: emulated ms (this power-on) when the last timed press went down / of the last OLED write
        self.press_at_ms = 0
        self.oled_at_ms = 0
        self._closed = False
        # The port's descriptors are closed only under _fd_lock, after the thread that reads them
        # has ended: a descriptor number, once closed, is the next file any thread opens, and a
        # late read or write would take that file's bytes or write into it (seen: another
        # token's flash image read without its first 4 KB, so it booted to BOOTSEL).
        self._fd_lock = threading.Lock()
        self._fds_open = True
        self._master, self._slave = os.openpty()
        self._wake_r, self._wake_w = os.pipe()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port: str = os.ttyname(self._slave)
        self._pty_thread = threading.Thread(target=self._pty_loop, name="keyfob-pico-pty", daemon=True)
        self._pty_thread.start()
        self._bootsel_thread: threading.Thread | None = None
        self._registry: Path | None = None
        if register:
            from keyfob.device import ports

            self._registry = ports.register_sim(self.port, os.getpid(), self.workdir)

    # -- power -------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    @property
    def in_bootsel(self) -> bool:
        """The chip is showing its BOOTSEL drive (no valid boot image in flash)."""
        return self._wanted_on and not self.is_running and self.drive.is_dir()

    @property
    def cut_at(self) -> int | None:
        """The flash operation index the last ``cut_after_ops`` power cut happened at (None: it
        did not happen: the chip did fewer operations)."""
        return self._cut_at

    def power_on(
        self,
        hold: bool = False,
        nomain: bool = False,
        cut_after_ops: int | None = None,
        cut_erase_done: bool = False,
        timeout: float = 30.0,
        hold_ms: int | None = None,
        op_log: str | os.PathLike | None = None,
    ) -> None:
        """Switch on. Returns once MicroPython's USB port is up (main.py is then starting), or
        at once when the chip has no boot image and shows its BOOTSEL drive instead.
        ``hold``: the button is held at power-up; ``hold_ms``: held from power-up for that much
        emulated time, then let go by itself. ``cut_after_ops``: the power goes after that
        many flash operations (erase or program; the next one does not happen, or for an erase
        with ``cut_erase_done`` it finishes and then the power goes)."""
        if nomain:
            raise SimError("the Pico tier boots as a chip does: there is no skipping main.py")
        with self._lock:
            if self._closed:
                raise SimError("this virtual token is closed")
            if self.is_running:
                raise SimError("already on")
            self._wanted_on = True
            self._held = hold
            if not bootable(self.flash_path.read_bytes()[:256]):
                self._show_bootsel()
                return
            gen = self._connected
            self._start_chip(cut_after_ops, cut_erase_done, hold_ms, op_log)
        self._wait(lambda: self._connected > gen or not self.is_running, timeout, "the Pico's USB port")

    def _start_chip(
        self,
        cut_after_ops: int | None = None,
        cut_erase_done: bool = False,
        hold_ms: int | None = None,
        op_log: str | os.PathLike | None = None,
    ) -> None:
        argv = ["node", str(self.runner), "--bootrom", str(self.inputs.bootrom), "--flash", str(self.flash_path)]
        if op_log is not None:
            argv += ["--op-log", str(Path(op_log).resolve())]
        if cut_after_ops is not None:
            argv += ["--cut-after-ops", str(int(cut_after_ops)), "--cut-erase-done", "1" if cut_erase_done else "0"]
        self._parts = _Parts(self.hwdir, self.state_path, self.oled_addr, self.frame_log_path, lambda: self._emu_ms)
        self._emu_ms = 0
        self._quiet = self._windows = self._flash_ops = 0
        self._press_left = False
        self._cut_at = None
        self.exit_code = None
        with open(self.workdir / "chip.log", "ab") as log:  # the emulator's own complaints
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=str(self.runner.parent),
                start_new_session=True,
            )
        proc = self._proc
        threading.Thread(target=self._chip_loop, args=(proc,), name="keyfob-pico-chip", daemon=True).start()
        self._send("a", bytes(self._parts.devices()))
        self._send("g", b"\x00" if self._held else b"\x01")
        if hold_ms is not None:
            self._press_left = True
            self._send("p", struct.pack("<I", int(hold_ms)))

    def cut_power(self) -> None:
        """Pull the battery: the chip stops at once, wherever it is."""
        with self._lock:
            self._wanted_on = False
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._leave_bootsel()

    def power_off(self, timeout: float = 5.0) -> None:
        """Switch off once the firmware is idle (if it gets there within ``timeout``)."""
        if self.is_running:
            try:
                self.wait_idle(timeout)
            except SimError:
                pass
        self.cut_power()

    def close(self) -> None:
        with self._lock:  # once, whoever else calls it (``with`` and a fixture's teardown both do)
            if self._closed:
                return
            self._closed = True
        self.cut_power()
        bootsel = self._bootsel_thread
        if bootsel is not None:
            bootsel.join(5)  # it may be writing flash.bin from a UF2 it took: let it finish first
        if self._registry is not None:
            from keyfob.device import ports

            ports.unregister_sim(self._registry)
            self._registry = None
        with self._fd_lock:
            self._fds_open = False  # the chip's last bytes are dropped from here on
        os.write(self._wake_w, b"x")
        close_after(self._pty_thread, (self._master, self._slave, self._wake_r, self._wake_w))

    def __enter__(self) -> PicoToken:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- BOOTSEL ------------------------------------------------------------------------------

    def _show_bootsel(self) -> None:
        self.drive.mkdir(exist_ok=True)
        (self.drive / "INDEX.HTM").write_text(_INDEX_HTM)
        (self.drive / "INFO_UF2.TXT").write_text(_INFO_UF2)
        if self._bootsel_thread is None or not self._bootsel_thread.is_alive():
            self._bootsel_thread = threading.Thread(target=self._bootsel_loop, name="keyfob-pico-bootsel", daemon=True)
            self._bootsel_thread.start()

    def _leave_bootsel(self) -> None:
        shutil.rmtree(self.drive, ignore_errors=True)

    def _bootsel_loop(self) -> None:
        # The boot ROM's mass-storage drive: a whole RP2040 UF2 copied onto it is programmed
        # into the flash, the drive goes away and the chip boots the new image.
        while self.in_bootsel and not self._closed:
            for f in sorted(self.drive.glob("*")):
                if f.name in ("INDEX.HTM", "INFO_UF2.TXT") or not f.is_file():
                    continue
                try:
                    data = f.read_bytes()
                except OSError:
                    continue
                found = uf2_blocks(data)
                if found is None:
                    continue  # not an RP2040 image: the ROM ignores it (and a real drive keeps nothing)
                blocks, total = found
                if len(blocks) < total:
                    continue  # still being copied
                flash = bytearray(self.flash_path.read_bytes())
                program_uf2(flash, blocks)
                tmp = self.flash_path.with_name(self.flash_path.name + ".tmp")
                tmp.write_bytes(flash)
                os.replace(tmp, self.flash_path)
                self._leave_bootsel()
                with self._lock:
                    if self._wanted_on and not self._closed and not self.is_running and bootable(flash[:256]):
                        self._start_chip()
                return
            time.sleep(0.1)

    # -- the chip's frames ----------------------------------------------------------------------

    def _send(self, kind: str, payload: bytes = b"") -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with self._send_lock:
            try:
                proc.stdin.write(kind.encode() + struct.pack("<H", len(payload)) + payload)
                proc.stdin.flush()
            except (OSError, ValueError):
                pass

    def _chip_loop(self, proc: subprocess.Popen) -> None:
        out = proc.stdout
        assert out is not None
        reset = False
        while True:
            head = out.read(3)
            if len(head) < 3:
                break
            kind = chr(head[0])
            body = out.read(struct.unpack_from("<H", head, 1)[0])
            if kind == "Z":
                reset = True
            else:
                self._on_frame(kind, body)
        rc = proc.wait()
        with self._lock:
            if self._proc is proc:
                self.exit_code = rc
                if reset and self._wanted_on and not self._closed:
                    # machine.reset() / the watchdog: a new chip with the same flash and parts
                    self.resets += 1
                    self._start_chip()
            self._cond.notify_all()

    def _on_frame(self, kind: str, body: bytes) -> None:
        parts = self._parts
        assert parts is not None
        if kind == "U":
            self._to_host(body)
        elif kind == "W":
            addr = body[0]
            self._emu_ms = struct.unpack_from("<I", body, 1)[0]
            data = body[5:]
            if addr == parts.oled_addr:
                self.oled_at_ms = self._emu_ms
            parts.transactions += 1
            parts.i2c_bytes += 1 + len(data)
            dev = parts.devices().get(addr)
            if dev is not None and data:
                dev.write(data)
        elif kind == "R":
            addr = body[0]
            dev = parts.devices().get(addr)
            parts.transactions += 1
            parts.i2c_bytes += 1
            self._send("b", dev.peek() if dev is not None and hasattr(dev, "peek") else bytes(32))
        elif kind == "E":
            addr, n = body[0], body[1]
            parts.i2c_bytes += n
            dev = parts.devices().get(addr)
            if dev is not None and hasattr(dev, "skip"):
                dev.skip(n)
        elif kind == "Q":
            ms, busy, ops = struct.unpack("<IHI", body)
            with self._lock:
                self._emu_ms = ms
                self._windows += 1
                quiet = busy < QUIET_BUSY_PERMILLE and ops == self._flash_ops
                self._quiet = self._quiet + 1 if quiet else 0
                self._flash_ops = ops
                self._cond.notify_all()
        elif kind == "D":
            self.press_at_ms = struct.unpack("<I", body)[0]
        elif kind == "P":
            with self._lock:
                self._press_left = False
                self._quiet = 0  # only quiet after the finger lifted counts
                self._cond.notify_all()
        elif kind == "C":
            with self._lock:
                self._connected += 1
                self._cond.notify_all()
        elif kind == "X":
            with self._lock:
                self._cut_at = struct.unpack("<I", body)[0]

    # -- USB: the pseudo-terminal -------------------------------------------------------------

    def _to_host(self, data: bytes) -> None:
        with self._fd_lock:
            if not self._fds_open:
                return  # the chip's last bytes after close(): the cable is gone
            try:
                os.write(self._master, data)
            except OSError:
                # Nobody reads the port (its buffer is full) or nobody has it open: the bytes are
                # dropped, as a board's USB stack drops them, and the chip never stalls on a host.
                pass

    def _pty_loop(self) -> None:
        while not self._closed:
            try:
                ready, _, _ = select.select([self._master, self._wake_r], [], [], 0.2)
                if self._wake_r in ready or self._closed:
                    return
                if not ready:
                    continue
                data = os.read(self._master, 4096)
            except OSError:
                if self._closed:
                    return
                time.sleep(0.05)
                continue
            if data and self.is_running:
                with self._lock:
                    self._quiet = 0  # the firmware has a request to answer
                self._send("u", data)  # bytes sent while the chip is off are lost, as on a cable

    # -- waiting --------------------------------------------------------------------------------

    def _wait(self, cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not cond():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SimTimeout(f"timed out after {timeout:g}s waiting for {what}")
                self._cond.wait(min(left, 0.2))

    def _default_wait(self, timeout: float | None) -> float:
        # what the unix tier does in 10 s, this one may need `patience` times as long on a loaded
        # machine (its boot alone is 40 M emulated cycles): a bound, not a pace
        return 10.0 * self.patience if timeout is None else timeout

    def _require_on(self) -> None:
        if not self.is_running:
            raise SimError("the token is off" if not self.in_bootsel else "the chip is in BOOTSEL mode")

    def wait_idle(self, timeout: float | None = None) -> None:
        """Return once no press is down and the chip has been asleep (WFI/WFE most of the time,
        no flash write) for QUIET_WINDOWS x 20 ms of emulated time: the firmware waits in idle().
        The unix tier asks the firmware itself; a chip cannot be asked without changing what
        runs on it, so this tier watches the CPU instead."""
        self._require_on()
        timeout = self._default_wait(timeout)
        with self._lock:
            start = self._windows

        def quiet() -> bool:
            if not self.is_running:
                raise SimError("the token went off")
            return not self._press_left and self._windows - start >= QUIET_WINDOWS and self._quiet >= QUIET_WINDOWS

        self._wait(quiet, timeout, "the token to be idle")

    # -- the button -----------------------------------------------------------------------------

    def press(self, ms: int = SHORT_PRESS_MS, timeout: float | None = None) -> None:
        """Press the button for ``ms`` of emulated time; returns once it is let go."""
        self._require_on()
        timeout = self._default_wait(timeout)
        with self._lock:
            self._press_left = True
        self._send("p", struct.pack("<I", int(ms)))
        self._wait(lambda: not self._press_left or not self.is_running, timeout + ms / 1000, "the press")

    def long_press(self, ms: int = LONG_PRESS_MS, timeout: float | None = None) -> None:
        self.press(ms, timeout)

    def hold(self, timeout: float = 10.0) -> None:
        self._held = True
        self._send("g", b"\x00")

    def release(self, timeout: float = 10.0) -> None:
        self._held = False
        self._send("g", b"\x01")

    # -- parts ----------------------------------------------------------------------------------

    def screen(self, timeout: float = 10.0) -> Screen:
        """What the panel shows now (all dark while the chip is off)."""
        from keyfob.sim.screen import Screen

        with self._lock:
            parts = self._parts if self.is_running else None
            if parts is None:
                return Screen(bytes(1024), on=False)
            oled = parts.oled
            return Screen(oled.pixels(), on=oled.lit(), contrast=oled.contrast, inverted=oled.inverted)

    def i2c_bytes(self, timeout: float = 10.0) -> int:
        """Bytes on the I2C bus so far this power-on (address bytes included)."""
        return self._parts.i2c_bytes if self._parts is not None else 0

    def unplug(self, addr: int) -> None:
        """Pull a part off the bus (a loose wire): it stops answering, also to scan()."""
        if self._parts is not None:
            self._parts.unplugged.add(addr)
            self._send("a", bytes(self._parts.devices()))

    def set_clock(self, unix: float, ppm: float = 0.0, osf: bool = False, timeout: float = 10.0) -> None:
        """Set the DS3231 (time, drift in ppm, oscillator-stop flag), on or off."""
        with self._lock:
            if self._parts is not None and self.is_running:
                self._parts.ds3231.set_clock(unix, ppm, osf)
                return
        from keyfob.sim.token import load_hw

        load_hw(self.hwdir, "ds3231_emu").DS3231Emu(str(self.state_path)).set_clock(unix, ppm, osf)

    def clock(self, timeout: float = 10.0) -> tuple[float, float, bool]:
        with self._lock:
            emu = self._parts.ds3231 if self._parts is not None and self.is_running else None
        if emu is None:
            from keyfob.sim.token import load_hw

            emu = load_hw(self.hwdir, "ds3231_emu").DS3231Emu(str(self.state_path))
        return emu.unix_time(), emu.ppm, emu.osf

    def emulated_ms(self) -> int:
        """Emulated time since this power-on, in ms (the chip's ticks_ms, roughly)."""
        return self._emu_ms

    def run_for(self, ms: int, timeout: float = 60.0) -> None:
        """Return once the chip has run ``ms`` more of emulated time (or went off)."""
        self._require_on()
        until = self._emu_ms + ms
        self._wait(lambda: self._emu_ms >= until or not self.is_running, timeout, f"{ms} ms of emulated time")

    # -- the frame log ---------------------------------------------------------------------------

    def enable_frame_log(self, path: str | os.PathLike | None = None) -> Path:
        """From the next power-on on, every picture the panel shows is appended to ``path``
        (default ``workdir/frames.log``), stamped with emulated ms (see VirtualToken)."""
        self.frame_log_path = Path(path).resolve() if path else self.workdir / "frames.log"
        return self.frame_log_path

    def frames(self, start: int = 0, power_ons: int = 0):
        from keyfob.sim.token import read_frame_log

        if self.frame_log_path is None:
            raise SimError("the frame log is off (enable_frame_log)")
        return read_frame_log(self.frame_log_path, start, power_ons)

    # -- USB: files on the flash ------------------------------------------------------------------

    def deploy(self, files: Iterable[tuple[str, str]], timeout: float = 60.0, keyfob: bool = True) -> None:
        """Put firmware on the flash the way ``keyfob deploy`` does on a board (it is that code)."""
        from keyfob.deploy import Repl, deploy

        self._require_on()
        if keyfob:
            deploy(self.port, self.deploy_board, files=files, timeout=timeout)
            return
        with Repl(self.port, timeout) as repl:
            repl.enter()
            for local, name in files:
                repl.write_file(name.lstrip(":"), Path(local).read_bytes())
            repl.soft_reset()

    def soft_reset(self, timeout: float = 30.0) -> None:
        """Ctrl-C, then Ctrl-D at the friendly REPL: the port reboots and runs main.py."""
        from keyfob.deploy import Repl

        with Repl(self.port, timeout) as repl:
            repl.enter()
            repl.soft_reset()

    def fs_image(self) -> bytes:
        """The filesystem region of the flash as it is in the file now."""
        return self.flash_path.read_bytes()[FS_START:]
