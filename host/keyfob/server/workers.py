"""``keyfob serve --workers N``: N uvicorn worker processes, each listening on a socket of its own
bound to the same address with ``SO_REUSEPORT``, so that the kernel spreads new connections over
the workers.

Why not uvicorn's own ``--workers``: it shares one listening socket, and a worker that wakes for it
accepts every connection waiting (its event loop accepts until the queue is empty). A relying
party opening its pool of keep-alive connections at once then lands them all on one worker, and
the other stays idle (measured: 32 connections, one worker did all the work). With a socket per
worker the kernel picks the worker by a hash of each connection's addresses.

Linux lets only processes of the same user join a ``SO_REUSEPORT`` group, so another account
cannot bind the port beside us and take a share of the logins.

The parent starts the workers, restarts one that dies while serving, stops them all on SIGINT or
SIGTERM, and gives up (exit 3) if a worker fails before it serves: a bad app, TLS file or address
fails the same way on every restart.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import threading
import time

#: uvicorn's exit code for a worker that failed before serving (uvicorn.config.STARTUP_FAILURE)
STARTUP_FAILURE = 3
STOP_S = 10.0
_POLL_S = 0.5


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT`` (not listening yet: uvicorn listens)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _worker(options: dict, listening) -> None:
    """One worker (a spawned process): the app loaded (a failure here is a failure to start), its
    own socket listening, then uvicorn's server on it."""
    import logging

    import uvicorn

    config = uvicorn.Config(**options)
    try:
        config.load()  # imports and makes the app: exits 1 with uvicorn's own message if it cannot
    except SystemExit:
        raise SystemExit(STARTUP_FAILURE) from None
    try:
        sock = listening_socket(config.host, config.port)
        sock.listen(config.backlog)
    except OSError as exc:
        logging.getLogger("uvicorn.error").error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror)
        raise SystemExit(STARTUP_FAILURE) from None
    listening.set()
    uvicorn.Server(config).run(sockets=[sock])


class Workers:
    """The parent of ``count`` workers, each running uvicorn with ``options`` (uvicorn.Config's)."""

    def __init__(self, count: int, options: dict):
        self._count = count
        self._options = options
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list = []
        self._stop = threading.Event()

    def _start_one(self):
        listening = self._ctx.Event()
        proc = self._ctx.Process(target=_worker, args=(self._options, listening), daemon=False)
        proc.start()
        return proc, listening

    def run(self, on_listening=None) -> int:
        """Serve until SIGINT/SIGTERM (exit status 0), or until a worker fails to start (3).
        ``on_listening()`` is called once every worker's socket listens."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        # (process, its "listening" event): the parent keeps the event as long as the process, or
        # the child could not open it
        self._procs = [self._start_one() for _ in range(self._count)]
        for proc, listening in self._procs:
            while not self._stop.is_set() and proc.is_alive() and not listening.wait(0.1):
                pass
        if on_listening is not None and all(proc.is_alive() for proc, _ in self._procs):
            on_listening()
        status = 0
        while not self._stop.wait(_POLL_S):
            for i, (proc, _) in enumerate(self._procs):
                if proc.is_alive():
                    continue
                if proc.exitcode == STARTUP_FAILURE:
                    status = STARTUP_FAILURE
                    self._stop.set()
                    break
                self._procs[i] = self._start_one()  # died while serving: replace it
        self._stop_all()
        return status

    def _stop_all(self) -> None:
        for proc, _ in self._procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        deadline = time.monotonic() + STOP_S
        for proc, _ in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
