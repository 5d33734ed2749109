"""Several nodes on one database (issue 12, "Many nodes"): processes that each open their own
Verifier (own engine, own connections, as separate ``keyfob serve`` processes would) fire their
attempts all at once, on SQLite and on PostgreSQL (READ COMMITTED, its default).

- 400 concurrent checks of one valid HOTP code: exactly one is accepted, the counter moves once,
  every attempt is audited once. With the limits out of the way all 400 check the code and race
  for the same compare-and-set; with the default limits most are refused before any check.
- Parallel wrong codes give exact fail counts: exactly ``max_fail`` codes are checked against the
  token (or ``user_rate_limit`` against the user), whatever the number of nodes.
"""

import base64

import pyotp
import pytest
from concurrency import fire
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import Policy, Verifier
from sqlalchemy import text

SEED = b"many nodes, one seed"
KEY = b"N" * 32
PW = "nodes password 7"
NODES = 4
FAST = {"password_profile": "fast"}


def enrolled(db, policy, user):
    """A verifier on ``db`` with ``user`` and one linked HOTP token; returns (verifier, serial, pyotp)."""
    v = Verifier.init(db, key=KEY, policy=policy)
    serial = make_serial(1212)
    v.import_records([TokenRecord(serial, "hotp", "sha1", 6, SEED)])
    v.add_user(user, PW)
    ref = pyotp.HOTP(base64.b32encode(SEED).decode())
    assert v.link(user, serial, ref.at(0)).accepted
    return v, serial, ref


def validations(v, user):
    return v.audit(user=user, action="validate", limit=None)


def attempts_audited(v, user):
    return sum(r.count for r in validations(v, user))


def throttle_fails(v):
    """The failures counted on the throttle's user keys (the test's one user)."""
    with v._engine.connect() as conn:
        return conn.execute(text("SELECT fails FROM throttle WHERE key LIKE 'u:%'")).scalar()


@pytest.mark.parametrize(
    "policy, refused",
    [
        (Policy(**FAST, max_fail=10**6, user_rate_limit=0), {"replay"}),
        (Policy(**FAST), {"replay", "locked", "throttled"}),
    ],
    ids=["all-check-the-code", "default-limits"],
)
def test_one_valid_code_from_many_nodes_is_accepted_once(db, databases, policy, refused):
    v, serial, ref = enrolled(db, policy, "racer")
    code = ref.at(1)
    before = attempts_audited(v, "racer")
    deadlocks = databases.deadlocks(db)

    results = fire(db, KEY, [("check_code", "racer", code)] * 400, nodes=NODES, policy=policy)

    assert len(results) == 400
    assert [r for r in results if r[0] is True] == [(True, "ok")], sorted(set(results))
    assert {reason for ok, reason in results if ok is not True} <= refused, sorted(set(results))
    assert v.token(serial).counter == 2  # linked at 0 (-> 1), then moved exactly once
    tok = v.token(serial)
    assert tok.fail_count == 0 and not tok.locked  # a replay is not a failure
    rows = validations(v, "racer")
    assert attempts_audited(v, "racer") - before == 400  # every attempt audited (throttled ones in aggregate)
    assert sum(r.result == "ok" for r in rows) == 1
    assert databases.deadlocks(db) == deadlocks
    v.close()


@pytest.mark.parametrize(
    "how, policy, checked, blocked",
    [
        ("check_code", Policy(**FAST, max_fail=10, user_rate_limit=0), 10, "locked"),
        ("check_code", Policy(**FAST, max_fail=10, user_rate_limit=5), 5, "throttled"),
    ],
    ids=["token-lock", "user-rate-limit"],
)  # password and code together: test_verifier_race's stale-reads case
def test_parallel_wrong_codes_from_many_nodes_count_exactly(db, databases, how, policy, checked, blocked):
    v, serial, ref = enrolled(db, policy, "guesser")
    window = {ref.at(c) for c in range(1, 1 + policy.hotp_window)}
    wrong = [c for c in (f"{i:06d}" for i in range(100000, 100400)) if c not in window][:200]
    attempts = [(how, "guesser", c) for c in wrong]
    before = len(validations(v, "guesser"))
    deadlocks = databases.deadlocks(db)

    results = fire(db, KEY, attempts, nodes=NODES, policy=policy)

    reasons = [reason for _, reason in results]
    assert len(reasons) == 200 and not any(ok is True for ok, _ in results)
    assert reasons.count("wrong-code") == checked, sorted(set(reasons))
    assert reasons.count(blocked) == 200 - checked, sorted(set(reasons))
    tok = v.token(serial)
    assert tok.fail_count == checked and tok.locked == (checked == policy.max_fail)
    if policy.user_rate_limit:
        assert throttle_fails(v) == policy.user_rate_limit
    rows = validations(v, "guesser")[: len(validations(v, "guesser")) - before]
    # each audited as it ended, throttled ones counted in aggregate rows
    assert sorted(d for r in rows for d in [r.detail] * r.count) == sorted(reasons)
    assert databases.deadlocks(db) == deadlocks
    v.close()
