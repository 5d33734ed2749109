"""Put MicroPython on a bare board: ESP32 through esptool, RP2040 by UF2 drag-and-drop.

No network access: the user downloads the image from the MicroPython download page
(``micropython.org/download/<BOARD>``) and points at it, or drops it in ``firmware-images/``.

ESP32: only the classic ESP32 (ESP32-WROOM-32 DevKits) is supported: ``boards/esp32`` uses its
pins (I2C on GPIO21/22, the button on GPIO27) and its ext0 wake-up from deep sleep, which the
ESP32-S2/S3/C3/C6 lay out differently or lack. Their images and chips are recognised, and refused
with that reason before anything is written.

ESP32 family: the image from the download page starts with the second-stage bootloader and is
written at the chip's bootloader offset (``0x1000`` for ESP32 and ESP32-S2, ``0x0`` for ESP32-S3,
-C3 and -C6), after a full erase. The bootloader is an ESP image whose header starts with the
magic byte ``0xE9`` and names the chip it was built for (``chip_id``, a 16-bit field at byte 12).
A whole-flash dump taken from ``0x0`` (``0xFF`` up to the bootloader at ``0x1000``) is accepted
too and written at ``0x0``.

RP2040: hold the BOOTSEL button while plugging in the USB cable; the chip's ROM then shows a
USB drive named RPI-RP2 (with an ``INFO_UF2.TXT`` in it). Copying a ``.uf2`` file onto it
programs the flash; the chip reboots and the drive disappears. A UF2 file is a sequence of
512-byte blocks, each starting with the magics ``0x0A324655``, ``0x9E5D5157`` and ending with
``0x0AB16F30``; with flag ``0x2000`` set, word 7 is the family id (RP2040 is ``0xE48BFF56``).

The library never prints: progress goes to an optional ``progress(stage, done, total)`` callback.
"""

from __future__ import annotations

import glob
import os
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from keyfob.errors import BadInput, KeyfobError, Unavailable

from . import ports

Progress = Callable[[str, int, int], None]

#: Where ``keyfob flash`` looks for an image when none is given (relative to the working folder).
IMAGE_FOLDER = "firmware-images"

BOARDS = ("esp32", "rp2040")

BOOTSEL_HELP = (
    "to enter BOOTSEL, unplug the board, hold its BOOTSEL button while plugging the USB cable "
    "back in, then let go: a drive named RPI-RP2 appears"
)
ESP32_BOOT_HELP = (
    "check the cable and --port; if the board does not enter its bootloader by itself, "
    "hold BOOT (IO0) while pressing and releasing EN/RESET"
)


class FlashError(KeyfobError):
    """Flashing failed; the message is one line meant for the user."""


class MissingImageError(FlashError, BadInput):
    """No firmware image where one was expected."""


class ImageTypeError(FlashError, BadInput):
    """The file is not a firmware image of the kind this board takes."""


class WrongBoardError(FlashError, BadInput):
    """The image or the connected board is not the one asked for."""


class NoDeviceError(FlashError, Unavailable):
    """No board (serial port, bootloader, RPI-RP2 drive) to flash."""


@dataclass(frozen=True)
class Esp32Chip:
    name: str  # as esptool's CHIP_NAME
    image_chip_id: int  # chip_id in the ESP image extended header
    offset: int  # where MicroPython's image goes (the bootloader offset)
    board: str  # the MicroPython download page for the generic board


#: The ESP32-family chips keyfob recognises, with offsets as on MicroPython's download pages;
#: only those in SUPPORTED_ESP32 are flashed.
ESP32_CHIPS: dict[str, Esp32Chip] = {
    c.name: c
    for c in (
        Esp32Chip("ESP32", 0, 0x1000, "ESP32_GENERIC"),
        Esp32Chip("ESP32-S2", 2, 0x1000, "ESP32_GENERIC_S2"),
        Esp32Chip("ESP32-S3", 9, 0x0, "ESP32_GENERIC_S3"),
        Esp32Chip("ESP32-C3", 5, 0x0, "ESP32_GENERIC_C3"),
        Esp32Chip("ESP32-C6", 13, 0x0, "ESP32_GENERIC_C6"),
    )
}

