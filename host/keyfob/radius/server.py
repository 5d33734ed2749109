"""The UDP loop of ``keyfob radius``.

One thread reads datagrams; a bounded pool of workers runs the verifier (Argon2 and the database
take milliseconds). RFC 5080 2.2.2: a request seen again from the same address and port with the
same Identifier and Request Authenticator is a retransmission; it gets the cached answer (or,
while the first is still being decided, nothing), never a second verify.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from keyfob.verifier import BadInput, Verifier, VerifierError, throttle

from . import packets
from .clients import Clients

log = logging.getLogger("keyfob.radius")

#: RFC 5080 2.2.2 suggests a few seconds: longer than a NAS's retransmission timer
DUPLICATE_SECONDS = 5.0
_CACHE_MAX = 65536
_PENDING = object()


class RadiusServer:
    """``serve_forever()`` until ``shutdown()``; ``address`` is the bound (host, port)."""

    def __init__(
        self, verifier: Verifier, clients: Clients, host: str = "127.0.0.1", port: int = 1812, workers: int = 4
    ):
        self._verifier = verifier
        self._clients = clients
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.5)  # so shutdown() is noticed
        self.address = self._sock.getsockname()[:2]
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="radius")
        self._slots = threading.BoundedSemaphore(workers * 32)  # requests queued at most
        self._seen: OrderedDict = OrderedDict()  # (addr, port, id, authenticator) -> (time, reply)
        self._seen_lock = threading.Lock()
        self._stop = threading.Event()

    def serve_forever(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data, addr = self._sock.recvfrom(packets.MAX_LENGTH + 1)
                except TimeoutError:
                    continue
                except OSError:
                    if self._stop.is_set():
                        break
                    raise
                self._receive(data, addr)
        finally:
            self._pool.shutdown(wait=True)
            self._sock.close()

    def shutdown(self) -> None:
        self._stop.set()

    def _receive(self, data: bytes, addr) -> None:
        client = self._clients.find(addr[0])
        if client is None:
            log.info("dropped a packet from %s: not a configured client", addr[0])
            return
        if len(data) >= 20:
            key = (addr[0], addr[1], data[1], data[4:20])
            with self._seen_lock:
                now = time.monotonic()
                while self._seen and (len(self._seen) >= _CACHE_MAX or self._oldest() < now - DUPLICATE_SECONDS):
                    self._seen.popitem(last=False)
                hit = self._seen.get(key)
                if hit is not None:
                    if hit[1] is not _PENDING:
                        self._send(hit[1], addr)
                    return
        if not self._slots.acquire(blocking=False):
            log.warning("dropped a request from %s: too many waiting", addr[0])
            return
        self._pool.submit(self._work, data, addr, client)

    def _oldest(self) -> float:
        return next(iter(self._seen.values()))[0]

    def _work(self, data: bytes, addr, client) -> None:
        try:
            req = packets.parse(data, client, addr)
            if req is None:
                return
            # only an authentic request holds its place in the duplicate cache
            key = (addr[0], addr[1], data[1], data[4:20])
            with self._seen_lock:
                if key in self._seen:
                    return
                self._seen[key] = (time.monotonic(), _PENDING)
            try:
                reply = packets.answer(req, self._decide(req))
            except Exception:
                with self._seen_lock:
                    self._seen.pop(key, None)  # undecided: the NAS's retransmission tries again
                raise
            with self._seen_lock:
                self._seen[key] = (self._seen[key][0], reply)
            self._send(reply, addr)
        except VerifierError as exc:  # undecided (the database): no answer, the NAS asks again
            log.error("a request from %s was not decided: %s", addr[0], exc)
        except Exception:  # one bad request must not stop the server
            log.exception("a request from %s failed", addr[0])
        finally:
            self._slots.release()

    def _decide(self, req: packets.Request) -> bool:
        try:
            return self._verifier.verify(
                packets.text(req.user), packets.text(req.password), source=self._source(req)
            ).accepted
        except BadInput:
            return False

    @staticmethod
    def _source(req: packets.Request) -> str | None:
        """Where the login comes from: the NAS's Calling-Station-Id (the user's address), if it
        gives one the verifier takes. Not the NAS's own address: every user comes through it, so
        one guesser would put it in back-off and keep everyone out."""
        if req.calling_station is None:
            return None
        station = req.calling_station.decode("ascii", "replace")
        try:
            throttle.source_key(station)
        except BadInput:
            return None
        return station

    def _send(self, reply: bytes, addr) -> None:
        try:
            self._sock.sendto(reply, addr)
        except OSError as exc:
            log.warning("cannot answer %s: %s", addr[0], exc.strerror)
