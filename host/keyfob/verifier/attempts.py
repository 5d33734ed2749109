"""Attempts in flight: the reservations that make the lockout and the throttle race-free (and
their give-back), the match and compare-and-set of a token, refusals. Logins, link and resync use
them; a login's start (:meth:`Logins._start`) takes its throttle keys through :mod:`.throttle`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import modes, rules, sql, throttle
from .core import _audit, log
from .modes import Move
from .results import Result

if TYPE_CHECKING:
    from .logins import _User

_CAS_SQL: dict = {}

#: a token's columns as the login path reads them (the load, a reservation's RETURNING)
TOKEN_COLS = (
    "id",
    "serial",
    "mode",
    "algorithm",
    "digits",
    "period",
    "seed",
    "counter",
    "last_step",
    "drift",
    "sync_drift",
    "fail_count",
    "locked_until",
    "state",
    "expires_at",
)


@dataclass(frozen=True, slots=True)
class _Tok:
    """A token row as the login path reads it (:data:`TOKEN_COLS`)."""

    id: int
    serial: str
    mode: str
    algorithm: str
    digits: int
    period: int
    seed: bytes
    counter: int
    last_step: int
    drift: int
    sync_drift: int
    fail_count: int
    locked_until: float | None
    state: str
    expires_at: float | None


def _tok(r) -> _Tok:
    """A token from a row of :data:`TOKEN_COLS`."""
    return _Tok(*r[:6], bytes(r[6]), *r[7:15])


@dataclass(slots=True)
class _Attempt:
    """One attempt in flight: who it names, from where, and what it holds reserved."""

    name: str
    user: _User | None  # None: no such user
    source: str | None  # the source's throttle key, if the front gave one
    ukey: str  # the user name's throttle key
    keys: list[str] = field(default_factory=list)  # throttle keys reserved (given back on success)
    backoff: bool = False  # the user is in back-off: a two-factor login checked anyway
    throttled_by: str | None = None  # refused unchecked by the back-off of the "source" or the "user"
    via: str | None = None  # the front and API key the attempt came through (audited)

    @property
    def shown_source(self) -> str | None:
        """The source as the audit log shows it (its key without the ``s:`` prefix)."""
        return self.source[2:] if self.source else None


class Attempts:
    """Reservations, match and compare-and-set, refusals: shared by logins, link and resync."""

    def _match(self, tok, code: str, now: float, warm=None) -> Move | None:
        """Where ``code`` moves ``tok`` if it matches within the login window (its mode's rule).
        ``warm``: keys with windows computed before the transaction (:meth:`Logins._warm`)."""
        return modes.of(tok).match(self._warm_key(tok, warm), tok, code, now, self.policy)

    def _warm_key(self, tok, warm):
        hit = warm.get(tok.id) if warm else None
        return hit[1] if hit is not None and hit[0] == tok.seed else self._key(tok)

    def _cas(self, conn, tok, new, now: float, extra: dict | None = None) -> bool:
        """Compare-and-set the token's counter (HOTP) or last step and drift (TOTP), also clearing its
        fail count and lock: ``UPDATE tokens ... WHERE id = ? AND counter = ? AND state = ?``. True if
        this call won; False if anyone moved the token since it was read.

        There is no lock condition here: the caller holds a reservation (:meth:`_reserve`) taken
        while the token was not locked, or is an admin (resync), who may unlock."""
        extra = extra or {}
        sql_key = (new.column, new.drift is not None, tuple(sorted(extra)))
        stmt = _CAS_SQL.get(sql_key)
        if stmt is None:
            sets = ["fail_count = 0", "locked_until = NULL", "updated = :now"]
            sets += [f"{k} = :x_{k}" for k in sorted(extra)]
            sets.append(f"{new.column} = :new")  # counter (HOTP) or last_step (TOTP): a column name, not input
            if new.drift is not None:
                sets.append("drift = :drift")
            where = f"id = :id AND {new.column} = :old AND state = :state"
            stmt = _CAS_SQL[sql_key] = f"UPDATE tokens SET {', '.join(sets)} WHERE {where}"
        params = {"now": now, "id": tok.id, "state": tok.state, "new": new.value, "old": getattr(tok, new.column)}
        if new.drift is not None:
            params["drift"] = new.drift
        for k, val in extra.items():
            params["x_" + k] = val
        return sql.of(conn).execute(stmt, params).rowcount == 1

    # -- attempt reservations (the lockout and the throttle, race-free) -------------------------------
    #
    # A check of a code (or of a password) is only made after one atomic UPDATE has counted it as a
    # failure in advance, and only if that UPDATE found the counter under its limit. So of any number
    # of parallel attempts, across threads, processes and nodes, at most ``max_fail`` codes are ever
    # checked against a token (until a success or an admin resets it), and the throttle's keys
    # (:mod:`.throttle`) count every attempt before it is checked. A successful attempt (or a replay)
    # gives its reservations back in the same transaction that records it (the token's CAS resets
    # its count to 0; other tokens and the throttle keys are decremented), so only failures stay
    # counted. The token UPDATEs implement :func:`rules.after_failure`; the SET clauses only read
    # the old values (SQL semantics; listed so that left-to-right engines agree too).

    _RESERVE_TOKEN = (
        "UPDATE tokens SET"
        " locked_until = {until},"
        " fail_count = CASE WHEN fail_count >= :max_fail THEN 1 ELSE fail_count + 1 END,"
        " updated = :now"
        " WHERE id = :id AND state = :state"
        " AND (fail_count < :max_fail OR (locked_until IS NOT NULL AND locked_until <= :now))"
        " RETURNING " + ", ".join(TOKEN_COLS)
    )
    _UNTIL = (
        "CASE WHEN (CASE WHEN fail_count >= :max_fail THEN 1 ELSE fail_count + 1 END) >= :max_fail"
        " THEN :until ELSE NULL END"
    )
    _RELEASE_TOKEN = (
        "UPDATE tokens SET"
        " locked_until = CASE WHEN fail_count - 1 < :max_fail THEN NULL ELSE locked_until END,"
        " fail_count = fail_count - 1"
        " WHERE id = :id AND fail_count > 0"
    )

    def _reserve_tokens_sql(self):
        admin_only = self.policy.lock_seconds is None  # locked_until stays NULL: locked until unlocked
        stmt = _CAS_SQL.get(("reserve", admin_only))
        if stmt is None:
            stmt = self._RESERVE_TOKEN.format(until="NULL" if admin_only else self._UNTIL)
            _CAS_SQL[("reserve", admin_only)] = stmt
        return stmt

    def _reserve(self, tokens, now: float) -> list[int]:
        """Reserve one failure on each of ``tokens`` in one transaction; the ids reserved (a token
        at its limit, or no longer in the state it was read in, is left out: it must not be checked)."""
        if not tokens:
            return []
        return self._db.write(lambda conn: [t.id for t in self._reserve_in(conn, tokens, now)])

    def _reserve_in(self, conn, tokens, now: float) -> list[_Tok]:
        """:meth:`_reserve` inside the caller's write transaction: the tokens reserved, as they are
        now under the reservation's row lock (``RETURNING``: on PostgreSQL a row read before the lock
        may be stale)."""
        conn = sql.of(conn)
        p = self.policy
        token_sql = self._reserve_tokens_sql()
        got = []
        for t in tokens:
            args = {"id": t.id, "state": t.state, "now": now, "max_fail": p.max_fail}
            if p.lock_seconds is not None:
                args["until"] = now + p.lock_seconds
            row = conn.execute(token_sql, args).first()
            if row is not None:
                got.append(_tok(row))
        return got

    def _give_back(self, conn, att: _Attempt, token_ids) -> None:
        """Inside the transaction that records a success (or a replay): return the attempt's other
        reservations: its throttle rows, then its tokens, the order the reservation took them in (so
        that two transactions never wait on each other in a circle). A transaction that changes a
        token before this must :meth:`_lock_keys` first."""
        conn = sql.of(conn)
        for key in att.keys:
            throttle.release(conn, key)
        for tid in token_ids:
            conn.execute(self._RELEASE_TOKEN, {"id": tid, "max_fail": self.policy.max_fail})

    @staticmethod
    def _lock_keys(conn, att: _Attempt) -> None:
        """Take the attempt's throttle rows before any token row, the order its reservation took them
        in (see :func:`throttle.lock`); with the user's key if the user is in back-off (a checked
        login's failure is counted on it, :meth:`_refuse_in`)."""
        throttle.lock(conn, (att.keys + [att.ukey]) if att.backoff else att.keys)

    def _attempt(self, name: str, user, source: str | None, via: str | None = None) -> _Attempt:
        return _Attempt(name, user, *self._attempt_keys(name, source), via=via)

    def _attempt_keys(self, name: str, source: str | None) -> tuple[str | None, str]:
        """An attempt's throttle keys (source, user name): computed before its transaction, which
        then holds the write lock for less time."""
        skey = None if source is None else throttle.source_key(source)
        return skey, throttle.user_key(self._box.name_tag(name))

    def _row(self, att: _Attempt, action: str, reason: str | None, serial=None, actor=None) -> dict:
        """The audit columns of an attempt's refusal. An unknown user's name is not recorded (it may be
        a password typed into the wrong field): the actor is the name's keyed hash, which
        :meth:`explain` can find again."""
        known = att.user is not None
        return {
            "actor": actor or (att.user.name if known else "unknown:" + att.ukey[2:]),
            "action": action,
            "user_name": att.user.name if known else None,
            "serial": serial,
            "result": "fail",
            "detail": reason,
            "source": att.shown_source,
            "via": att.via,
        }

    @staticmethod
    def _audit_accepted(conn, att: _Attempt, now, serial=None, detail=None) -> None:
        """The audit row of an accepted login (a token's code, a backup code, a password alone)."""
        name = att.user.name
        _audit(conn, now, name, "validate", "ok", name, serial, detail, source=att.shown_source, via=att.via)

    def _refuse(self, att: _Attempt, now, action, reason, serial=None, actor=None) -> Result:
        """Audit a refused attempt in a write transaction of its own (see :meth:`_refuse_in`)."""
        result = self._db.write(lambda conn: self._refuse_in(conn, att, now, action, reason, serial, actor))
        self._logged(action, result)
        return result

    def _refuse_in(self, conn, att: _Attempt, now, action, reason, serial=None, actor=None) -> Result:
        """Audit a refused attempt inside the caller's write transaction (its failure was counted by
        its reservations, if any; a two-factor login checked during the user's back-off counts it on
        the user's key now, and its audit row is aggregated). Log it with :meth:`_logged` after the
        commit."""
        row = self._row(att, action, reason, serial, actor)
        if att.backoff:  # checked during the user's back-off: counted, and audited in aggregate
            throttle.note_failure(conn, att.ukey, now, self.policy)
            throttle.aggregate(conn, att.ukey, now, row)
        else:
            _audit(conn, now, **row)
        return Result(False, att.user.name if att.user else "", reason, serial)

    @staticmethod
    def _logged(action: str, r: Result) -> Result:
        """Log a refusal (after its transaction committed): the reason, never what was typed."""
        if not r.accepted:
            log.info("%s refused for %s: %s", action, r.user or "an unknown user", r.reason)
        return r

    def _open_tokens(self, tokens, now: float):
        """Tokens not known to be locked (a shortcut: the reservation is what decides)."""
        return [t for t in tokens if not rules.is_locked(t.fail_count, t.locked_until, now, self.policy)]

    def _reserve_key(self, att: _Attempt, now: float) -> bool:
        """Reserve a self-service attempt on the user's throttle key (False: in back-off, refused)."""
        if self.policy.user_rate_limit == 0:
            return True

        # the attempt is told only once its reservation is committed: a write may run again
        # (db.retrying), and a key listed twice would be given back twice
        reserved = self._db.write(lambda conn: throttle.reserve(conn, att.ukey, now, self.policy))
        if reserved:
            att.keys.append(att.ukey)
        return reserved
