"""The host end of the virtual token's control socket (docs/internals.md).

The host listens on a unix socket; each powered-on sim process connects once at boot
(``boards/sim/hw/bus.py``). The protocol is line-based text, one request per line and one
reply line (``ok ...`` / ``err ...``) per request, in order. The sim answers only while its
firmware is in ``board.idle()``, so a reply also says "the firmware got this far".

Requests are pipelined: each :meth:`ControlServer.request` queues a reply slot, so replies
match requests by order even when a caller gave up waiting on an earlier one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque

from keyfob.errors import Unavailable


class SimError(Unavailable, RuntimeError):
    """The virtual token refused a request or is not there."""


class SimTimeout(SimError, TimeoutError):
    """The virtual token did not answer in time (its firmware is not in idle())."""


class _Reply:
    __slots__ = ("event", "line", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.line: str | None = None
        self.error: str | None = None


class ControlServer:
    """Listens at ``path``; the newest connection is the live sim."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(4)
        self._sock.settimeout(0.2)
        self._cond = threading.Condition()
        self._conn: socket.socket | None = None
        self._pending: deque[_Reply] = deque()
        self.generation = 0  # connections accepted so far
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="keyfob-sim-ctrl", daemon=True)
        self._thread.start()

    # -- connections -----------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._cond:
                self._drop_locked("replaced by a new connection")
                self._conn = conn
                self.generation += 1
                gen = self.generation
                self._cond.notify_all()
            threading.Thread(target=self._read_loop, args=(conn, gen), name="keyfob-sim-ctrl-rx", daemon=True).start()

    def _read_loop(self, conn: socket.socket, gen: int) -> None:
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with self._cond:
                    if self._conn is not conn:
                        return
                    if self._pending:
                        slot = self._pending.popleft()
                        slot.line = line.decode("utf-8", "replace").strip()
                        slot.event.set()
        with self._cond:
            if self._conn is conn:
                self._drop_locked("the virtual token went away")
                self._cond.notify_all()

    def _drop_locked(self, why: str) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None
        while self._pending:
            slot = self._pending.popleft()
            slot.error = why
            slot.event.set()

    def disconnect(self) -> None:
        """Forget the current connection (its process was killed)."""
        with self._cond:
            self._drop_locked("the virtual token was switched off")
            self._cond.notify_all()

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._conn is not None

    def wait_connected(self, after: int, timeout: float, alive=None) -> None:
        """Wait for a connection newer than generation ``after``.

        ``alive()`` (optional) is polled; when it turns false the wait fails at once.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.generation > after and self._conn is not None):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SimTimeout("the virtual token did not come up")
                if alive is not None and not alive():
                    raise SimError("the virtual token stopped while booting")
                self._cond.wait(min(left, 0.05))

    # -- requests ---------------------------------------------------------------------

    def send(self, line: str, timeout: float = 10.0) -> _Reply:
        """Queue one request; returns its reply slot."""
        if "\n" in line:
            raise ValueError("one request per line")
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._conn is None:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise SimTimeout("the virtual token is not connected")
                self._cond.wait(min(left, 0.05))
            slot = _Reply()
            self._pending.append(slot)
            try:
                self._conn.sendall(line.encode() + b"\n")
            except OSError as e:
                self._drop_locked("send failed")
                raise SimError("the virtual token went away") from e
        return slot

    def request(self, line: str, timeout: float = 10.0) -> str:
        """Send one request and wait for its reply line; ``err`` replies raise SimError."""
        deadline = time.monotonic() + timeout
        slot = self.send(line, timeout)
        if not slot.event.wait(max(0.0, deadline - time.monotonic())):
            raise SimTimeout(f"no answer to {line.split()[0]!r} (is the firmware idle?)")
        if slot.error is not None:
            raise SimError(slot.error)
        assert slot.line is not None
        if not slot.line.startswith("ok"):
            raise SimError(slot.line)
        return slot.line

    def close(self) -> None:
        self._closed = True
        with self._cond:
            self._drop_locked("closed")
            self._cond.notify_all()
        try:
            # Wakes the accept() now (closing the socket alone does not): the join below then
            # takes no time, instead of the accept's 0.2 s timeout at every token's close.
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass
        self._thread.join(2)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
