"""Put the keyfob firmware onto a board that already runs MicroPython, and check it landed.

:func:`deploy` does, in order:

1. *probe*: ask the port for INFO (docs/protocol.md). A token that answers *locked* is refused at
   once: its REPL is closed (``micropython.kbd_intr(-1)``), so there is no way to copy files, by
   design; a factory reset (button held) reopens it. A board that does not answer is taken for a
   bare MicroPython board (or one whose firmware is broken) and needs ``board`` to be named.
2. *build*: compile ``firmware/`` plus the board's files with ``mpy-cross`` (:mod:`keyfob.build`).
3. *copy*: over the raw REPL with mpremote's own serial transport (mpremote as a library: the
   transport is separate from the commands, so tests and real boards share this code path).
   A stale ``x.py`` next to a deployed ``x.mpy`` (or the reverse) is removed: MicroPython would
   import the ``.py`` first.
4. *verify*: one ``exec`` on the device hashes every deployed file with ``hashlib.sha256`` and
   prints the hex digests; each must equal the local file's (FIPS 180-4 SHA-256). A damaged copy
   is an error that names the files.
5. *reset*: leave the raw REPL and soft-reset from the friendly REPL (Ctrl-D), which runs
   ``main.py`` again on every port.
6. *check*: INFO must answer from the new firmware and name the same board.

``progress(stage, done, total)`` is called as the work goes on (stages: ``probe``, ``build``,
``copy``, ``verify``, ``reset``, ``check``). The library never prints; mpremote prints diagnostics
when it cannot enter the raw REPL, so that step is done here with its transport's primitives.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keyfob import build as fwbuild
from keyfob.device.client import DeviceError, TokenClient, TokenInfo
from keyfob.errors import BadInput, KeyfobError, Refused, Unavailable

BOARDS = ("esp32", "rp2040", "sim")
PROBE_TIMEOUT = 1.5
#: How long the new firmware may take after the soft reset to answer INFO.
BOOT_TIMEOUT = 15.0
CHUNK = 512

Progress = Callable[[str, int, int], None]


class DeployError(KeyfobError):
    """Deploying failed; the message is one line for people."""


class LockedTokenError(DeployError, Refused):
    """The token is locked: its REPL is closed, nothing can be copied onto it."""


class PortUnavailable(DeployError, Unavailable):
    """The port cannot be opened, or nothing on it answers as MicroPython."""


class BoardUnknown(DeployError, BadInput):
    """The board is not named and cannot be told, or is not the one named."""


@dataclass(frozen=True)
class DeployResult:
    port: str
    board: str
    #: (device file name, SHA-256 hex) of every file copied and verified
    files: tuple[tuple[str, str], ...]
    info: TokenInfo


def _nothing(stage: str, done: int, total: int) -> None:
    return None


def probe(port: str, timeout: float = PROBE_TIMEOUT) -> TokenInfo | None:
    """INFO from the keyfob firmware on ``port``, or None when nothing answers it."""
    try:
        with TokenClient(port, timeout=timeout) as client:
            return client.info()
    except DeviceError:
        return None
    except OSError as exc:
        raise PortUnavailable(f"cannot open {port}: {exc.strerror or exc}") from None


# --- the USB side: mpremote's transport -------------------------------------------------------


class Repl:
    """The raw REPL of a board through ``mpremote.transport_serial.SerialTransport``."""

    def __init__(self, port: str, timeout: float = 10.0):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self._error = TransportError
        self.port = port
        self.timeout = timeout
        try:
            self.t = SerialTransport(port, baudrate=115200, timeout=1)  # wait=0: prints nothing
        except (TransportError, OSError) as exc:
            raise PortUnavailable(f"cannot open {port}: {exc}") from None

    def __enter__(self) -> Repl:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.t.in_raw_repl:
                self.t.exit_raw_repl()
        except OSError:
            pass
        try:
            self.t.close()
        except OSError:
            pass

    def enter(self) -> None:
        # As mpremote's enter_raw_repl(soft_reset=False), which prints what it got when it fails;
        # a library must not print (and redirecting stdout is not safe in threads).
        t = self.t
        t.serial.write(b"\r\x03")  # Ctrl-C: interrupt the firmware (ignored by a locked token)
        n = t.serial.in_waiting
        while n > 0:
            t.serial.read(n)
            n = t.serial.in_waiting
        t.serial.write(b"\r\x01")  # Ctrl-A: raw REPL
        banner = b"raw REPL; CTRL-B to exit\r\n"
        got = t.read_until(1, banner, timeout_overall=self.timeout)
        if not got.endswith(banner):
            raise PortUnavailable(
                f"no raw REPL on {self.port}: the board does not run MicroPython, is busy, or is a "
                "locked token (factory-reset it first)"
            )
        t.in_raw_repl = True

    def exec(self, code: str) -> bytes:
        from mpremote.transport import TransportExecError

        try:
            return self.t.exec(code)
        except TransportExecError as exc:
            last = (exc.error_output.strip().splitlines() or ["error"])[-1]
            raise DeployError(f"the board on {self.port} failed a command: {last}") from None
        except self._error as exc:
            raise DeployError(f"lost the raw REPL on {self.port}: {exc}") from None

    def write_file(self, name: str, data: bytes) -> None:
        from mpremote.transport import TransportError

        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and not self.t.fs_exists(d):
                self.t.fs_mkdir(d)
        try:
            self.t.fs_writefile(name, data, chunk_size=CHUNK)
        except (TransportError, OSError) as exc:
            raise DeployError(f"could not write {name} on {self.port}: {exc}") from None

    def remove_if_present(self, names: Sequence[str]) -> None:
        if names:
            self.exec("import os\nfor n in %r:\n try:\n  os.remove(n)\n except OSError:\n  pass\n" % (list(names),))

    def soft_reset(self) -> None:
        # Ctrl-D at the *friendly* REPL: a soft reset from the raw REPL would come back without
        # running main.py. Ports print "soft reboot" or "MPY: soft reboot".
        self.t.exit_raw_repl()
        got = self.t.read_until(1, b">>> ", timeout=self.timeout)
        if not got.endswith(b">>> "):
            raise DeployError(f"no REPL prompt on {self.port} before the soft reset")
        self.t.serial.write(b"\x04")
        got = self.t.read_until(1, b"soft reboot\r\n", timeout=self.timeout)
        if not got.endswith(b"soft reboot\r\n"):
            raise DeployError(f"the board on {self.port} did not soft-reset")


#: Run on the device: one "name hexdigest" line per file ("name -" when it is missing).
_HASH_CODE = """\
import hashlib, binascii
def _kf_sha(n):
    try:
        f = open(n, 'rb')
    except OSError:
        print(n, '-')
        return
    h = hashlib.sha256()
    b = bytearray(256)
    m = memoryview(b)
    with f:
        while True:
            k = f.readinto(b)
            if not k:
                break
            h.update(m[:k])
    print(n, binascii.hexlify(h.digest()).decode())
