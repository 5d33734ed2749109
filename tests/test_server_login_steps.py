"""``POST /validate/check`` on a SQLite file runs the login's steps on the event loop
(:mod:`keyfob.verifier.steps`, :func:`keyfob.server.validate._run_steps`), and the loop's two
hazards stay out: a transaction that finds the file's write lock taken waits for it without
blocking the loop (which keeps answering), and a costly Argon2 hash is never verified on the
loop."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import threading
import time

import httpx
import pyotp
import pytest
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.server import validate
from keyfob.server.app import create_app
from keyfob.server.validate import _checkers
from keyfob.verifier import Policy, Verifier
from keyfob.verifier.apikeys import ApiKeys

from bench.servers import keyfob_serve

SEED = bytes(range(7, 27))
HOTP = pyotp.HOTP(base64.b32encode(SEED).decode())
PW = "loop password 1"


def _database(wd, profile: str = "fast") -> tuple:
    db, key_file = wd / "v.db", wd / "v.key"
    with Verifier.init(db, key_file=key_file, policy=Policy(password_profile=profile)) as v:
        serial = make_serial(4401)
        v.import_records([TokenRecord(serial, "hotp", "sha1", 6, SEED)])
        v.add_user("ann", PW)
        assert v.link("ann", serial, HOTP.at(0)).accepted
        key = ApiKeys(v).add("web", "validate")[1]
    return db, key_file, key


@pytest.mark.parametrize("named_by", ["user", "serial"])
def test_a_login_waits_for_a_locked_file_and_the_loop_keeps_answering(tmp_path, named_by):
    """Another process holds the file's write lock. The login (named by its user, or by its token
    as privacyIDEA's ``serial``) waits for it (up to the store's wait, 5 s by default) without
    blocking the loop: the worker's other requests are answered in far less than that meanwhile,
    and the login is accepted once the lock is let go."""

    db, key_file, key = _database(tmp_path)
    with keyfob_serve(db, key_file, tmp_path / "serve.log") as base, httpx.Client(base_url=base, timeout=60) as c:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's writer, for as long as the test says
        answers: list = []
        body = {"user": "ann"} if named_by == "user" else {"serial": make_serial(4401)}
        body["pass"] = PW + HOTP.at(1)
        auth = {"Authorization": f"Bearer {key}"}
        login = threading.Thread(target=lambda: answers.append(c.post("/validate/check", json=body, headers=auth)))
        login.start()
        try:
            time.sleep(0.5)  # the login is in the server by now, waiting for the lock
            for _ in range(3):
                started = time.monotonic()
                assert c.get("/openapi.json").status_code == 200
                assert time.monotonic() - started < 2.5  # half the wait: the loop was not the one waiting
            assert login.is_alive() and not answers
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        login.join(60)
    assert answers and answers[0].json()["result"]["value"] is True


def _asgi_logins(app, key: str, bodies: list[dict]) -> list[bool]:
    """``bodies`` posted to ``/validate/check`` all at once, in-process; each answer's value."""

    async def logins():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
            auth = {"Authorization": f"Bearer {key}"}
            answers = await asyncio.gather(*(c.post("/validate/check", json=b, headers=auth) for b in bodies))
            return [a.json()["result"]["value"] for a in answers]

    return asyncio.run(logins())


def test_a_burst_of_right_logins_from_one_relying_party_is_not_throttled(tmp_path):
    """Fourteen right logins at once from one source (a relying party that sends no ``client``),
    more than the throttle's free tries: a worker runs at most ``logins_in_flight`` at once, as its
    threads did, so they never hold more reservations than that while they wait for a hash."""
    db, key_file, key = _database(tmp_path, "default")
    with Verifier.open(db, key_file=key_file) as v:
        v.add_user("pat", PW, twofa=False)
        assert v.policy.user_rate_limit < 14
    verifier = Verifier.open(db, key_file=key_file)
    try:
        assert _asgi_logins(create_app(verifier, in_flight=2), key, [{"user": "pat", "pass": PW}] * 14) == [True] * 14
    finally:
        verifier.close()


