"""Acceptance 3: 64 threads plus 4 processes submit the same valid code against one SQLite file:
exactly one is accepted, the counter moves exactly once, and the audit log has every attempt.

Two rounds. In the first, every submitter is held (through the verifier's ``_before_commit`` test
seam) after its code has matched and before its compare-and-set, until all of them have matched:
so all of them really race for the same ``UPDATE ... WHERE counter = ?``. In the second nobody is
held; they only start together on a barrier.
"""

import base64
import multiprocessing
import threading

import pyotp
import pytest
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


def _submit(v, code, start, results, hold):
    if hold is not None:
        v._before_commit = lambda: hold.wait()  # every submitter holds here once its code matched
    start.wait()
    r = v.check_code("racer", code)
    results.append((r.accepted, r.reason))


def _child(db, code, start, hold, queue):
    v = Verifier.open(db, key=KEY, policy=POLICY)
    try:
        results = []
        ts = [
            threading.Thread(target=_submit, args=(v, code, start, results, hold))
            for _ in range(THREADS_PER_PROC)
        ]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        queue.put(results)
    finally:
        v.close()


@pytest.mark.parametrize("hold_after_match", [True, False], ids=["all-matched-then-race", "start-together"])
def test_one_code_many_submitters_exactly_one_accept(tmp_path, hold_after_match):
    db = tmp_path / "race.db"
    v = Verifier.init(db, key=KEY, policy=POLICY)
    serial = make_serial(4242)
    v.import_records([TokenRecord(serial, "hotp", "sha1", 6, SEED)])
    v.add_user("racer", PW)
    ref = pyotp.HOTP(base64.b32encode(SEED).decode())
    assert v.link("racer", serial, ref.at(0)).accepted
    code = ref.at(1)
    audit_before = len(v.audit(user="racer", action="validate", limit=None))

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(N + 1, timeout=120)  # all submitters + this test thread
    hold = ctx.Barrier(N, timeout=120) if hold_after_match else None
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(str(db), code, start, hold, queue)) for _ in range(PROCS)]
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
    assert all(reason in ("wrong-code", "locked", "throttled") for ok, reason in results if not ok)
    tok = v.token(serial)
    assert tok.counter == 2  # linked at 0 (-> 1), then moved exactly once (-> 2)
    rows = v.audit(user="racer", action="validate", limit=None)
    assert len(rows) - audit_before == N  # every attempt is in the audit log
    assert sum(r.result == "ok" for r in rows) == 1
    v.close()
