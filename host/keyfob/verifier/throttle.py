"""Throttling of failing attempts, per user and per source, with a back-off that grows per failure.

Design (issue 11, hole 2: a stranger who knows a user name must not keep that user out).

* **What is counted.** Failures, per *key*: one key per user name (known or not; the key is a keyed
  hash of the name, so the table holds no typed name) and one per source address where the front
  gives one. Each key allows ``user_rate_limit`` failures free; the n-th failure past them sets a
  back-off of ``2**n`` seconds (n = 0, 1, ...), capped at ``backoff_max``
  (:func:`keyfob.verifier.rules.backoff`). A failure more than ``user_rate_window`` seconds after
  the key's last one starts the count anew. A success (or a replay) gives its own count back.
* **Race-free.** An attempt *reserves* its failure before anything is checked: one
  ``UPDATE ... WHERE key = ? AND next_ok <= now`` that also pushes ``next_ok`` out by the back-off
  the new count earns. Of any number of parallel attempts, exactly ``user_rate_limit`` get through
  before the first back-off starts.
* **What the back-off does.** A *source* in back-off is refused unchecked, for every user: that is
  the attacker's address, not the user's. A *user* in back-off is refused unchecked where nothing
  tells the real user from a guesser without giving the guesser an oracle: logins with the password
  alone (users without 2FA), code-only checks (``check_code``) and self-service resync. A two-factor
  login (password and code) by a user in back-off **is still checked**: refusing it would hand any
  stranger who knows the name the power to keep the user out at will (the issue's 0 of 240 logins).
  It stays safe because (a) the relying party's answer is accept or reject, the same for every
  cause, so a guessed password is never confirmed unless the code is right too, and (b) a right
  password with a wrong code counts on the token's fail counter and lockout (``max_fail``), in
  back-off as outside it: an attacker with a stolen password still gets ``max_fail`` code guesses,
  no more. Failures of such checked attempts count on the user's key (keeping its back-off up).
  (Not so a re-authentication by a user already signed in, ``verify(reauth=True)``, e.g. the web
  security center's forms: a stranger cannot reach those, so they are refused unchecked in
  back-off, and a taken-over session cannot test passwords at any rate.)
  So the real user's delay under a flood of wrong passwords is zero when they bring both factors;
  users without 2FA have only the per-source back-off to tell them from the stranger. An attempt
  refused unchecked by a *user's* back-off still spends the (dummy) Argon2 work of a checked one,
  and counts on its source as a checked failure does, or its speed would say the name is a user
  without 2FA (and one address could make the server hash at will); one refused by a *source's*
  back-off spends none.
* **Audit.** Attempts made while a key is in back-off are aggregated: one audit row per key and
  reason per :data:`AGGREGATE_SECONDS`, whose ``count`` says how many attempts it stands for
  (``throttled`` for those refused unchecked; the real reason, e.g. ``wrong-password``, for the
  two-factor logins checked anyway). Attempts outside back-off get a row each. So a flood, with or
  without a source, adds a few rows, not one per attempt.
"""

from __future__ import annotations

import functools

from . import sql
from .errors import BadInput
from .rules import Policy

#: one aggregated audit row covers at most this many seconds of a key's throttled attempts
AGGREGATE_SECONDS = 60.0
SOURCE_MAX = 64
# plain SQL through :mod:`.sql` (any connection: the login path's or an admin's SQLAlchemy one); the
# lock takes FOR NO KEY UPDATE (what an UPDATE takes) on PostgreSQL, nothing on SQLite (its write
# transactions run one at a time anyway): :func:`sql.lock_sql`
_LOCK = "SELECT key FROM throttle WHERE key = :key"
_ENSURE = "INSERT INTO throttle (key, fails, last_fail, next_ok) VALUES (:key, 0, :now, 0) ON CONFLICT (key) DO NOTHING"
_RELEASE = "UPDATE throttle SET fails = fails - 1 WHERE key = :key AND fails > 0"
_AGG_BUMP = (
    "UPDATE audit SET count = count + 1, ts = :now"
    " WHERE id = (SELECT agg_id FROM throttle WHERE key = :key AND agg_until > :now) AND detail = :detail"
)
_AGG_NEW = (
    "INSERT INTO audit (ts, actor, action, user_name, serial, result, detail, count, source, via)"
    " VALUES (:now, :actor, :action, :user_name, :serial, :result, :detail, 1, :source, :via) RETURNING id"
)
_AGG_SET = "UPDATE throttle SET agg_id = :id, agg_until = :until WHERE key = :key"
_PRUNE = "DELETE FROM throttle WHERE last_fail <= :cut AND next_ok <= :now"


def user_key(tag: str) -> str:
    """The key of a user name, from its keyed hash (:meth:`SeedBox.name_tag`)."""
    return "u:" + tag


def source_key(source: str) -> str:
    """The key of a source address as a front gives it (an IP address, or another short ASCII
    name the front uses for where an attempt came from)."""
    if not isinstance(source, str) or not 0 < len(source) <= SOURCE_MAX or not source.isascii():
        raise BadInput(f"a source is 1 to {SOURCE_MAX} ASCII characters")
    if not source.isprintable() or " " in source:
        raise BadInput("a source must not contain spaces or control characters")
    try:
        import ipaddress  # only for a source (and not worth its import for every login)

        source = str(ipaddress.ip_address(source))  # one spelling per address
    except ValueError:
        pass
    return "s:" + source


