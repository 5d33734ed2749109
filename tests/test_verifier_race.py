"""Acceptance 3: 64 threads plus 4 processes submit the same valid code against one database (a SQLite
file, and a PostgreSQL database: the ``db`` fixture): exactly one is accepted, the counter moves
exactly once, and the audit log has every attempt.

Two rounds. In the first, every submitter is held (through the verifier's ``_before_write`` test
seam) just before the one write transaction that decides its login (load, reservations, match,
compare-and-set), until all of them have got there: so all 72 really race for that transaction
with the same code (the lockout and the rate limit are set out of the way so that all 72 get to
check their code). In the second nobody is held; they only start together on a barrier, with the
default limits.

A replay (the same code again) is no failure: the losers of the race are refused as replays and
leave the token's fail count at 0.

Then the lockout and the per-user throttle under parallel wrong codes: every submitter is held
after it has read the token and user state (all see an unlocked token and an empty rate window)
and then all go at once; still exactly ``max_fail`` (or ``user_rate_limit``) codes are checked.
"""

import base64
import threading

import pyotp
import pytest
from concurrency import node_context
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import Policy, Verifier

SEED = b"race condition seed!"
KEY = b"R" * 32
PW = "race password"
THREADS = 64
PROCS = 4
THREADS_PER_PROC = 2
N = THREADS + PROCS * THREADS_PER_PROC
POLICY = Policy(password_profile="fast")
OPEN_POLICY = Policy(password_profile="fast", max_fail=1000, user_rate_limit=0)


def _submit(v, code, start, results, hold):
    if hold is not None:
        v._before_write = lambda: hold.wait()  # every submitter holds here, before its transaction
    start.wait()
    r = v.check_code("racer", code)
    results.append((r.accepted, r.reason))


def _child(db, code, start, hold, queue, policy=POLICY):
    v = Verifier.open(db, key=KEY, policy=policy)
    try:
        results = []
        ts = [threading.Thread(target=_submit, args=(v, code, start, results, hold)) for _ in range(THREADS_PER_PROC)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        queue.put(results)
    finally:
        v.close()


@pytest.mark.parametrize("hold_after_match", [True, False], ids=["all-matched-then-race", "start-together"])
def test_one_code_many_submitters_exactly_one_accept(db, databases, hold_after_match):
    policy = OPEN_POLICY if hold_after_match else POLICY
    v = Verifier.init(db, key=KEY, policy=policy)
    serial = make_serial(4242)
    v.import_records([TokenRecord(serial, "hotp", "sha1", 6, SEED)])
    v.add_user("racer", PW)
    ref = pyotp.HOTP(base64.b32encode(SEED).decode())
    assert v.link("racer", serial, ref.at(0)).accepted
    code = ref.at(1)
    audit_before = len(v.audit(user="racer", action="validate", limit=None))
    deadlocks = databases.deadlocks(db)

    ctx = node_context()
    start = ctx.Barrier(N + 1, timeout=120)  # all submitters + this test thread
    hold = ctx.Barrier(N, timeout=120) if hold_after_match else None
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(str(db), code, start, hold, queue, policy)) for _ in range(PROCS)]
    for p in procs:
        p.start()
    results: list = []
    threads = [threading.Thread(target=_submit, args=(v, code, start, results, hold)) for _ in range(THREADS)]
    for t in threads:
        t.start()
    start.wait()  # releases all 72 submitters at once
    for t in threads:
        t.join(timeout=120)
    for _ in procs:
        results.extend(queue.get(timeout=120))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    assert len(results) == N
    accepted = [r for r in results if r[0]]
    assert len(accepted) == 1, results
    # the others sent a code already used: replays (or, with the default limits, attempts that met
    # the token's or the user's limit while the replays' reservations were still in flight)
    losers = {reason for ok, reason in results if not ok}
    assert losers == {"replay"} if hold_after_match else losers <= {"replay", "locked", "throttled"}, results
    tok = v.token(serial)
    assert tok.counter == 2  # linked at 0 (-> 1), then moved exactly once (-> 2)
    assert tok.fail_count == 0 and not tok.locked  # a replay is not a failure
    rows = v.audit(user="racer", action="validate", limit=None)
    assert sum(r.count for r in rows) - audit_before == N  # every attempt is in the audit log
    assert sum(r.result == "ok" for r in rows) == 1
    assert databases.deadlocks(db) == deadlocks  # rows are locked in one order: no deadlock to retry
    v.close()


