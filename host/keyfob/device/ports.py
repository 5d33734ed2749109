"""Find tokens and bare boards: USB serial ports by VID:PID, plus running virtual tokens.

Real boards are recognised by the USB vendor/product id of their serial port, as pyserial's
``serial.tools.list_ports`` reports it:

========================  ===========  ==============
USB id                    kind         what it is
========================  ===========  ==============
303A:*  (Espressif)       esp32        native USB of ESP32-S2/S3/C3/C6 (USB-Serial/JTAG or TinyUSB CDC)
10C4:EA60 (CP210x)        usb-serial   USB-UART bridge, common on ESP32 dev boards
1A86:7523 / 1A86:55D4     usb-serial   CH340 / CH9102 bridges, ditto
0403:6001 (FTDI)          usb-serial   FT232R bridge
2E8A:0005                 rp2040       MicroPython's own USB CDC on a Raspberry Pi RP2040
========================  ===========  ==============

A USB-UART bridge says nothing about the chip behind it, hence the neutral ``usb-serial``.
An RP2040 in BOOTSEL mode is a mass-storage drive (RPI-RP2), not a serial port: see
:mod:`keyfob.device.flashing`.

Virtual tokens (``keyfob.sim``) have no USB id. The sim harness registers each running token
with :func:`register_sim`, which writes one small JSON file per token into :func:`sim_registry_dir`:
``{"port": "/dev/pts/N", "pid": 1234, "workdir": "..."}``. ``pid`` is the process that keeps the
port alive; once it has died the entry is stale and :func:`list_sims` ignores it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

ESPRESSIF_VID = 0x303A
RP2040_MICROPYTHON = (0x2E8A, 0x0005)

#: Exact (VID, PID) pairs and the kind of board they stand for.
KNOWN_USB_IDS: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "usb-serial",  # Silicon Labs CP210x
    (0x1A86, 0x7523): "usb-serial",  # WCH CH340
    (0x1A86, 0x55D4): "usb-serial",  # WCH CH9102 (shows as CH34x)
    (0x0403, 0x6001): "usb-serial",  # FTDI FT232R
    RP2040_MICROPYTHON: "rp2040",
}

KINDS = ("esp32", "rp2040", "usb-serial", "sim")

#: Environment variable that overrides where virtual tokens are registered (tests use it).
SIM_REGISTRY_ENV = "KEYFOB_SIM_REGISTRY"


@dataclass(frozen=True)
class Device:
    """One place a token can be talked to.

    ``vid``/``pid`` are the USB ids (None for a virtual token); ``process_id`` and ``workdir``
    are set for virtual tokens only.
    """

    port: str
    kind: str
    vid: int | None = None
    pid: int | None = None
    description: str = ""
    serial_number: str | None = None
    process_id: int | None = None
    workdir: str | None = None

    @property
    def is_virtual(self) -> bool:
        return self.kind == "sim"

    @property
    def usb_id(self) -> str:
        """``VID:PID`` in the usual upper-case hex form, or '' for a virtual token."""
        if self.vid is None or self.pid is None:
            return ""
        return "%04X:%04X" % (self.vid, self.pid)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["usb_id"] = self.usb_id
        return d


def classify(vid: int | None, pid: int | None) -> str | None:
    """The board kind for a USB id, or None when it is not one of ours."""
    if vid is None or pid is None:
        return None
    if vid == ESPRESSIF_VID:
        return "esp32"
    return KNOWN_USB_IDS.get((vid, pid))


def _default_comports() -> Iterable:
    from serial.tools import list_ports

    return list_ports.comports()


def list_usb(comports: Callable[[], Iterable] | None = None) -> list[Device]:
    """Serial ports whose USB id belongs to a supported board, sorted by port path.

    ``comports`` returns pyserial ``ListPortInfo``-like objects (``device``, ``vid``, ``pid``,
    ``description``, ``serial_number``); it defaults to ``serial.tools.list_ports.comports``.
    """
    found = []
    for info in (comports or _default_comports)():
        vid, pid = getattr(info, "vid", None), getattr(info, "pid", None)
        kind = classify(vid, pid)
        if kind is None:
            continue
        found.append(
            Device(
                port=info.device,
                kind=kind,
                vid=vid,
                pid=pid,
                description=getattr(info, "description", None) or "",
                serial_number=getattr(info, "serial_number", None) or None,
            )
        )
    found.sort(key=lambda d: d.port)
    return found


# --- virtual tokens -----------------------------------------------------------------------------


def sim_registry_dir() -> Path:
    """Where running virtual tokens are registered.

    ``$KEYFOB_SIM_REGISTRY`` if set, else ``$XDG_RUNTIME_DIR/keyfob/sims`` (a per-user tmpfs that
    is emptied at logout), else ``~/.cache/keyfob/sims``.
    """
    override = os.environ.get(SIM_REGISTRY_ENV)
    if override:
        return Path(override)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "keyfob" / "sims"
    return Path.home() / ".cache" / "keyfob" / "sims"


def register_sim(port: str, pid: int, workdir: str | os.PathLike) -> Path:
    """Announce a running virtual token; returns the registry file to pass to :func:`unregister_sim`.

    ``pid`` is the process that keeps ``port`` alive (the entry goes stale when it dies).
    The file is written atomically (temp file + rename), readable by its owner only.
    """
    if not isinstance(pid, int) or pid <= 0:
        raise ValueError("pid must be a positive process id")
    folder = sim_registry_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = {"port": str(port), "pid": pid, "workdir": os.fspath(workdir)}
    fd, tmp = tempfile.mkstemp(prefix=".%d-" % pid, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        final = Path(tmp).with_name(Path(tmp).name[1:-4] + ".json")
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return final


def unregister_sim(path: str | os.PathLike) -> None:
    """Remove a registry file written by :func:`register_sim`; a missing file is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return False
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            stat = fh.read()
    except OSError:  # no /proc (macOS): trust kill()
        return True
    # "pid (comm) S ..." — comm may contain spaces and parentheses, the state follows the last ')'
    tail = stat[stat.rfind(b")") + 1 :].split()
    return not (tail and tail[0] in (b"Z", b"X"))


def _read_sim(path: Path) -> Device | None:
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
        port, pid, workdir = record["port"], record["pid"], record.get("workdir")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(port, str) or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if not _alive(pid):
        return None
    return Device(
        port=port,
        kind="sim",
        description="keyfob virtual token",
        process_id=pid,
        workdir=workdir if isinstance(workdir, str) else None,
    )


def list_sims() -> list[Device]:
    """Running virtual tokens from the registry; stale or unreadable entries are skipped."""
    folder = sim_registry_dir()
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return []
    sims = [d for d in (_read_sim(p) for p in paths) if d is not None]
    sims.sort(key=lambda d: d.port)
    return sims


def list_devices(comports: Callable[[], Iterable] | None = None, *, include_sims: bool = True) -> list[Device]:
    """Every supported USB board, then every running virtual token."""
    devices = list_usb(comports)
    if include_sims:
        devices.extend(list_sims())
    return devices