@functools.lru_cache(maxsize=32)
def _delay_sql(limit: int, cap: float, new_fails: str) -> str:
    """SQL for :func:`rules.backoff` of the count ``new_fails`` (a SQL expression)."""
    steps, i = [], 0
    while 2**i < cap:
        steps.append(f"WHEN {new_fails} = {limit + i} THEN {2**i}")
        i += 1
    return f"CASE WHEN {new_fails} < {limit} THEN 0 {' '.join(steps)} ELSE {cap!r} END"


_NEW = "(CASE WHEN last_fail <= :cut THEN 1 ELSE fails + 1 END)"


@functools.lru_cache(maxsize=32)
def _reserve_sql(limit: int, cap: float):
    # No back-off earned: next_ok never moves later (min(next_ok, now)), so an attempt whose clock
    # read a moment earlier than another's, in another thread or on another node, is not refused.
    delay = _delay_sql(limit, cap, _NEW)
    return (
        f"UPDATE throttle SET fails = {_NEW}, last_fail = :now,"
        f" next_ok = CASE WHEN {delay} = 0 THEN (CASE WHEN next_ok < :now THEN next_ok ELSE :now END)"
        f" ELSE :now + {delay} END"
        " WHERE key = :key AND (next_ok <= :now OR last_fail <= :cut)"
    )


@functools.lru_cache(maxsize=32)
def _note_sql(limit: int, cap: float):
    later = f":now + {_delay_sql(limit, cap, _NEW)}"
    return (
        f"UPDATE throttle SET fails = {_NEW}, last_fail = :now,"
        f" next_ok = CASE WHEN next_ok > {later} THEN next_ok ELSE {later} END WHERE key = :key"
    )


def _args(key: str, now: float, policy: Policy) -> dict:
    return {"key": key, "now": now, "cut": now - policy.user_rate_window}


def reserve(conn, key: str, now: float, policy: Policy) -> bool:
    """Count one failure on ``key`` in advance, if the key is not in back-off. True: reserved (the
    attempt may be checked; give it back on success); False: in back-off, nothing counted.

    The key's row is made (``_ENSURE``) only when the UPDATE found nothing to count on (no row, or
    one in back-off), and the UPDATE then runs again (it sees a row another transaction has just
    made, under READ COMMITTED too): a key seen before and not in back-off costs one statement."""
    conn = sql.of(conn)
    stmt, args = _reserve_sql(policy.user_rate_limit, float(policy.backoff_max)), _args(key, now, policy)
    if conn.execute(stmt, args).rowcount == 1:
        return True
    conn.execute(_ENSURE, {"key": key, "now": now})
    return conn.execute(stmt, args).rowcount == 1


def note_failure(conn, key: str, now: float, policy: Policy) -> None:
    """Count a failure that was checked without a reservation (a two-factor login in back-off)."""
    sql.of(conn).execute(_note_sql(policy.user_rate_limit, float(policy.backoff_max)), _args(key, now, policy))


def lock(conn, keys) -> None:
    """Take an attempt's throttle rows, in the order its reservation took them, at the start of a
    transaction that will give them back after changing a token. Reservations lock throttle rows,
    then tokens; without this, a success (token, then throttle rows) and a reservation of the same
    user wait on each other in a circle, and PostgreSQL aborts one as a deadlock after a second."""
    conn = sql.of(conn)
    if conn.dialect == "sqlite":
        return  # one writer at a time: the transaction holds every row already
    stmt = sql.lock_sql(conn, _LOCK)
    for key in keys:
        conn.execute(stmt, {"key": key})


def release(conn, key: str) -> None:
    """Inside the transaction that records a success (or a replay): return the attempt's
    reservation. The back-off it set stays: it ends on its own."""
    sql.of(conn).execute(_RELEASE, {"key": key})


def aggregate(conn, key: str, now: float, row: dict) -> None:
    """Audit one attempt made while ``key`` is in back-off: add it to the key's current aggregate row
    if that has the same reason (``detail``), or start one (``row``: the audit columns of the new
    row). A flood is one reason over and over: a few rows, whatever its size."""
    conn = sql.of(conn)
    if conn.execute(_AGG_BUMP, {"key": key, "now": now, "detail": row["detail"]}).rowcount == 1:
        return
    new_id = conn.execute(_AGG_NEW, {"now": now, **row}).scalar()
    conn.execute(_AGG_SET, {"id": new_id, "until": now + AGGREGATE_SECONDS, "key": key})


_ONCE = (
    "INSERT INTO throttle (key, fails, last_fail, next_ok) VALUES (:key, 0, :now, :until) ON CONFLICT (key) DO NOTHING"
)


def use_once(conn, tag: str, now: float, until: float) -> bool:
    """Mark a single-use thing used (``tag``: e.g. a web sign-in's first step); True the first time.
    Its row (key ``o:TAG``) outlives ``until`` (pruning waits for its next_ok and a window)."""
    return sql.of(conn).execute(_ONCE, {"key": "o:" + tag, "now": now, "until": until}).rowcount == 1


def prune(conn, now: float, policy: Policy) -> int:
    """Delete keys whose failures are forgotten and whose back-off is over."""
    return sql.of(conn).execute(_PRUNE, {"cut": now - policy.user_rate_window, "now": now}).rowcount