# --- the lockout and the rate limit under parallel wrong codes --------------------------------------

WRONG_THREADS = 64
WRONG_PROCS = 2
WRONG_N = WRONG_THREADS + WRONG_PROCS * THREADS_PER_PROC


def _hold_after_password(v, held):
    """verify(): make every submitter wait after its password was checked (so after it has read the
    token's state, fail count 0) and before the token is reserved, until all have got there."""
    real = v._pw.verify

    def verify(hashed, password):
        ok = real(hashed, password)
        held.wait()
        return ok

    v._pw.verify = verify


def _submit_wrong(v, how, code, start, results):
    start.wait()
    r = v.check_code("guesser", code) if how == "code-only" else v.verify("guesser", PW, code)
    results.append(r.reason)


def _wrong_child(db, policy, how, codes, start, held, queue):
    v = Verifier.open(db, key=KEY, policy=policy)
    try:
        if held is not None:
            _hold_after_password(v, held)
        results = []
        ts = [threading.Thread(target=_submit_wrong, args=(v, how, c, start, results)) for c in codes]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        queue.put(results)
    finally:
        v.close()


FAST = {"password_profile": "fast"}


@pytest.mark.parametrize(
    "how, policy, checked, blocked",
    [
        ("code-only", Policy(**FAST, max_fail=10, user_rate_limit=20), 10, {"locked", "throttled"}),
        ("code-only", Policy(**FAST, max_fail=10, user_rate_limit=5), 5, {"throttled"}),
        # every submitter has read fail count 0 and passed its password before any token reservation
        ("password-held", Policy(**FAST, max_fail=10, user_rate_limit=0), 10, {"locked"}),
    ],
    ids=["token-lock-first", "rate-limit-first", "stale-reads"],
)
def test_parallel_wrong_codes_check_exactly_the_limit(db, databases, how, policy, checked, blocked):
    v = Verifier.init(db, key=KEY, policy=policy)
    serial = make_serial(4343)
    v.import_records([TokenRecord(serial, "hotp", "sha1", 6, SEED)])
    v.add_user("guesser", PW)
    ref = pyotp.HOTP(base64.b32encode(SEED).decode())
    assert v.link("guesser", serial, ref.at(0)).accepted
    window = {ref.at(c) for c in range(1, 1 + policy.hotp_window)}
    wrong = [c for c in (f"{i:06d}" for i in range(1000, 2000)) if c not in window][:WRONG_N]
    audit_before = len(v.audit(user="guesser", action="validate", limit=None))
    deadlocks = databases.deadlocks(db)

    ctx = node_context()
    start = ctx.Barrier(WRONG_N + 1, timeout=120)
    held = ctx.Barrier(WRONG_N, timeout=120) if how == "password-held" else None
    queue = ctx.Queue()
    per = THREADS_PER_PROC
    procs = [
        ctx.Process(
            target=_wrong_child,
            args=(str(db), policy, how, wrong[WRONG_THREADS + i * per :][:per], start, held, queue),
        )
        for i in range(WRONG_PROCS)
    ]
    for p in procs:
        p.start()
    if held is not None:
        _hold_after_password(v, held)
    results: list = []
    threads = [threading.Thread(target=_submit_wrong, args=(v, how, c, start, results)) for c in wrong[:WRONG_THREADS]]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join(timeout=120)
    for _ in procs:
        results.extend(queue.get(timeout=120))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    assert len(results) == WRONG_N
    assert results.count("wrong-code") == checked, sorted(results)
    assert set(results) - {"wrong-code"} <= blocked, sorted(results)
    tok = v.token(serial)
    assert tok.fail_count == checked
    assert tok.locked == (checked >= policy.max_fail)
    rows = v.audit(user="guesser", action="validate", limit=None)
    new = rows[: len(rows) - audit_before]
    # every attempt audited with its real result, throttled ones counted in aggregate rows
    assert sorted(d for r in new for d in [r.detail] * r.count) == sorted(results)
    assert databases.deadlocks(db) == deadlocks
    v.close()