for _n in %r:
    _kf_sha(_n)
del _kf_sha
"""


def _device_hashes(repl: Repl, names: Sequence[str]) -> dict[str, str | None]:
    out = repl.exec(_HASH_CODE % (list(names),)).decode("utf-8", "replace")
    got: dict[str, str | None] = {}
    for line in out.splitlines():
        parts = line.strip().rsplit(" ", 1)
        if len(parts) == 2 and parts[0] in names:
            got[parts[0]] = None if parts[1] == "-" else parts[1].lower()
    return got


def local_hashes(files: Sequence[tuple[Path, str]]) -> dict[str, str]:
    """device name -> SHA-256 hex of the local file."""
    return {name: hashlib.sha256(Path(local).read_bytes()).hexdigest() for local, name in files}


def _compare(want: dict[str, str], got: dict[str, str | None], port: str) -> None:
    missing = [n for n in want if got.get(n) is None]
    damaged = [n for n in want if got.get(n) is not None and got[n] != want[n]]
    if missing or damaged:
        parts = []
        if damaged:
            parts.append("hash mismatch on " + ", ".join(damaged))
        if missing:
            parts.append("missing " + ", ".join(missing))
        raise DeployError(f"verification failed on {port}: {'; '.join(parts)} (copy again)")


def verify(port: str, files: Sequence[tuple[Path, str]], reset: bool = True, timeout: float = 10.0) -> None:
    """Check every ``(local, device_name)`` file on the board by SHA-256; DeployError if any differs
    or is missing. This interrupts the firmware; ``reset`` soft-resets the board afterwards so it
    runs again (it is left at the REPL otherwise), and when every file is intact, returns once the
    firmware answers INFO: until then a Ctrl-C from the host is data (main.py turns it off before
    it knows whether the token is locked), so a tool that connected at once would find no REPL."""
    with Repl(port, timeout) as repl:
        repl.enter()
        want = local_hashes(files)
        try:
            _compare(want, _device_hashes(repl, list(want)), port)
        finally:
            if reset:
                repl.soft_reset()
    if reset:
        wait_info(port)


def _twins(names: Sequence[str]) -> list[str]:
    """Stale files that would shadow (or be shadowed by) the deployed ones."""
    out = []
    for n in names:
        if n.endswith(".mpy"):
            out.append(n[:-4] + ".py")
        elif n.endswith(".py") and n not in fwbuild.SOURCE_ONLY:
            out.append(n[:-3] + ".mpy")
    return [n for n in out if n not in names]


def wait_info(port: str, timeout: float = BOOT_TIMEOUT) -> TokenInfo:
    """INFO from a board that is (re)starting its firmware: retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with TokenClient(port, timeout=min(2.0, max(0.5, deadline - time.monotonic()))) as c:
                return c.info()
        except DeviceError as exc:
            last = exc
        except OSError as exc:  # a native-USB board drops its port for a moment while resetting
            last = exc
            time.sleep(0.2)
    raise DeployError(f"the firmware on {port} did not answer INFO within {timeout:g} s after the reset ({last})")