#: The chips boards/esp32 is written for.
SUPPORTED_ESP32 = ("ESP32",)


def _variant_refused(chip: str) -> str:
    return (
        "keyfob's esp32 board layer is for the classic ESP32 (ESP32-WROOM-32: I2C on GPIO21/22, the "
        "button on GPIO27 waking it through ext0); the %s has other pins and wake-up sources and is "
        "not supported: use a classic ESP32 DevKit or a Raspberry Pi Pico" % chip
    )


#: Other ESP image chip ids, only to name them in an error.
_OTHER_CHIP_IDS = {12: "ESP32-C2", 16: "ESP32-H2", 18: "ESP32-P4", 20: "ESP32-C61", 23: "ESP32-C5"}

ESP_IMAGE_MAGIC = 0xE9

UF2_MAGIC_START0 = 0x0A324655
UF2_MAGIC_START1 = 0x9E5D5157
UF2_MAGIC_END = 0x0AB16F30
UF2_FLAG_NOT_MAIN_FLASH = 0x00000001
UF2_FLAG_FAMILY_ID = 0x00002000
UF2_BLOCK = 512
RP2040_FAMILY = 0xE48BFF56
#: Accepted by every RP2 boot ROM (MicroPython puts one such block first in RP2350 images).
RP2_ABSOLUTE_FAMILY = 0xE48BFF57
_UF2_FAMILIES = {
    0xE48BFF58: "RP2 data",
    0xE48BFF59: "RP2350 (ARM, secure)",
    0xE48BFF5A: "RP2350 (RISC-V)",
    0xE48BFF5B: "RP2350 (ARM, non-secure)",
    0xBFDD4EEE: "ESP32-S2",
    0xC47E5767: "ESP32-S3",
    0x68ED2B88: "SAMD21",
    0x55114460: "SAMD51",
    0xADA52840: "nRF52840",
}
RP2040_BOARD_PAGE = "RPI_PICO"
RPI_RP2_LABEL = "RPI-RP2"
INFO_UF2 = "INFO_UF2.TXT"


@dataclass(frozen=True)
class FlashResult:
    board: str  # 'esp32' or 'rp2040'
    target: str  # serial port or drive folder
    chip: str  # 'ESP32-S3', 'RP2040', ...
    offset: int  # flash address written (0 for UF2: the blocks carry their own addresses)
    size: int  # image bytes


# --- images -------------------------------------------------------------------------------------


def _download_hint(board: str) -> str:
    if board == "rp2040":
        return "micropython.org/download/%s" % RP2040_BOARD_PAGE
    return "micropython.org/download/%s" % ESP32_CHIPS["ESP32"].board


def _where_to_put(board: str, folder: str | os.PathLike) -> str:
    return "download the MicroPython %s image from %s and put it in %s/ or pass --image FILE" % (
        ".uf2" if board == "rp2040" else ".bin",
        _download_hint(board),
        os.fspath(folder),
    )


def find_image(board: str, folder: str | os.PathLike = IMAGE_FOLDER) -> Path:
    """The one image for ``board`` in ``folder`` (``*.bin`` for esp32, ``*.uf2`` for rp2040)."""
    _check_board(board)
    pattern = "*.uf2" if board == "rp2040" else "*.bin"
    candidates = sorted(Path(folder).glob(pattern)) if Path(folder).is_dir() else []
    if not candidates:
        raise MissingImageError(
            "no %s image for %s in %s/: %s" % (pattern[1:], board, os.fspath(folder), _where_to_put(board, folder))
        )
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise FlashError(
            "several %s images in %s/ (%s): pick one with --image FILE" % (board, os.fspath(folder), names)
        )
    return candidates[0]


def _check_board(board: str) -> None:
    if board not in BOARDS:
        raise WrongBoardError("unknown board %r: choose one of %s" % (board, ", ".join(BOARDS)))


