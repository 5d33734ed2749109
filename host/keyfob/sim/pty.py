"""The virtual token's USB serial port: a pseudo-terminal bridge.

Two pseudo-terminals: the child ``micropython`` runs on one (its terminal put in raw mode
before exec, or the line discipline mangles the raw REPL), and the bytes are copied to and
from the other, whose slave path is :attr:`PtyBridge.port` -- what mpremote or pyserial open
as if it were a board's USB CDC port.

A board's soft reset (Ctrl-D at the REPL) is emulated: the unix port *exits* on Ctrl-D, so
when the child exits cleanly right after being sent a Ctrl-D, the bridge prints
``soft reboot\\r\\n`` and starts a new child. A soft reset from the raw REPL comes back in
the raw REPL without running main.py (as boards do): the new child is started without
main.py and the bridge sends Ctrl-A only once the child shows its ``>>> `` prompt (sent
earlier, it can be lost before the child's REPL reads). Any other exit of the child (power
cut, crash) leaves the token off, except SIGUSR1: the sim resets itself that way (an ESP32's
wake-up from deep sleep), and the bridge starts the next child at once (:attr:`PtyBridge.resets`).

Ctrl-C (boards/sim/hw/console.py): the child keeps its interrupt state in its pty settings. Off
(ISIG off, VINTR disabled): a Ctrl-C is data. On (ISIG on): the kernel turns it into SIGINT for
the child; as a port's USB stack clears its ring buffer on the interrupt char, the bridge then
drops the child's unread input and the bytes it holds before that Ctrl-C. Pending (ISIG off,
VINTR 3: on, but the child's VM has not reached a check yet): the bridge holds the Ctrl-C and
what follows it, creates the file ``intr_path``, and sends it on once on; if the child turns the
interrupt off first, whoever unlinks ``intr_path`` owns the Ctrl-C (the child: it raises it; the
bridge: it is data).

One thread copies bytes; it never blocks on a slow reader (output to the host is buffered
and, if nobody reads the port at all, the oldest bytes are dropped, as a board drops USB
output when no host listens).
"""

from __future__ import annotations

import atexit
import errno
import os
import select
import signal
import subprocess
import termios
import threading
import time
import tty
from collections.abc import Callable

_RAW_MARK = b"raw REPL; CTRL-B to exit"
_PROMPT = b">>> "
_OUT_CAP = 256 * 1024  # bytes held for a host that does not read
_GATE_TIMEOUT = 10.0


def _set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


#: how long a Ctrl-C held while the child was PENDING waits for the child to take it over once off
_TAKE_S = 2.0


def close_after(thread: threading.Thread, fds, timeout: float = 5.0) -> bool:
    """Close ``fds`` once ``thread``, which reads or writes them, has ended (at most ``timeout``).
    A closed number is the next file any thread of the process opens, so a late read or write by
    a thread still running would take that file's bytes or write into it: if the thread is still
    there, the descriptors are left open (a leak, not a corruption) and False is returned."""
    thread.join(timeout)
    if thread.is_alive():
        return False
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    return True


def _intr_state(cfd: int) -> str:
    """The child's Ctrl-C state from its pty settings: 'off', 'pending' or 'on'."""
    try:
        attrs = termios.tcgetattr(cfd)  # on a pty master: the child's (slave's) settings
    except termios.error:
        return "off"
    if attrs[3] & termios.ISIG:
        return "on"
    return "pending" if attrs[6][termios.VINTR] == b"\x03" else "off"


_live_groups: set[int] = set()  # process groups of children not yet reaped


