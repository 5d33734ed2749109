"""``POST /validate/check`` on a SQLite file runs the login's steps on the event loop
(:mod:`keyfob.verifier.steps`, :func:`keyfob.server.validate._run_steps`), and the loop's two
hazards stay out: a transaction that would wait for the file's write lock goes to a login thread
(the loop keeps answering), and a costly Argon2 hash is never verified on the loop."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import threading

import httpx
import pyotp
import pytest
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.server import validate
from keyfob.server.app import create_app
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


def test_a_locked_file_sends_the_login_to_a_thread_and_the_loop_keeps_answering(tmp_path):
    db, key_file, key = _database(tmp_path)
    with keyfob_serve(db, key_file, tmp_path / "serve.log") as base, httpx.Client(base_url=base, timeout=60) as c:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's writer, for as long as the test says
        answers: list = []
        login = threading.Thread(
            target=lambda: answers.append(
                c.post(
                    "/validate/check",
                    json={"user": "ann", "pass": PW + HOTP.at(1)},
                    headers={"Authorization": f"Bearer {key}"},
                )
            )
        )
        login.start()
        try:
            # the login is waiting for the lock; the same (single) worker still answers
            for _ in range(3):
                assert c.get("/openapi.json").status_code == 200
            assert login.is_alive() and not answers
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        login.join(60)
    assert answers and answers[0].json()["result"]["value"] is True


@pytest.mark.parametrize("profile, on_loop", [("fast", True), ("default", False)])
def test_only_a_cheap_hash_is_verified_on_the_event_loop(tmp_path, profile, on_loop):
    """The user's hash, and an unknown user's dummy one, of the production profile (a fifth of a
    second each) on a login thread; the test profile's (microseconds) on the loop itself."""
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
            return ok.json()["result"]["value"], no_one.json()["result"]["value"]

    loop_thread = threading.current_thread()
    try:
        assert asyncio.run(logins()) == (True, False)
    finally:
        verifier.close()
    assert len(seen) == 2  # the user's hash, then the unknown user's dummy
    assert all(where == on_loop for _, where in seen), seen
    assert [validate._hash_cost("$argon2id$v=19$" + p + "$x$y") <= validate.LOOP_HASH_COST for p, _ in seen] == [
        on_loop
    ] * 2


def test_an_unreadable_hash_counts_as_costly():
    assert validate._hash_cost("not a hash") is None
    assert validate._hash_cost("$argon2id$v=19$m=65536,t=3,p=4$salt$tag") == 196_608