def _read_image(image: str | os.PathLike, board: str) -> tuple[Path, bytes]:
    path = Path(image)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise MissingImageError("image %s %s: %s" % (path, what, _where_to_put(board, IMAGE_FOLDER)))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MissingImageError("cannot read image %s: %s" % (path, exc.strerror)) from None
    if not data:
        raise ImageTypeError("image %s is empty: %s" % (path, _where_to_put(board, IMAGE_FOLDER)))
    return path, data


def _looks_like_uf2(data: bytes) -> bool:
    if len(data) < UF2_BLOCK:
        return False
    m0, m1 = struct.unpack_from("<II", data, 0)
    return m0 == UF2_MAGIC_START0 and m1 == UF2_MAGIC_START1


@dataclass(frozen=True)
class Esp32Image:
    data: bytes
    chip: Esp32Chip
    full_flash: bool  # True: a dump from 0x0 (write at 0), False: starts at the bootloader

    def offset(self) -> int:
        return 0 if self.full_flash else self.chip.offset


def check_esp32_image(image: str | os.PathLike) -> Esp32Image:
    """Read and validate an ESP32-family MicroPython ``.bin``; says which chip it is built for."""
    path, data = _read_image(image, "esp32")
    if _looks_like_uf2(data):
        raise ImageTypeError(
            "%s is a UF2 file (for an RP2040 drive); an ESP32 needs the .bin image from %s"
            % (path.name, _download_hint("esp32"))
        )
    if path.suffix.lower() != ".bin":
        raise ImageTypeError(
            "%s is not a .bin image; an ESP32 needs the .bin from %s" % (path.name, _download_hint("esp32"))
        )
    full_flash = False
    header_at = 0
    if data[0] != ESP_IMAGE_MAGIC:
        # A whole-flash dump from 0x0 for a chip whose bootloader sits at 0x1000.
        if len(data) > 0x1000 + 16 and data[0x1000] == ESP_IMAGE_MAGIC and data[:0x1000] == b"\xff" * 0x1000:
            full_flash, header_at = True, 0x1000
        else:
            raise ImageTypeError(
                "%s is not an ESP32 firmware image (no 0xE9 image header at the start): "
                "use the .bin from %s" % (path.name, _download_hint("esp32"))
            )
    if len(data) < header_at + 24:
        raise ImageTypeError("%s is too short to be an ESP32 firmware image" % path.name)
    segments = data[header_at + 1]
    if not 1 <= segments <= 16:
        raise ImageTypeError("%s has a broken ESP image header (%d segments)" % (path.name, segments))
    (chip_id,) = struct.unpack_from("<H", data, header_at + 12)
    chip = next((c for c in ESP32_CHIPS.values() if c.image_chip_id == chip_id), None)
    if chip is None:
        name = _OTHER_CHIP_IDS.get(chip_id, "chip id %d" % chip_id)
        raise WrongBoardError(
            "%s is built for %s, which keyfob does not support (the classic ESP32 only)" % (path.name, name)
        )
    if chip.name not in SUPPORTED_ESP32:
        raise WrongBoardError("%s is built for %s: %s" % (path.name, chip.name, _variant_refused(chip.name)))
    if full_flash and chip.offset != 0x1000:
        raise ImageTypeError(
            "%s has nothing at 0x0 but %s boots from 0x0: use the .bin from micropython.org/download/%s"
            % (path.name, chip.name, chip.board)
        )
    return Esp32Image(data=data, chip=chip, full_flash=full_flash)


