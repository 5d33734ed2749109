"""Several verifier nodes at once, for the exactly-once tests.

:func:`fire` starts ``nodes`` processes; each opens its own :class:`Verifier` on the one database
(its own engine and connection pool, as one ``keyfob serve`` process would) and runs its share of
the attempts in threads. Nothing starts until every thread of every node is ready; then all go at
once. It returns every attempt's ``(accepted, reason)``, or ``("error", message)`` for an attempt
that raised, so a test sees what went wrong instead of a missing result.

An attempt is ``(method, *args)`` for a Verifier method that returns a Result, e.g.
``("check_code", "alice", "123456")`` or ``("verify", "alice", "pw", "123456")``.
"""

from __future__ import annotations

import multiprocessing
import threading
from queue import Empty

from keyfob.verifier import Policy, Verifier

#: how long anyone waits for the others (a hung node fails the test instead of hanging it)
TIMEOUT_S = 240


def _attempt(v: Verifier, spec: tuple, go: threading.Barrier, out: list) -> None:
    method, *args = spec
    try:
        go.wait()
        r = getattr(v, method)(*args)
        out.append((r.accepted, r.reason))
    except Exception as exc:  # reported, not raised: the test asserts on every attempt
        out.append(("error", f"{type(exc).__name__}: {exc}"))


def _node(db: str, key: bytes, profile: str, specs: list, ready, queue) -> None:
    try:
        v = Verifier.open(db, key=key, password_profile=profile)
    except Exception as exc:
        ready.abort()  # the other nodes stop waiting for this one
        queue.put([("error", f"a node could not open the database: {exc}")] * len(specs))
        return
    try:
        out: list = []
        go = threading.Barrier(len(specs) + 1, timeout=TIMEOUT_S)
        threads = [threading.Thread(target=_attempt, args=(v, s, go, out)) for s in specs]
        for t in threads:
            t.start()
        try:
            ready.wait()  # every node has its threads waiting
            go.wait()
        except threading.BrokenBarrierError:
            go.abort()
        for t in threads:
            t.join(TIMEOUT_S)
        queue.put(out)
    finally:
        v.close()


def node_context():
    """The multiprocessing context for verifier nodes. Forkserver: each node is forked from one
    clean helper process that has imported the verifier already (no threads, no open connections
    to inherit, unlike forking the test process; and about a second less per node than spawning a
    fresh interpreter)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["keyfob.verifier", "psycopg", "sqlalchemy.dialects.postgresql.psycopg"])
    return ctx


def fire(db: str, key: bytes, attempts: list[tuple], *, nodes: int, policy: Policy | None = None) -> list[tuple]:
    """Run ``attempts`` at once, spread over ``nodes`` processes; returns their results (in no
    particular order). ``policy`` gives the nodes' password profile (the limits are the
    database's)."""
    profile = (policy or Policy(password_profile="fast")).password_profile
    ctx = node_context()
    ready = ctx.Barrier(nodes, timeout=TIMEOUT_S)
    queue = ctx.Queue()
    shares = [attempts[i::nodes] for i in range(nodes)]
    procs = [ctx.Process(target=_node, args=(db, key, profile, share, ready, queue)) for share in shares]
    for p in procs:
        p.start()
    results: list = []
    try:
        for _ in procs:
            results += _next(queue, procs)
    finally:
        for p in procs:
            p.join(TIMEOUT_S)
    if any(p.exitcode != 0 for p in procs):
        raise AssertionError(f"a node failed: exit codes {[p.exitcode for p in procs]}")
    return results


def _next(queue, procs) -> list:
    """The next node's results; an AssertionError as soon as a node died without sending them."""
    waited = 0
    while True:
        try:
            return queue.get(timeout=1)
        except Empty:
            waited += 1
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or waited >= TIMEOUT_S:
                raise AssertionError(f"a node died or hung: exit codes {[p.exitcode for p in procs]}") from None
