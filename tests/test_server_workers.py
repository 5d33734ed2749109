"""``keyfob serve --workers N``: each worker has a listening socket of its own on the port
(``SO_REUSEPORT``), so connections a client opens at once are spread over the workers rather than
all taken by the worker that woke first (what uvicorn's shared socket did: 32 connections, one
worker did every login). A worker that dies is replaced; a port that cannot be had is one clear
error and exit 3.

Which process holds which connection is read from the kernel: ``/proc/net/tcp`` names the sockets on
the server's port, ``/proc/PID/fd`` who owns them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from keyfob.verifier import Policy, Verifier

from bench.servers import free_port, keyfob_serve

LISTEN, ESTABLISHED = "0A", "01"
CONNECTIONS = 16


def _sockets(port: int) -> dict[str, set[int]]:
    """The inodes of the sockets whose local port is ``port``, by TCP state."""
    found: dict[str, set[int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port:
                found.setdefault(cols[3], set()).add(int(cols[9]))
    return found


def _owners(inodes: set[int]) -> dict[int, int]:
    """pid -> how many of ``inodes`` its open files hold."""
    owners: dict[int, int] = {}
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue  # gone, or not ours
        held = sum(link in wanted for link in links)
        if held:
            owners[int(pid)] = held
    return owners


def _listeners(port: int) -> dict[int, int]:
    return _owners(_sockets(port).get(LISTEN, set()))


@pytest.fixture
def database(tmp_path):
    db, key_file = str(tmp_path / "v.db"), tmp_path / "v.key"
    Verifier.init(db, key_file=key_file, policy=Policy(password_profile="fast")).close()
    return db, key_file


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def test_connections_opened_at_once_are_spread_over_the_workers(database, tmp_path):
    db, key_file = database
    with keyfob_serve(db, key_file, tmp_path / "serve.log", "--workers", "2") as base:
        port = _port(base)
        # a pool opened at once: every connection is made (by the kernel) before any is accepted
        clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(CONNECTIONS)]
        try:
            for c in clients:  # one request each; the connection stays open, held by the worker that took it
                c.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: test\r\n\r\n")
            for c in clients:
                assert c.recv(12) == b"HTTP/1.1 200"
            held = _owners(_sockets(port).get(ESTABLISHED, set()))
            assert sum(held.values()) == CONNECTIONS
            assert len(held) == 2, f"all {CONNECTIONS} connections went to one worker: {held}"
            # ... the two workers, each with a listening socket of its own
            workers = _listeners(port)
            assert set(held) == set(workers) and all(n == 1 for n in workers.values()), (held, workers)
        finally:
            for c in clients:
                c.close()


def test_a_worker_that_dies_is_replaced(database, tmp_path):
    db, key_file = database
    with keyfob_serve(db, key_file, tmp_path / "serve.log", "--workers", "2") as base:
        port = _port(base)
        before = _listeners(port)
        assert len(before) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        _replaced(port, victim)
        for _ in range(8):  # new connections, whichever worker takes them
            with httpx.Client(base_url=base, timeout=30) as c:
                assert c.get("/openapi.json").status_code == 200


def _replaced(port: int, victim: int) -> dict[int, int]:
    """The port's listeners once two are up again and ``victim`` is not one of them."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _listeners(port)
        if len(now) == 2 and victim not in now:
            return now
        time.sleep(0.2)
    raise AssertionError(f"worker {victim} was not replaced: {now}")


def test_a_worker_that_keeps_dying_young_is_restarted_after_a_growing_pause(database, tmp_path):
    """A crash loop (here: the same worker slot killed as soon as it is back) must not spin: each
    replacement of a worker that died within 30 s of its start waits twice as long as the last."""
    db, key_file = database
    log = tmp_path / "serve.log"
    with keyfob_serve(db, key_file, log, "--workers", "2") as base:
        port = _port(base)
        before = _listeners(port)
        victim = min(before)
        for _ in range(3):
            os.kill(victim, signal.SIGKILL)
            after = _replaced(port, victim)
            (victim,) = set(after) - set(before)  # its replacement: the slot that keeps dying
            before = after
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.get("/openapi.json").status_code == 200
    pauses = [line.rsplit(" in ", 1)[1] for line in log.read_text().splitlines() if "restarting it in" in line]
    assert pauses == ["1 s", "2 s", "4 s"], log.read_text()


def test_a_replacement_that_cannot_start_is_retried_while_the_others_serve(database, tmp_path):
    """A replacement that fails to start (here: the database file moved away meanwhile) must not
    stop the server and its healthy worker: it is retried with the growing pause until it can."""
    db, key_file = database
    log = tmp_path / "serve.log"
    with keyfob_serve(db, key_file, log, "--workers", "2") as base:
        port = _port(base)
        victim = min(_listeners(port))
        os.rename(db, db + ".away")
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while log.read_text().count("restarting it in") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "exit 3" in log.read_text(), log.read_text()  # the replacement's own failure to start
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.get("/openapi.json").status_code == 200  # the other worker still serves
        os.rename(db + ".away", db)
        _replaced(port, victim)


def test_restart_pause_doubles_while_workers_die_young_and_resets_after_one_served():
    from keyfob.server.workers import QUICK_DEATH_S, RESTART_MAX_S, restart_pause

    pause, seen = 0.0, []
    for _ in range(7):
        pause = restart_pause(pause, served_s=2.0)
        seen.append(pause)
    assert seen == [1, 2, 4, 8, 16, RESTART_MAX_S, RESTART_MAX_S]
    assert restart_pause(RESTART_MAX_S, served_s=QUICK_DEATH_S) == 0


def _serve(db, key_file, port: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEYFOB_ARGON2_PROFILE": "fast"}
    cmd = [sys.executable, "-c", "from keyfob.cli import main; main()", "serve", "--db", db]
    cmd += ["--key-file", str(key_file), "--port", str(port), "--workers", "2", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_a_port_in_use_is_one_error_and_exit_3(database, tmp_path):
    db, key_file = database
    port = free_port()
    with socket.socket() as taken:  # another program's socket, without SO_REUSEPORT
        taken.bind(("127.0.0.1", port))
        taken.listen()
        error = _one_error(_serve(db, key_file, port))
    assert error == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_a_second_server_cannot_join_the_first_ones_port(database, tmp_path):
    # SO_REUSEPORT would let it: it would then take a share of the logins, silently
    db, key_file = database
    with keyfob_serve(db, key_file, tmp_path / "serve.log", "--workers", "2") as base:
        port = _port(base)
        error = _one_error(_serve(db, key_file, port))
        assert error == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
        assert len(_listeners(port)) == 2  # the first server's two workers, and nobody else


def test_a_worker_that_cannot_start_stops_the_server_instead_of_restarting(database, tmp_path):
    db, key_file = database
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    started = time.monotonic()
    proc = _serve(db, key_file, free_port(), "--ssl-certfile", str(junk), "--ssl-keyfile", str(junk))
    assert _one_error(proc) == "error: the server's workers could not start (see the lines above)"
    assert proc.stderr.count("the worker cannot start") <= 2  # each worker once: no restarts
    assert time.monotonic() - started < 100
