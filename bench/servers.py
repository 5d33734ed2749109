"""``keyfob serve`` in a subprocess on 127.0.0.1 and a free port, for the tests and the benchmarks.

:func:`keyfob_serve` starts it on a database (``$KEYFOB_DB``: a SQLite path or a PostgreSQL URL),
waits until it answers, yields its base URL and stops it when the block ends; :func:`keyfob_servers`
does the same for several servers on one database, started side by side. It lives in bench/
beside :mod:`bench.pgserver` for the same reason: the tests import bench's harness modules, never
the other way round. No pytest here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

#: how long a server may take to start listening (a start-up bound, not a measurement)
START_S = 60.0
STOP_S = 15.0


class ServeError(RuntimeError):
    """The server exited at start or never listened; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-2000:] if log_path.exists() else "(no log)"


@contextlib.contextmanager
def keyfob_serve(db, key_file, log_path, *options, profile: str | None = "fast", scheme="http", verify=True):
    """``keyfob serve --port <free> *options`` on ``db`` until the block ends; yields its base URL.

    ``profile`` is the Argon2 profile of new hashes and of an unknown user's dummy check
    (``$KEYFOB_ARGON2_PROFILE``; None: the production default). The server's output goes to
    ``log_path`` (a pipe nobody reads would fill up and stall it). ``verify`` is httpx's, for the
    readiness check of a TLS server. Its own session: a worker left behind by a failed stop is
    killed with the whole group."""
    with keyfob_servers(1, db, key_file, [log_path], *options, profile=profile, scheme=scheme, verify=verify) as bases:
        yield bases[0]


@contextlib.contextmanager
def keyfob_servers(count: int, db, key_file, log_paths, *options, profile="fast", scheme="http", verify=True):
    """``count`` servers on one database (as :func:`keyfob_serve`, one log each), all started before
    waiting for any; yields their base URLs."""
    env = {**os.environ, "KEYFOB_DB": str(db), "KEYFOB_KEY_FILE": str(key_file)}
    env.pop("KEYFOB_KEY", None)
    env.pop("KEYFOB_ARGON2_PROFILE", None)
    if profile is not None:
        env["KEYFOB_ARGON2_PROFILE"] = profile
    started: list[tuple[subprocess.Popen, str, Path]] = []
    try:
        for log_path in map(Path, log_paths[:count]):
            port = free_port()
            cmd = [sys.executable, "-c", "from keyfob.cli import main; main()", "serve", "--port", str(port), *options]
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            started.append((proc, f"{scheme}://127.0.0.1:{port}", log_path))
        workers = int(options[options.index("--workers") + 1]) if "--workers" in options else 1
        for proc, base, log_path in started:
            _wait_listening(proc, base, log_path, verify, workers)
        yield [base for _, base, _ in started]
    finally:
        for proc, _, _ in started:
            _stop(proc)


def _wait_listening(proc: subprocess.Popen, base: str, log_path: Path, verify, workers: int) -> None:
    """Until the server answers and, with several workers, every worker listens (the parent's line
    ``keyfob serve: N workers on ...``): a worker still loading takes no connection, so a client
    starting earlier would land every connection on the first one."""
    deadline = time.monotonic() + START_S
    while True:
        if proc.poll() is not None:
            raise ServeError(f"keyfob serve exited at start: {_tail(log_path)}")
        try:
            httpx.get(base + "/openapi.json", timeout=2, verify=verify)
            if workers == 1 or f"keyfob serve: {workers} workers on" in _tail(log_path):
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ServeError(f"keyfob serve did not listen within {START_S:.0f} s: {_tail(log_path)}") from None
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (uvicorn stops its workers), then SIGKILL to the server's process group."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of its group still there (a worker left behind)
    proc.wait()