@atexit.register
def _kill_leftovers() -> None:
    # A harness that was never closed must not leave micropython processes behind.
    for pgid in list(_live_groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


class PtyBridge:
    """Owns the host-side pty and the child process(es) of one virtual token.

    ``spawn_args(nomain)`` returns ``(argv, env)`` for a new child; ``on_exit(rc)`` is called
    (from the bridge thread) when a child ends for good.
    """

    def __init__(
        self,
        spawn_args: Callable[[bool], tuple[list[str], dict[str, str]]],
        on_exit: Callable[[int | None], None] | None = None,
        intr_path: str | None = None,
    ) -> None:
        self._spawn_args = spawn_args
        self._on_exit = on_exit
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        _set_nonblocking(self._master)
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._cfd: int | None = None  # master end of the child's pty
        self._to_child = bytearray()
        self._to_host = bytearray()
        self._tail = b""
        self._raw = False  # the child's REPL is in raw mode (by its output)
        self._last_in = b""  # last byte delivered to the child
        self._gate_until: float | None = None  # waiting for >>> before Ctrl-A
        self._killing = False
        self._closed = False
        self._close_begun = False
        self.restarts = 0  # soft resets
        self.resets = 0  # resets by the sim itself (SIGUSR1: a deep-sleep wake-up)
        self._cslave_path: str | None = None
        self._intr_path = intr_path  # a held Ctrl-C (see the module doc; KEYFOB_SIM_INTR)
        self._holding = False
        self._held_while_pending = False  # seen PENDING again after the hold began: the child's
        self._off_since: float | None = None  # when a held Ctrl-C's child turned Ctrl-C off
        self.exit_code: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        _set_nonblocking(self._wake_r)
        _set_nonblocking(self._wake_w)
        self._thread = threading.Thread(target=self._run, name="keyfob-sim-pty", daemon=True)
        self._thread.start()

    # -- child lifecycle ----------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        # Until the bridge has settled a child's end (off for good, or the next child started
        # by a reset), the token counts as on: then exit_code is set when this turns False.
        with self._lock:
            return self._proc is not None

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._proc.pid if self._proc is not None else None

    def start(self, nomain: bool = False, argv_env: tuple[list[str], dict[str, str]] | None = None) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("bridge closed")
            if self.is_running:
                raise RuntimeError("already running")
            self._spawn(argv_env or self._spawn_args(nomain))
        self._wake()

    def _spawn(self, argv_env: tuple[list[str], dict[str, str]]) -> None:
        argv, env = argv_env
        if self._proc is not None and self._proc.poll() is not None:
            _live_groups.discard(self._proc.pid)
        self._close_child_fd()
        cfd, cslave = os.openpty()
        try:
            tty.setraw(cslave)
            attrs = termios.tcgetattr(cslave)
            attrs[6][termios.VINTR] = b"\x00"  # Ctrl-C off until the child's console says otherwise
            termios.tcsetattr(cslave, termios.TCSANOW, attrs)
            self._cslave_path = os.ttyname(cslave)
            self._proc = subprocess.Popen(
                argv,
                stdin=cslave,
                stdout=cslave,
                stderr=cslave,
                env=env,
                close_fds=True,
                start_new_session=True,
            )
        except BaseException:
            os.close(cfd)
            raise
        finally:
            os.close(cslave)
        _live_groups.add(self._proc.pid)
        _set_nonblocking(cfd)
        self._cfd = cfd
        self._killing = False
        self._drop_hold()
        self._raw = False
        self._tail = b""
        self._last_in = b""
        self.exit_code = None

    def kill(self, timeout: float = 5.0) -> None:
        """Power cut: SIGKILL the child (its whole process group) at once, no restart."""
        with self._lock:
            proc = self._proc
            self._killing = True
            self._gate_until = None
            self._to_child.clear()
            self._drop_hold()
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        _live_groups.discard(proc.pid)
        # Let the thread see the end and settle the state.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._proc is None:
                    return
            self._wake()
            time.sleep(0.01)

    def close(self) -> None:
        """Stop the child and the copy thread, then close the descriptors. Once: a second call
        (``with`` and a fixture's teardown both close) returns, or it would close and write to
        numbers that other files have by now."""
        with self._lock:
            if self._close_begun:
                return
            self._close_begun = True
        self.kill()
        with self._lock:
            self._closed = True
        self._wake()
        if close_after(self._thread, (self._master, self._slave, self._wake_r, self._wake_w)):
            self._close_child_fd()

    def _close_child_fd(self) -> None:
        if self._cfd is not None:
            try:
                os.close(self._cfd)
            except OSError:
                pass
            self._cfd = None

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # -- the copy loop ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                cfd = self._cfd
                rlist = [self._master, self._wake_r]
                wlist = []
                if cfd is not None:
                    rlist.append(cfd)
                    if self._to_child and self._gate_until is None and not self._holding:
                        wlist.append(cfd)
                if self._to_host:
                    wlist.append(self._master)
                wait = 0.002 if self._holding else 0.05  # holding: look at the child's state soon
            try:
                r, w, _ = select.select(rlist, wlist, [], wait)
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            with self._lock:
                if self._closed:
                    return
                if self._wake_r in r:
                    try:
                        os.read(self._wake_r, 512)
                    except OSError:
                        pass
                if self._master in r:
                    self._read_host()
                if cfd is not None and cfd == self._cfd:
                    if cfd in r:
                        self._read_child(cfd)
                    if (cfd in w or self._holding) and self._cfd == cfd:
                        self._write_child(cfd)
                if self._master in w:
                    self._write_host()
                self._check_gate()
                self._check_exit()

    def _read_host(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:
            return  # EAGAIN, or EIO (nobody has the port open)
        if self._proc is None or self._killing:
            return  # no power: the bytes go nowhere
        self._to_child += data

    def _write_child(self, cfd: int) -> None:
        limit = self._ctrl_c(cfd) if self._intr_path is not None else len(self._to_child)
        if not limit:
            return
        try:
            n = os.write(cfd, self._to_child[:limit])
        except OSError as e:
            if e.errno != errno.EAGAIN:
                self._to_child.clear()
            return
        if n:
            self._last_in = bytes(self._to_child[n - 1 : n])
            del self._to_child[:n]

    def _ctrl_c(self, cfd: int) -> int:
        """How many bytes of ``_to_child`` may go to the child now (Ctrl-C, see the module doc)."""
        first = self._to_child.find(b"\x03")
        if first < 0 and not self._holding:
            return len(self._to_child)
        state = _intr_state(cfd)
        if state == "pending":
            if first > 0 and not self._holding:
                return first  # what came before the Ctrl-C goes in now
            if not self._holding:
                self._holding = True
                self._held_while_pending = False
                try:
                    os.close(os.open(self._intr_path, os.O_CREAT | os.O_WRONLY, 0o600))
                except OSError:
                    pass
            else:
                self._held_while_pending = True  # not a stale look: it came while PENDING
            return 0
        # A Ctrl-C that came while the child was PENDING, and the child has turned Ctrl-C off since:
        # its off() takes the held one over right after it turns the tty off (console.py), as a
        # port's interrupt survives kbd_intr(-1). Taking it back in that window would make it data
        # (seen: a Ctrl-C that came during boot.py ended nothing). So wait for the take, for a
        # bound: a child that never takes it gets it as data, as before.
        if self._holding and state == "off" and self._held_while_pending and os.path.exists(self._intr_path):
            if self._off_since is None:
                self._off_since = time.monotonic()
            if time.monotonic() - self._off_since < _TAKE_S:
                return 0
        self._off_since = None
        if self._holding:
            self._holding = False
            try:
                os.unlink(self._intr_path)
            except FileNotFoundError:
                # The child took the held Ctrl-C over (it raised it): gone, and with it
                # what the child had not read yet.
                del self._to_child[:1]
                self._flush_child_input()
                return self._ctrl_c(cfd)
            except OSError:
                pass
        if state == "on" and b"\x03" in self._to_child:
            # The port's USB stack clears its ring buffer on the interrupt char.
            del self._to_child[: self._to_child.rfind(b"\x03")]
            self._flush_child_input()
        return len(self._to_child)

    def _drop_hold(self) -> None:
        self._holding = False
        self._held_while_pending = False
        if self._intr_path is not None:
            try:
                os.unlink(self._intr_path)
            except OSError:
                pass

    def _flush_child_input(self) -> None:
        if self._cslave_path is None:
            return
        try:
            fd = os.open(self._cslave_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            termios.tcflush(fd, termios.TCIFLUSH)
        except termios.error:
            pass
        finally:
            os.close(fd)

    def _read_child(self, cfd: int) -> None:
        try:
            data = os.read(cfd, 4096)
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return
            data = b""
        if not data:
            return  # EOF/EIO: the child is gone; _check_exit settles it
        self._seen(data)
        self._host_out(data)

    def _seen(self, data: bytes) -> None:
        buf = self._tail + data
        r = buf.rfind(_RAW_MARK)
        p = buf.rfind(_PROMPT)
        if r >= 0 or p >= 0:
            self._raw = r > p
        self._tail = buf[-64:]

    def _host_out(self, data: bytes) -> None:
        self._to_host += data
        if len(self._to_host) > _OUT_CAP:
            del self._to_host[: len(self._to_host) - _OUT_CAP]
        self._write_host()

    def _write_host(self) -> None:
        if not self._to_host:
            return
        try:
            n = os.write(self._master, self._to_host)
        except OSError:
            return
        del self._to_host[:n]

    def _check_gate(self) -> None:
        if self._gate_until is None or self._cfd is None:
            return
        if self._tail.endswith(_PROMPT) or time.monotonic() > self._gate_until:
            self._gate_until = None
            self._to_child[:0] = b"\x01"  # back into the raw REPL, then what the host sent

    def _check_exit(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        # Drain what the child printed last.
        cfd = self._cfd
        if cfd is not None:
            while True:
                try:
                    data = os.read(cfd, 4096)
                except OSError:
                    break
                if not data:
                    break
                self._seen(data)
                self._host_out(data)
        rc = proc.returncode
        _live_groups.discard(proc.pid)
        soft_reset = not self._killing and not self._closed and rc == 0 and self._last_in == b"\x04"
        if not self._killing and not self._closed and rc == -signal.SIGUSR1:
            # The sim reset itself (a wake-up from deep sleep): the next boot, at once.
            pending = bytes(self._to_child)
            try:
                self._spawn(self._spawn_args(False))
            except OSError:
                pass
            else:
                self.resets += 1
                self._to_child[:] = pending
                return
        if soft_reset:
            nomain = self._raw
            pending = bytes(self._to_child)
            self._host_out(b"soft reboot\r\n")
            try:
                self._spawn(self._spawn_args(nomain))
            except OSError:
                soft_reset = False
            else:
                self.restarts += 1
                self._to_child[:] = pending
                if nomain:
                    self._gate_until = time.monotonic() + _GATE_TIMEOUT
                return
        self._proc = None
        self._close_child_fd()
        self._to_child.clear()
        self._gate_until = None
        self.exit_code = rc
        if self._on_exit is not None:
            try:
                self._on_exit(rc)
            except Exception:  # noqa: BLE001 - a callback must not kill the bridge
                pass