def deploy(
    port: str,
    board: str | None = None,
    progress: Progress | None = None,
    files: Sequence[tuple[Path, str]] | None = None,
    build_dir: str | Path | None = None,
    timeout: float = 10.0,
) -> DeployResult:
    """Build (unless ``files`` is given), copy, verify by hash, soft-reset and check INFO.

    ``board`` may be left out when the port already runs the keyfob firmware (INFO names it).
    """
    cb = progress or _nothing
    if board is not None and board not in BOARDS:
        raise BoardUnknown(f"unknown board {board!r} (choose one of {', '.join(BOARDS)})")
    cb("probe", 0, 1)
    before = probe(port)
    if before is not None and before.locked:
        raise LockedTokenError(
            f"the token on {port} (serial {before.serial or 'none'}) is locked: its USB console is "
            "closed, so firmware cannot be copied; factory-reset it first (keyfob reset, holding "
            "the button)"
        )
    if board is None:
        if before is None:
            raise BoardUnknown(f"{port} does not answer as a keyfob token: name the board (--board esp32|rp2040|sim)")
        board = before.board
        if board not in BOARDS:
            raise BoardUnknown(f"the token on {port} reports an unknown board {board!r}: name it")
    elif before is not None and before.board != board:
        raise BoardUnknown(f"the token on {port} runs the {before.board} firmware, not {board}: wrong --board?")
    cb("probe", 1, 1)

    with contextlib.ExitStack() as stack:
        if files is None:
            cb("build", 0, 1)
            out = build_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="keyfob-build-"))
            try:
                files = fwbuild.build(board, Path(out))
            except fwbuild.BuildError as exc:
                raise DeployError(f"build failed: {exc}") from None
            cb("build", 1, 1)
        files = list(files)
        names = [name.lstrip(":") for _, name in files]
        want = local_hashes([(local, name) for (local, _), name in zip(files, names, strict=True)])
        total = sum(Path(local).stat().st_size for local, _ in files)

        with Repl(port, timeout) as repl:
            repl.enter()
            repl.remove_if_present(_twins(names))
            done = 0
            cb("copy", 0, total)
            for (local, _), name in zip(files, names, strict=True):
                data = Path(local).read_bytes()
                repl.write_file(name, data)
                done += len(data)
                cb("copy", done, total)
            cb("verify", 0, len(names))
            _compare(want, _device_hashes(repl, names), port)
            cb("verify", len(names), len(names))
            cb("reset", 0, 1)
            repl.soft_reset()
            cb("reset", 1, 1)

    cb("check", 0, 1)
    info = wait_info(port)
    if info.board != board:
        raise DeployError(f"after the reset the firmware on {port} reports board {info.board!r}, not {board}")
    cb("check", 1, 1)
    return DeployResult(port=port, board=board, files=tuple((n, want[n]) for n in names), info=info)
