"""Exactly once across real server nodes (issue 12, acceptance point 2): ``keyfob serve`` processes
with 2 workers each on one database, and a real HTTP client (httpx's async client) firing every
request of a burst at once, spread over the servers.

On PostgreSQL two servers (4 worker processes, each its own engine and connection pool) share the
database; on SQLite one server with 2 workers shares the file. The throttle is on, with a
``user_rate_limit`` above the bursts and a ``client`` address of its own for each request, so that
neither the user's nor a source's back-off refuses attempts before they race. A token takes at most
``max_fail`` attempts in flight (each reserves a failure before its code is checked), so
``max_fail`` is set to 100: that many race for the token at once, and the wrong codes cross it.
What each attempt met is read back from the audit log (the answers are accept or reject only).

- 400 requests with the same valid password+code: exactly one accepted, the counter moved once,
  every request audited once with its own source; the others refused as replays or, while
  ``max_fail`` attempts were in flight, as locked (at least ``max_fail`` reached the token).
- 200 wrong codes at once: exactly ``max_fail`` are checked against the token (its fail count),
  the rest refused as locked.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib

import httpx
import pyotp
import pytest
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import Policy, Verifier
from keyfob.verifier.apikeys import ApiKeys

from bench.servers import keyfob_servers

SEED = b"one code, four nodes"
PW = "nodes over http 12"
MAX_FAIL = 100
BURST = 400
WRONG = 200
POLICY = Policy(password_profile="fast", max_fail=MAX_FAIL, user_rate_limit=BURST + WRONG)
REF = pyotp.HOTP(base64.b32encode(SEED).decode())
SERIALS = {"racer": make_serial(1301), "guesser": make_serial(1302)}


@pytest.fixture
def nodes(db_kind, databases, tmp_path):
    """One database (two users, each with a linked HOTP token of the same seed; a validate key)
    and the servers on it: two on PostgreSQL, one on SQLite, ``--workers 2`` each."""
    db, key_file = databases.new(db_kind, tmp_path), tmp_path / "v.key"
    with Verifier.init(db, key_file=key_file, policy=POLICY) as v:
        for user, serial in SERIALS.items():
            v.import_records([TokenRecord(serial, "hotp", "sha1", 6, SEED)])
            v.add_user(user, PW)
            assert v.link(user, serial, REF.at(0)).accepted
        api_key = ApiKeys(v).add("web", "validate")[1]
    count = 2 if db_kind == "postgresql" else 1
    logs = [tmp_path / f"serve{i}.log" for i in range(count)]
    try:
        with keyfob_servers(count, db, key_file, logs, "--workers", "2") as bases:
            yield {"db": db, "key_file": key_file, "bases": bases, "api_key": api_key}
    finally:
        databases.drop(db)


async def _burst(bases: list[str], api_key: str, bodies: list[dict]) -> list[httpx.Response]:
    """Every body posted at once, request i to server i mod len(bases), each on a connection of its own."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {api_key}"}
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=b, limits=limits, headers=headers, timeout=120))
            for b in bases
        ]
        posts = [clients[i % len(clients)].post("/validate/check", json=body) for i, body in enumerate(bodies)]
        return await asyncio.gather(*posts)


def burst(nodes, user: str, passes: list[str], net: int) -> list[bool]:
    """``passes`` for ``user`` all at once, each from its own ``client`` address in 10.<net>/16;
    every answer must be a decided login (HTTP 200). Returns the answers' values."""
    bodies = [{"user": user, "pass": p, "client": f"10.{net}.{i // 256}.{i % 256}"} for i, p in enumerate(passes)]
    answers = asyncio.run(_burst(nodes["bases"], nodes["api_key"], bodies))
    bad = [(r.status_code, r.text[:200]) for r in answers if r.status_code != 200]
    assert not bad, f"{len(bad)} requests not decided, the first: {bad[0]}"
    return [r.json()["result"]["value"] for r in answers]


def audited(v: Verifier, user: str) -> list:
    return v.audit(user=user, action="validate", limit=None)


def test_across_server_nodes_one_valid_code_is_accepted_once_and_wrong_codes_count_exactly(nodes, databases):
    """Both bursts in one test, one after the other on the same servers: starting them is most of
    the cost (under xdist, two tests could each start their own)."""
    deadlocks = databases.deadlocks(nodes["db"])
    one_valid_code_is_accepted_once(nodes)
    wrong_codes_count_exactly(nodes)
    assert databases.deadlocks(nodes["db"]) == deadlocks


def one_valid_code_is_accepted_once(nodes) -> None:

    values = burst(nodes, "racer", [PW + REF.at(1)] * BURST, net=1)

    assert values.count(True) == 1 and values.count(False) == BURST - 1
    with Verifier.open(nodes["db"], key_file=nodes["key_file"]) as v:
        tok = v.token(SERIALS["racer"])
        assert tok.counter == 2  # linked at 0 (-> 1), then moved exactly once
        assert tok.fail_count == 0 and not tok.locked  # a replay is not a failure
        rows = audited(v, "racer")
    assert sum(r.count for r in rows) == BURST  # every request audited, each on a row of its own
    assert collections.Counter((r.result, r.detail) for r in rows if r.result == "ok") == {("ok", None): 1}
    refused = collections.Counter(r.detail for r in rows if r.result != "ok")
    assert set(refused) <= {"replay", "locked"} and refused["replay"] >= MAX_FAIL - 1, refused
    assert len({r.source for r in rows}) == BURST and {r.via for r in rows} == {"api:web"}


def wrong_codes_count_exactly(nodes) -> None:
    window = {REF.at(c) for c in range(1, 2 + POLICY.hotp_window)}
    wrong = [c for c in (f"{i:06d}" for i in range(200000, 200000 + 2 * WRONG)) if c not in window][:WRONG]

    values = burst(nodes, "guesser", [PW + c for c in wrong], net=2)

    assert values == [False] * WRONG
    with Verifier.open(nodes["db"], key_file=nodes["key_file"]) as v:
        tok = v.token(SERIALS["guesser"])
        rows = audited(v, "guesser")
    assert tok.fail_count == MAX_FAIL and tok.locked
    reasons = collections.Counter(r.detail for r in rows for _ in range(r.count))
    assert reasons == {"wrong-code": MAX_FAIL, "locked": WRONG - MAX_FAIL}, reasons