def check_uf2_image(image: str | os.PathLike) -> bytes:
    """Read and validate a UF2 file for the RP2040: every block well-formed, family RP2040."""
    path, data = _read_image(image, "rp2040")
    if path.suffix.lower() != ".uf2" or not _looks_like_uf2(data):
        kind = "an ESP32 .bin image" if data[:1] == bytes([ESP_IMAGE_MAGIC]) else "not a UF2 file"
        raise ImageTypeError("%s is %s; an RP2040 needs the .uf2 from %s" % (path.name, kind, _download_hint("rp2040")))
    if len(data) % UF2_BLOCK:
        raise ImageTypeError("%s is not a whole number of 512-byte UF2 blocks (truncated download?)" % path.name)
    rp2040_blocks = 0
    for n in range(len(data) // UF2_BLOCK):
        at = n * UF2_BLOCK
        m0, m1, flags = struct.unpack_from("<III", data, at)
        (m_end,) = struct.unpack_from("<I", data, at + UF2_BLOCK - 4)
        if m0 != UF2_MAGIC_START0 or m1 != UF2_MAGIC_START1 or m_end != UF2_MAGIC_END:
            raise ImageTypeError("%s: block %d is not a UF2 block (bad magic)" % (path.name, n))
        if flags & UF2_FLAG_NOT_MAIN_FLASH or not flags & UF2_FLAG_FAMILY_ID:
            continue
        (family,) = struct.unpack_from("<I", data, at + 28)
        if family == RP2040_FAMILY:
            rp2040_blocks += 1
        elif family != RP2_ABSOLUTE_FAMILY:
            name = _UF2_FAMILIES.get(family, "family 0x%08X" % family)
            raise WrongBoardError(
                "%s is built for %s, not the RP2040: use the .uf2 from %s" % (path.name, name, _download_hint("rp2040"))
            )
    if not rp2040_blocks and any(
        struct.unpack_from("<I", data, n * UF2_BLOCK + 8)[0] & UF2_FLAG_FAMILY_ID for n in range(len(data) // UF2_BLOCK)
    ):
        raise WrongBoardError("%s has no RP2040 blocks: use the .uf2 from %s" % (path.name, _download_hint("rp2040")))
    return data


# --- ESP32 through esptool ----------------------------------------------------------------------


def find_esp32_port(devices: Iterable[ports.Device] | None = None) -> str:
    """The one connected serial port an ESP32 may sit behind."""
    devices = list(ports.list_usb() if devices is None else devices)
    usable = [d for d in devices if d.kind in ("esp32", "usb-serial")]
    if len(usable) == 1:
        return usable[0].port
    if len(usable) > 1:
        raise FlashError(
            "several serial ports could be an ESP32 (%s): pick one with --port" % ", ".join(d.port for d in usable)
        )
    rp = [d.port for d in devices if d.kind == "rp2040"]
    if rp:
        raise WrongBoardError("no ESP32 connected, only an RP2040 on %s: use --board rp2040" % ", ".join(rp))
    raise NoDeviceError(
        "no ESP32 board found (no Espressif, CP210x, CH340 or FTDI serial port): plug it in or pass --port"
    )


def _make_progress_logger(progress: Progress | None, stage: list[str]):
    """An esptool (esp-pylib) logger that prints nothing and forwards progress bars."""
    from esp_pylib.logger import EspLogBase

    class _Quiet(EspLogBase):
        def __init__(self):
            self.messages: list[str] = []

        def _keep(self, *args):
            self.messages.append(" ".join(str(a) for a in args))
            del self.messages[:-20]

        def print(self, *args, **kwargs):
            self._keep(*args)

        def err(self, *args, suggestion=None):
            self._keep(*args)

        def warn(self, *args, suggestion=None):
            self._keep(*args)

        def note(self, *args):
            self._keep(*args)

        def hint(self, *args):
            pass

        def debug(self, *args):
            pass

        def set_verbosity(self, mode):
            pass

        # Older esptool call sites still use these names.
        def warning(self, message, suggestion=None):
            self._keep(message)

        def error(self, message, suggestion=None):
            self._keep(message)

        def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
            if progress is not None:
                progress(stage[0], int(cur_iter), int(total_iters))

    return _Quiet()


@contextmanager
def _quiet_esptool(progress: Progress | None, stage: list[str]):
    from esp_pylib.logger import EspLog

    previous = EspLog.instance
    EspLog.set_logger(_make_progress_logger(progress, stage))
    try:
        yield
    finally:
        EspLog.instance = previous


def _esptool_errors() -> tuple[type[BaseException], ...]:
    import serial
    from esptool.util import FatalError

    return (FatalError, serial.SerialException, OSError)


def flash_esp32(
    port: str | None,
    image: str | os.PathLike,
    *,
    progress: Progress | None = None,
    cmds=None,
    baud: int = 460800,
    devices: Iterable[ports.Device] | None = None,
) -> FlashResult:
    """Erase an ESP32-family chip and write MicroPython at the chip's bootloader offset.

    ``port`` None picks the single connected ESP32-like serial port. ``cmds`` is the esptool
    scripting API (defaults to :mod:`esptool.cmds`: ``detect_chip``, ``run_stub``,
    ``attach_flash``, ``erase_flash``, ``write_flash``, ``reset_chip``); tests pass a fake.
    ``progress(stage, done, total)`` is called with stages ``connect``, ``erase``, ``write``.
    ``devices`` (default: the connected USB boards) is used to find or check ``port``.
    """
    img = check_esp32_image(image)
    listed = list(ports.list_usb() if devices is None else devices)
    if port is None:
        port = find_esp32_port(listed)
    else:
        for d in listed:
            if d.port == port and d.kind == "rp2040":
                raise WrongBoardError("%s is an RP2040 (USB %s), not an ESP32: use --board rp2040" % (port, d.usb_id))
    if cmds is None:
        import esptool.cmds as cmds
    errors = _esptool_errors()
    stage = ["connect"]

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(stage[0], done, total)

    with _quiet_esptool(progress, stage):
        report(0, 1)
        try:
            esp = cmds.detect_chip(port)
        except errors as exc:
            raise NoDeviceError(
                "no ESP32 bootloader answered on %s (%s): %s" % (port, _one_line(exc), ESP32_BOOT_HELP)
            ) from None
        try:
            name = getattr(esp, "CHIP_NAME", "?")
            chip = ESP32_CHIPS.get(name)
            if chip is None:
                raise WrongBoardError(
                    "the board on %s is an %s, which keyfob does not support (the classic ESP32 only)" % (port, name)
                )
            if chip.name not in SUPPORTED_ESP32:
                raise WrongBoardError("the board on %s is an %s: %s" % (port, chip.name, _variant_refused(chip.name)))
            if chip is not img.chip:
                raise WrongBoardError(
                    "the image is built for %s but the board on %s is an %s: use the .bin from "
                    "micropython.org/download/%s" % (img.chip.name, port, chip.name, chip.board)
                )
            report(1, 1)
            try:
                esp = cmds.run_stub(esp)
                if baud and baud > 115200:
                    try:
                        esp.change_baud(baud)
                    except errors:  # ROM without baud change (NotImplementedInROMError): keep 115200
                        pass
                cmds.attach_flash(esp)
                stage[0] = "erase"
                report(0, 1)
                cmds.erase_flash(esp)
                report(1, 1)
                stage[0] = "write"
                report(0, len(img.data))
                cmds.write_flash(esp, [(img.offset(), img.data)])
                report(len(img.data), len(img.data))
                cmds.reset_chip(esp, "hard-reset")
            except errors as exc:
                raise FlashError(
                    "flashing %s on %s failed while %s: %s" % (chip.name, port, _doing(stage[0]), _one_line(exc))
                ) from None
        finally:
            _close(esp)
    return FlashResult("esp32", port, chip.name, img.offset(), len(img.data))


def _doing(stage: str) -> str:
    return {"connect": "connecting", "erase": "erasing", "write": "writing"}.get(stage, stage)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _close(esp) -> None:
    port = getattr(esp, "_port", None)
    close = getattr(port, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            pass


# --- RP2040 by UF2 copy -------------------------------------------------------------------------


def default_mount_points() -> list[str]:
    """Where desktops mount a USB drive labelled RPI-RP2 (Linux udisks, older Linux, macOS)."""
    found = []
    for pattern in (
        "/media/*/" + RPI_RP2_LABEL,
        "/run/media/*/" + RPI_RP2_LABEL,
        "/media/" + RPI_RP2_LABEL,
        "/Volumes/" + RPI_RP2_LABEL,
    ):
        found.extend(sorted(glob.glob(pattern)))
    return found


def _board_id(info_text: str) -> str | None:
    for line in info_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "board-id":
            return value.strip()
    return None


def find_rp2_drive(mount_points: Iterable[str | os.PathLike] | None = None) -> Path:
    """The one mounted RPI-RP2 drive: a folder holding INFO_UF2.TXT with an RPI-RP2 board id."""
    candidates = [Path(p) for p in (default_mount_points() if mount_points is None else mount_points)]
    drives = []
    others = []
    for folder in candidates:
        try:
            info = (folder / INFO_UF2).read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        board = _board_id(info)
        if board is not None and not board.upper().startswith(RPI_RP2_LABEL):
            others.append((folder, board))
            continue
        drives.append(folder)
    if len(drives) == 1:
        return drives[0]
    if len(drives) > 1:
        raise FlashError(
            "several RPI-RP2 drives mounted (%s): unplug all but one or pass --drive" % ", ".join(map(str, drives))
        )
    if others:
        folder, board = others[0]
        raise WrongBoardError("the UF2 drive at %s is a %s bootloader, not an RP2040 (RPI-RP2)" % (folder, board))
    where = (
        ", ".join(map(str, candidates))
        if mount_points is not None
        else ("/media/*/RPI-RP2, /run/media/*/RPI-RP2, /Volumes/RPI-RP2")
    )
    raise NoDeviceError("no RPI-RP2 drive found (looked in %s): %s" % (where, BOOTSEL_HELP))


def _drive_gone(drive: Path) -> bool:
    try:
        return not (drive / INFO_UF2).is_file()
    except OSError:
        return True


_sleep = time.sleep
_monotonic = time.monotonic


def flash_rp2040(
    image: str | os.PathLike,
    *,
    mount_points: Iterable[str | os.PathLike] | None = None,
    timeout: float = 30.0,
    progress: Progress | None = None,
    chunk: int = 64 * 1024,
) -> FlashResult:
    """Copy a MicroPython ``.uf2`` onto the RPI-RP2 drive, then wait for the board to reboot.

    The board must be in BOOTSEL mode (hold BOOTSEL while plugging in the USB cable).
    ``mount_points`` replaces the usual places to look for the drive. ``progress(stage, done,
    total)`` gets stages ``copy`` (bytes) and ``reboot``. Raises :class:`FlashError` if the drive
    is still there ``timeout`` seconds after the copy.
    """
    path = Path(image)
    data = check_uf2_image(path)
    drive = find_rp2_drive(mount_points)
    target = drive / path.name
    total = len(data)
    if progress is not None:
        progress("copy", 0, total)
    try:
        with open(target, "wb") as fh:
            for at in range(0, total, chunk):
                fh.write(data[at : at + chunk])
                fh.flush()
                os.fsync(fh.fileno())
                if progress is not None:
                    progress("copy", min(at + chunk, total), total)
    except OSError as exc:
        # The ROM reboots as soon as it has the last block; closing may then fail. Fine if it left.
        if not _drive_gone(drive):
            raise FlashError("copying %s to %s failed: %s" % (path.name, drive, _one_line(exc))) from None
    if progress is not None:
        progress("reboot", 0, 1)
    deadline = _monotonic() + timeout
    while not _drive_gone(drive):
        if _monotonic() >= deadline:
            raise FlashError(
                "copied %s to %s but the drive is still there after %gs: the board did not take "
                "the image (is it an RP2040?); unplug it and try again" % (path.name, drive, timeout)
            )
        _sleep(0.2)
    if progress is not None:
        progress("reboot", 1, 1)
    return FlashResult("rp2040", str(drive), "RP2040", 0, total)