def test_a_login_the_stopping_loop_leaves_is_finished_on_a_thread(tmp_path):
    """The loop stops (``asyncio.run`` cancels what is left) while a login's hash runs on a login
    thread: that step and the rest of the login run there, its audit row and its give-back."""
    db, key_file, key = _database(tmp_path, "default")
    with Verifier.open(db, key_file=key_file) as v:
        v.add_user("pat", PW, twofa=False)
    verifier = Verifier.open(db, key_file=key_file)
    app = create_app(verifier, in_flight=2)
    hashing = threading.Event()
    real = verifier.passwords.verify

    def verify(hashed, password):
        hashing.set()
        return real(hashed, password)

    verifier.passwords.verify = verify

    async def main():
        asyncio.ensure_future(validate._check_on_loop(app, _bearer(key), "pat", None, PW, "10.7.0.1"))
        while not hashing.is_set():
            await asyncio.sleep(0.005)
        # main returns with the login on its thread; asyncio.run cancels the login's task

    try:
        asyncio.run(main())
        app.state.login_checkers.shutdown(wait=True)
        rows = [(a.result, a.detail) for a in verifier.audit(user="pat", action="validate", limit=None)]
        assert len(rows) == 1 and rows[0][0] == "ok", rows  # once: no step run twice
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT max(fails) FROM throttle").fetchone()[0] == 0  # given back
    finally:
        verifier.close()


def test_a_login_the_stopping_loop_leaves_waiting_for_the_lock_is_finished_on_a_thread(tmp_path):
    """The same while its first transaction waits for another process's write lock: the
    transaction, once the lock is free, and the rest of the login run on a login thread."""

    db, key_file, key = _database(tmp_path)
    with Verifier.open(db, key_file=key_file) as v:
        v.add_user("pat", PW, twofa=False)
    verifier = Verifier.open(db, key_file=key_file)
    app = create_app(verifier, in_flight=2)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")

    async def main():
        asyncio.ensure_future(validate._check_on_loop(app, _bearer(key), "pat", None, PW, "10.7.0.2"))
        await asyncio.sleep(0.3)  # the login's first transaction is waiting for the lock

    try:
        asyncio.run(main())
        time.sleep(0.2)
        holder.execute("ROLLBACK")
        app.state.login_checkers.shutdown(wait=True)
        rows = [(a.result, a.detail) for a in verifier.audit(user="pat", action="validate", limit=None)]
        assert len(rows) == 1 and rows[0][0] == "ok", rows  # once: no step run twice
    finally:
        holder.close()
        verifier.close()


def test_a_login_the_stopping_loop_leaves_waiting_for_its_sync_runs_no_step_again(tmp_path, monkeypatch):
    """The same while the login, its steps all done, waits for the log's sync before it answers (a
    server's store): nothing of it is run again, on the loop or on a thread, and the sync is still
    made."""
    from keyfob.verifier import logsync

    db, key_file, key = _database(tmp_path)
    with Verifier.open(db, key_file=key_file) as v:
        v.add_user("pat", PW, twofa=False)
    verifier = Verifier.open(db, key_file=key_file, serving=True)
    app = create_app(verifier, in_flight=2)
    real, syncing, go_on = logsync._datasync, threading.Event(), threading.Event()

    synced = threading.Event()

    def held(fd):
        syncing.set()
        go_on.wait(30)
        real(fd)
        synced.set()

    monkeypatch.setattr(logsync, "_datasync", held)

    async def main():
        asyncio.ensure_future(validate._check_on_loop(app, _bearer(key), "pat", None, PW, "10.7.0.3"))
        for _ in range(2000):
            if syncing.is_set():
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the login never asked for a sync of the log")

    try:
        asyncio.run(main())
        go_on.set()
        _checkers(app).shutdown(wait=True)
        rows = [(a.result, a.detail) for a in verifier.audit(user="pat", action="validate", limit=None)]
        assert len(rows) == 1 and rows[0][0] == "ok", rows  # once: no step run twice
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT max(fails) FROM throttle").fetchone()[0] == 0  # given back
        assert synced.wait(10)
    finally:
        go_on.set()
        verifier.close()


