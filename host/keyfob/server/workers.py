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

A socket with ``SO_REUSEPORT`` also joins a group that another ``keyfob serve`` of the same user
made on that port, which would then take a share of the logins silently (against its own database
and key, maybe). So the parent first binds the port once *without* it: that fails while anything
listens there, ours or not, and the port is one clear error.

The parent starts the workers, restarts one that dies, stops them all on SIGINT or SIGTERM (and
they stop with it if it is killed), and gives up (exit 3) if one of the first workers dies before
it listens: a bad app, TLS file or address would fail the same way on every restart. A worker
that dies soon after its start again and again (a request that crashes it, memory) is restarted
after a pause that doubles each time (:func:`restart_pause`), so a crash loop does not spin the
cores while the other workers serve.
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
#: a worker that served at least this long before it died is restarted at once
QUICK_DEATH_S = 30.0
RESTART_MAX_S = 30.0


def restart_pause(last_pause: float, served_s: float) -> float:
    """The pause before a dead worker's replacement starts: none after a worker that had served
    :data:`QUICK_DEATH_S`, else 1 s, then twice the last pause, up to :data:`RESTART_MAX_S`."""
    if served_s >= QUICK_DEATH_S:
        return 0.0
    return min(RESTART_MAX_S, max(1.0, 2 * last_pause))


def _socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def port_is_free(host: str, port: int) -> str | None:
    """None if nothing is bound to ``host:port``; else why not (the OS's words)."""
    try:
        _socket(host, port, reuse_port=False).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A TCP socket of this worker on ``host:port``, in the port's ``SO_REUSEPORT`` group, listening."""
    sock = _socket(host, port, reuse_port=True)
    sock.listen(backlog)
    return sock


def _end_with_parent() -> None:
    """Linux: the kernel sends this process SIGTERM when its parent dies (even by SIGKILL), so no
    worker is left serving with nobody to stop it."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _worker(options: dict, listening) -> None:
    """One worker (a spawned process): the app loaded (a failure here is a failure to start), its
    own socket listening, then uvicorn's server on it."""
    import logging

    import uvicorn

    _end_with_parent()
    log = logging.getLogger("uvicorn.error")
    config = uvicorn.Config(**options)
    try:
        config.load()  # imports and makes the app (and reads the TLS files)
    except SystemExit:  # uvicorn said why
        raise SystemExit(STARTUP_FAILURE) from None
    except Exception as exc:  # e.g. a TLS file that is not a certificate, a database gone since
        log.error("the worker cannot start: %s", exc)
        raise SystemExit(STARTUP_FAILURE) from None
    try:
        sock = listening_socket(config.host, config.port, config.backlog)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror)
        raise SystemExit(STARTUP_FAILURE) from None
    listening.set()
    uvicorn.Server(config).run(sockets=[sock])


class Workers:
    """The parent of ``count`` workers, each running uvicorn with ``options`` (uvicorn.Config's)."""

    def __init__(self, count: int, options: dict, say=None):
        self._count = count
        self._options = options
        self._say = say or (lambda line: None)  # one line for the admin (the CLI: stderr)
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
        try:
            return self._serve(on_listening)
        finally:
            self._stop_all()

    def _serve(self, on_listening) -> int:
        # (process, its "listening" event): the parent keeps the event as long as the process, or
        # the child could not open it
        self._procs = [self._start_one() for _ in range(self._count)]
        for proc, listening in self._procs:
            while not self._stop.is_set() and proc.is_alive() and not listening.wait(0.1):
                pass
        if any(not listening.is_set() for _, listening in self._procs) and not self._stop.is_set():
            return STARTUP_FAILURE  # a first worker died before it listened: the next would too
        if on_listening is not None:
            on_listening()
        started = [time.monotonic()] * self._count
        pauses = [0.0] * self._count
        due: list[float | None] = [None] * self._count  # when a dead worker's replacement starts
        while not self._stop.wait(_POLL_S):
            now = time.monotonic()
            for i, (proc, _) in enumerate(self._procs):
                if due[i] is not None:
                    if now >= due[i]:
                        self._procs[i], started[i], due[i] = self._start_one(), now, None
                    continue
                if proc.is_alive():
                    continue
                # died: replace it, after a pause if it keeps dying young. A replacement that
                # failed to start (or was killed before it listened: memory, say) too: the other
                # workers are serving, and a cause that passes (a TLS file being renewed) lets it
                # come back
                pauses[i] = restart_pause(pauses[i], now - started[i])
                due[i] = now + pauses[i]
                self._say(
                    f"keyfob serve: worker {proc.pid} died (exit {proc.exitcode}) after {now - started[i]:.0f} s;"
                    f" restarting it in {pauses[i]:g} s"
                )
        return 0

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