def test_a_login_whose_commit_cannot_be_synced_is_not_accepted(tmp_path, monkeypatch):
    """The disk refuses to sync the log (an I/O error) as a right login commits: the answer is a
    500 with the cause in one line, never an accept the disk may not keep; and so for the logins
    after it, even once the disk syncs again (what it dropped is not known to be on disk: the
    server must be restarted)."""
    import errno

    from keyfob.verifier import logsync

    db, key_file, key = _database(tmp_path)
    verifier = Verifier.open(db, key_file=key_file, serving=True)
    app = create_app(verifier, in_flight=2)
    real, failing = logsync._datasync, [True]

    def disk(fd):
        if failing[0]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(logsync, "_datasync", disk)

    async def logins():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            auth = {"Authorization": f"Bearer {key}"}
            refused = await c.post("/validate/check", json={"user": "ann", "pass": PW + HOTP.at(1)}, headers=auth)
            failing[0] = False
            later = await c.post("/validate/check", json={"user": "ann", "pass": PW + HOTP.at(2)}, headers=auth)
            return refused, later

    try:
        refused, later = asyncio.run(logins())
    finally:
        verifier.close()
    message = (
        "cannot sync the database's log to disk: Input/output error (every sync fails until the server is restarted)"
    )
    for answer in (refused, later):
        assert answer.status_code == 500, answer.text
        assert answer.json()["result"]["error"]["message"] == message


def _bearer(key: str):
    from fastapi.security import HTTPAuthorizationCredentials

    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=key)


@pytest.mark.parametrize("profile, on_loop", [("fast", True), ("default", False)])
def test_only_a_cheap_hash_is_verified_on_the_event_loop(tmp_path, profile, on_loop):
    """The user's hash, and an unknown user's dummy one, of the production profile (a fifth of a
    second each) on a login thread; the test profile's (microseconds) on the loop itself. The
    same for logins named by their token (``serial``), a known one and an unknown one."""
    db, key_file, key = _database(tmp_path, profile)
    verifier = Verifier.open(db, key_file=key_file, password_profile=profile)
    app = create_app(verifier, in_flight=2)
    seen: list[tuple[str, bool]] = []
    real = verifier.passwords.verify

    def verify(hashed, password):
        seen.append((hashed.split("$")[3], threading.current_thread() is loop_thread))
        return real(hashed, password)

    verifier.passwords.verify = verify

    async def logins():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            auth = {"Authorization": f"Bearer {key}"}
            ok = await c.post("/validate/check", json={"user": "ann", "pass": PW + HOTP.at(1)}, headers=auth)
            no_one = await c.post("/validate/check", json={"user": "nobody", "pass": PW + "123456"}, headers=auth)
            by_token = {"serial": make_serial(4401), "pass": PW + HOTP.at(2)}
            ok_serial = await c.post("/validate/check", json=by_token, headers=auth)
            no_token = {"serial": make_serial(4999), "pass": PW + "123456"}
            no_serial = await c.post("/validate/check", json=no_token, headers=auth)
            return [a.json()["result"]["value"] for a in (ok, no_one, ok_serial, no_serial)]

    loop_thread = threading.current_thread()
    try:
        assert asyncio.run(logins()) == [True, False, True, False]
    finally:
        verifier.close()
    assert len(seen) == 4  # the user's hash, the unknown user's dummy, the same by serial
    assert all(where == on_loop for _, where in seen), seen
    assert [validate._hash_cost("$argon2id$v=19$" + p + "$x$y") <= validate.LOOP_HASH_COST for p, _ in seen] == [
        on_loop
    ] * 4


def test_an_unreadable_hash_counts_as_costly():
    assert validate._hash_cost("not a hash") is None
    assert validate._hash_cost("$argon2id$v=19$m=65536,t=3,p=4$salt$tag") == 196_608
