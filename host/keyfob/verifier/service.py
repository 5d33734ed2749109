"""The Verifier: users, tokens, enrolment, validation, resync, lockout, backup codes, audit.

A library that never prints. Every method that changes something writes an audit row in the same
transaction. Before a code (or a password) is checked, the attempt is *reserved*: counted in advance
as a failure on the token (and on the throttle's user and source keys, :mod:`.throttle`) by one
atomic UPDATE that only succeeds under the limit, so parallel guesses never get more checks than the
lockout allows (see ``Verifier._reserve``). Codes are checked outside any transaction and a success is written with a
compare-and-set (``UPDATE tokens ... WHERE id = ? AND counter = ?``) that also gives the
reservations back, so of any number of parallel submissions of one code, across threads, processes
or nodes, exactly one is accepted, and only failures stay counted.

Time comes from an injectable ``clock`` (a callable returning Unix seconds) so the TOTP rules are
tested without sleeping.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Self

from sqlalchemy import delete, func, insert, select, text, update

from keyfob.otp import HotpKey
from keyfob.records import DIGITS as RECORD_DIGITS
from keyfob.records import TokenRecord
from keyfob.serials import SerialError, accept_serial, is_valid_serial

from . import db, rules, throttle
from .crypto import SeedBox, resolve_key
from .errors import (
    AlreadyExists,
    BadInput,
    DatabaseError,
    KeyFileError,
    SeedFileError,
    TokenStateError,
    UnknownToken,
    UnknownUser,
)
from .models import audit_table, backup_code_table, setting_table, throttle_table, token_table, user_table
from .passwords import Passwords
from .rules import Policy

log = logging.getLogger("keyfob.verifier")

_T = token_table
_U = user_table
_B = backup_code_table
_A = audit_table
_S = setting_table
_TH = throttle_table

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}\Z")
_KEY_CHECK = "key_check"
_POLICY = "policy"
#: the answer for an attempt refused unchecked by the throttle
THROTTLED = "throttled"
#: prune the audit log (``audit_days``) and stale throttle rows at most this often per process
_PRUNE_EVERY = 3600.0
_CAS_TRIES = 8
_CAS_SQL: dict = {}


# --- results and listings (never carry a secret) --------------------------------------------------


@dataclass(frozen=True)
class Result:
    """The outcome of one attempt. A relying party is told ``accepted`` and nothing else: ``reason``
    is for the audit log and an admin (:meth:`Verifier.explain`). It is one of: ``ok``,
    ``backup-code``, ``password`` (user without 2FA), ``wrong-code``, ``wrong-backup-code``,
    ``wrong-password``, ``replay`` (a code already used), ``locked``, ``throttled``, ``no-token``
    (no active token of the code's length), ``unknown-user``, ``malformed`` (not a code of an
    allowed length), ``unexpected-code`` (a code for a user without 2FA)."""

    accepted: bool
    user: str
    reason: str
    serial: str | None = None

    def __bool__(self) -> bool:
        return self.accepted


class Imported(str):
    """The serial of a token just imported (a ``str``, so a list of them compares with serials),
    and ``disabled``: why it was imported disabled (outside the dates its file allows, RFC 6030
    section 5), or None."""

    disabled: str | None

    def __new__(cls, serial: str, disabled: str | None = None) -> Imported:
        self = super().__new__(cls, serial)
        self.disabled = disabled
        return self


def _outside_dates(record: TokenRecord, now: float) -> str | None:
    """Why ``record`` may not be used at ``now`` (its dates are inclusive), or None."""
    if record.valid_until is not None and now > record.valid_until:
        return "its ExpiryDate has passed"
    if record.valid_from is not None and now < record.valid_from:
        return "its StartDate is still to come"
    return None


#: what a seed file says when it does not know the manufacturer or model (kept as NULL)
_UNKNOWN = "unknown"


def _assumed_device(serial: str) -> dict[str, str]:
    """The manufacturer and model export writes when none is stored: keyfob's own for a keyfob
    serial, ``unknown`` for others."""
    if is_valid_serial(serial):
        return {"manufacturer": TokenRecord.manufacturer, "model": TokenRecord.model}
    return {"manufacturer": _UNKNOWN, "model": _UNKNOWN}


def _device_columns(serial: str, record: TokenRecord) -> dict[str, str]:
    """The manufacturer/model columns to store: only where they differ from what export would assume
    (NULL, the column left out, means "as assumed": so rows from before 0004 and new rows agree)."""
    assumed = _assumed_device(serial)
    return {name: getattr(record, name) for name in assumed if getattr(record, name) != assumed[name]}


def _device_fields(row) -> dict[str, str]:
    """Manufacturer and model for an exported token: as stored, else as assumed."""
    stored = {name: getattr(row, name) for name in ("manufacturer", "model")}
    return _assumed_device(row.serial) | {k: v for k, v in stored.items() if v is not None}


@dataclass(frozen=True)
class UserInfo:
    name: str
    twofa: bool
    tokens: int
    backup_codes: int


@dataclass(frozen=True)
class TokenInfo:
    serial: str
    mode: str
    algorithm: str
    digits: int
    period: int
    state: str
    user: str | None
    description: str | None
    counter: int
    last_step: int
    drift: int
    fail_count: int
    locked: bool
    locked_until: float | None


@dataclass(frozen=True)
class AuditInfo:
    ts: float
    actor: str
    action: str
    user: str | None
    serial: str | None
    result: str
    detail: str | None
    #: attempts the row stands for (throttled attempts are aggregated)
    count: int = 1
    source: str | None = None
    #: the front and API key a login came through (``api:NAME`` for ``keyfob serve``)
    via: str | None = None


# --- helpers --------------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not isinstance(name, str) or _NAME_RE.match(name) is None:
        raise BadInput("a user name has 1-64 characters: letters, digits and . _ @ + - (not first)")
    return name


#: the user-name rule, for fronts that refuse a malformed name before anything is looked up
check_name = _check_name


def _serial(text: str) -> str:
    """:func:`keyfob.serials.accept_serial` with the verifier's :class:`BadInput`: keyfob serials
    must pass their Damm check digit, other vendors' serials are kept as given (1 to 64 printable
    characters, no whitespace)."""
    try:
        return accept_serial(text)
    except SerialError as exc:
        raise BadInput(str(exc)) from None


# The hot path (load, compare-and-set, audit) uses plain portable SQL: building SQLAlchemy Core
# expressions for every login costs more than the database work itself.
_AUDIT_SQL = text(
    "INSERT INTO audit (ts, actor, action, user_name, serial, result, detail, count, source, via)"
    " VALUES (:ts, :actor, :action, :user_name, :serial, :result, :detail, 1, :source, :via)"
)
_TOKEN_COLS = (
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
)
_LOAD_SQL = text(
    "SELECT u.id, u.name, u.password_hash, u.twofa,"
    " (SELECT count(*) FROM backup_codes b WHERE b.user_id = u.id AND b.used_at IS NULL),"
    + ", ".join("t." + c for c in _TOKEN_COLS)
    + " FROM users u LEFT OUTER JOIN tokens t ON t.user_id = u.id AND t.state = 'active'"
    " WHERE u.name = :name ORDER BY t.id"
)


@dataclass(frozen=True, slots=True)
class _User:
    id: int
    name: str
    password_hash: str
    twofa: bool


@dataclass(frozen=True, slots=True)
class _Tok:
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


@dataclass(slots=True)
class _Attempt:
    """One attempt in flight: who it names, from where, and what it holds reserved."""

    name: str
    user: _User | None  # None: no such user
    source: str | None  # the source's throttle key, if the front gave one
    ukey: str  # the user name's throttle key
    keys: list[str] = field(default_factory=list)  # throttle keys reserved (given back on success)
    backoff: bool = False  # the user is in back-off: a two-factor login checked anyway
    via: str | None = None  # the front and API key the attempt came through (audited)

    @property
    def shown_source(self) -> str | None:
        """The source as the audit log shows it (its key without the ``s:`` prefix)."""
        return self.source[2:] if self.source else None


def _utf8(*values) -> None:
    """:class:`BadInput` if a text holds what is not UTF-8 (bytes the command line could not decode
    come in as lone surrogates). The message repeats nothing typed."""
    for val in values:
        if isinstance(val, str):
            try:
                val.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInput("the user name, password or code is not valid UTF-8; nothing was checked") from None


def _policy_blob(policy: Policy) -> bytes:
    return json.dumps(policy.shared(), sort_keys=True).encode("ascii")


def _policy_from_blob(blob, base: Policy) -> Policy:
    """``base`` with the shared fields stored in the database (none stored: the defaults)."""
    if blob is None:
        return base.with_shared(Policy().shared())
    try:
        values = json.loads(bytes(blob).decode("ascii"))
        if not isinstance(values, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise DatabaseError("the stored policy is damaged (fix it with `keyfob server config --set`)") from None
    try:
        return base.with_shared({**Policy().shared(), **values})
    except BadInput as exc:
        raise DatabaseError(f"the stored policy is not valid: {exc}") from None


def _audit(conn, now, actor, action, result, user_name=None, serial=None, detail=None, source=None, via=None) -> None:
    conn.execute(
        _AUDIT_SQL,
        {
            "ts": now,
            "actor": actor,
            "action": action,
            "user_name": user_name,
            "serial": serial,
            "result": result,
            "detail": detail,
            "source": source,
            "via": via,
        },
    )


class Verifier:
    """Open with :meth:`open` (or create with :meth:`init`); thread-safe; ``close()`` when done."""

    def __init__(self, engine, box: SeedBox, policy: Policy, clock: Callable[[], float]):
        self._engine = engine
        self._box = box
        self.policy = policy
        self._clock = clock
        self._pw = Passwords(policy.password_profile)
        self._keys: dict[int, tuple[bytes, HotpKey]] = {}
        self._keys_lock = threading.Lock()
        self._pruned = float("-inf")  # when this process last applied the audit retention
        #: test seam: called after a code matched and before its compare-and-set (see the race test)
        self._before_commit: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"Verifier({self._engine.url.render_as_string(hide_password=True)})"

    # -- opening -------------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        database,
        *,
        key: bytes | None = None,
        key_file=None,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
        actor: str = "admin",
    ) -> Verifier:
        """Create the schema (through the migrations) and the key file (0600) if it does not exist.

        The shared fields of ``policy`` (:data:`keyfob.verifier.rules.SHARED`) are stored in the
        database, so every node that opens it applies them."""
        policy = policy or Policy()
        engine = db.make_engine(database, must_exist=False)
        try:
            with db.opening(database):
                if db.has_tables(engine):
                    raise AlreadyExists(f"database {db.display(database)} is already initialised")
                box = SeedBox(key if key is not None else resolve_key(key_file, create=True))
                db.upgrade(engine)
                now = clock()

                def run(conn):
                    conn.execute(insert(_S), {"name": _KEY_CHECK, "value": box.key_check()})
                    conn.execute(insert(_S), {"name": _POLICY, "value": _policy_blob(policy)})
                    _audit(conn, now, actor, "server-init", "ok", detail="schema " + db.head_revision())

                db.write(engine, run)
        except Exception:
            engine.dispose()
            raise
        return cls(engine, box, policy, clock)

    @classmethod
    def open(
        cls,
        database,
        *,
        key: bytes | None = None,
        key_file=None,
        policy: Policy | None = None,
        password_profile: str | None = None,
        clock: Callable[[], float] = time.time,
        lock_wait: float | None = None,
    ) -> Verifier:
        """Open an initialised database, upgrading an older schema, and check the key against it.

        The policy is the one stored in the database (the defaults for a database made before the
        policy was stored). ``policy``, if given, must agree with it on the shared fields (so no
        node runs with limits of its own); its local fields (``password_profile``,
        ``backup_codes``) are used. ``password_profile`` alone overrides just that field.
        ``lock_wait``: seconds a write waits for another process's lock before :class:`DatabaseBusy`
        (default ``$KEYFOB_DB_WAIT`` or 5)."""
        engine = db.make_engine(database, must_exist=True, wait=lock_wait)
        try:
            with db.opening(database):
                rev = db.current_revision(engine)
                if rev is None:
                    raise DatabaseError(f"{db.display(database)} is not a keyfob database (run `keyfob server init`)")
                if rev != db.head_revision():
                    db.upgrade(engine)
                box = SeedBox(key if key is not None else resolve_key(key_file))
                with db.read(engine) as conn:
                    rows = dict(
                        conn.execute(select(_S.c.name, _S.c.value).where(_S.c.name.in_((_KEY_CHECK, _POLICY)))).all()
                    )
            check = rows.get(_KEY_CHECK)
            if check is None or not box.verify_key_check(bytes(check)):
                raise KeyFileError("the key does not belong to this database (wrong key file?)")
            stored = _policy_from_blob(rows.get(_POLICY), policy or Policy())
            if policy is not None and policy.shared() != stored.shared():
                diff = [k for k in stored.shared() if stored.shared()[k] != policy.shared()[k]]
                raise BadInput(
                    f"the policy given differs from the database's in {', '.join(diff)}; "
                    "change it for every node with `keyfob server config --set`"
                )
            if password_profile is not None:
                stored = replace(stored, password_profile=password_profile)
        except Exception:
            engine.dispose()
            raise
        return cls(engine, box, stored, clock)

    def close(self) -> None:
        self._keys.clear()
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- lookups ---------------------------------------------------------------------------------------

    def _user(self, conn, name: str):
        row = conn.execute(select(_U).where(_U.c.name == name)).first()
        if row is None:
            raise UnknownUser(name)
        return row

    def _token(self, conn, serial: str):
        row = conn.execute(select(_T).where(_T.c.serial == serial)).first()
        if row is None:
            raise UnknownToken(serial)
        return row

    def _key(self, tok) -> HotpKey:
        """The token's HotpKey, cached per token id while its sealed seed is unchanged."""
        hit = self._keys.get(tok.id)
        if hit is not None and hit[0] == tok.seed:
            return hit[1]
        seed = self._box.open(tok.seed, tok.serial)
        key = HotpKey(seed, digits=tok.digits, algorithm=tok.algorithm)
        with self._keys_lock:
            self._keys[tok.id] = (tok.seed, key)
        return key

    def _match(self, tok, code: str, now: float):
        """The new state after ``code`` matched on ``tok``: ``("counter", n)`` / ``("step", s, drift)``."""
        key = self._key(tok)
        if tok.mode == "hotp":
            m = rules.hotp_check(key, tok.counter, code, self.policy.hotp_window)
            return None if m is None else ("counter", m + 1)
        r = rules.totp_check(
            key,
            now,
            tok.period,
            tok.drift,
            tok.last_step,
            code,
            self.policy.totp_window,
            sync_drift=tok.sync_drift,
            drift_max=self.policy.totp_drift_max,
        )
        return None if r is None else ("step", r[0], r[1])

    def _replayed(self, tok, code: str, now: float) -> bool:
        """True if ``code`` is one the token already used (just before its next counter, or at or
        before its last step, within the window): a replay, not a guess."""
        key = self._key(tok)
        if tok.mode == "hotp":
            return rules.hotp_replayed(key, tok.counter, code, self.policy.hotp_window)
        return rules.totp_replayed(key, now, tok.period, tok.drift, tok.last_step, code, self.policy.totp_window)

    def _cas(self, conn, tok, new, now: float, extra: dict | None = None) -> bool:
        """Compare-and-set the token's counter (HOTP) or last step and drift (TOTP), also clearing its
        fail count and lock: ``UPDATE tokens ... WHERE id = ? AND counter = ? AND state = ?``. True if
        this call won; False if anyone moved the token since it was read.

        There is no lock condition here: the caller holds a reservation (:meth:`_reserve`) taken
        while the token was not locked, or is an admin (resync), who may unlock."""
        extra = extra or {}
        sql_key = (new[0], tuple(sorted(extra)))
        stmt = _CAS_SQL.get(sql_key)
        if stmt is None:
            sets = ["fail_count = 0", "locked_until = NULL", "updated = :now"]
            sets += [f"{k} = :x_{k}" for k in sorted(extra)]
            if new[0] == "counter":
                sets.append("counter = :new")
                where = "id = :id AND counter = :old AND state = :state"
            else:
                sets += ["last_step = :new", "drift = :drift"]
                where = "id = :id AND last_step = :old AND state = :state"
            stmt = _CAS_SQL[sql_key] = text(f"UPDATE tokens SET {', '.join(sets)} WHERE {where}")
        params = {"now": now, "id": tok.id, "state": tok.state, "new": new[1]}
        params["old"] = tok.counter if new[0] == "counter" else tok.last_step
        if new[0] == "step":
            params["drift"] = new[2]
        for k, val in extra.items():
            params["x_" + k] = val
        return conn.execute(stmt, params).rowcount == 1

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
    )
    _UNTIL = (
        "CASE WHEN (CASE WHEN fail_count >= :max_fail THEN 1 ELSE fail_count + 1 END) >= :max_fail"
        " THEN :until ELSE NULL END"
    )
    _RELEASE_TOKEN = text(
        "UPDATE tokens SET"
        " locked_until = CASE WHEN fail_count - 1 < :max_fail THEN NULL ELSE locked_until END,"
        " fail_count = fail_count - 1"
        " WHERE id = :id AND fail_count > 0"
    )

    def _reserve_tokens_sql(self):
        admin_only = self.policy.lock_seconds is None  # locked_until stays NULL: locked until unlocked
        stmt = _CAS_SQL.get(("reserve", admin_only))
        if stmt is None:
            stmt = text(self._RESERVE_TOKEN.format(until="NULL" if admin_only else self._UNTIL))
            _CAS_SQL[("reserve", admin_only)] = stmt
        return stmt

    def _reserve(self, tokens, now: float) -> list[int]:
        """Reserve one failure on each of ``tokens`` in one transaction; the ids reserved (a token
        at its limit, or no longer in the state it was read in, is left out: it must not be checked)."""
        if not tokens:
            return []
        return db.write(self._engine, lambda conn: self._reserve_in(conn, tokens, now))

    def _reserve_in(self, conn, tokens, now: float) -> list[int]:
        """:meth:`_reserve` inside the caller's write transaction."""
        p = self.policy
        token_sql = self._reserve_tokens_sql()
        got = []
        for t in tokens:
            args = {"id": t.id, "state": t.state, "now": now, "max_fail": p.max_fail}
            if p.lock_seconds is not None:
                args["until"] = now + p.lock_seconds
            if conn.execute(token_sql, args).rowcount == 1:
                got.append(t.id)
        return got

    def _give_back(self, conn, att: _Attempt, token_ids) -> None:
        """Inside the transaction that records a success (or a replay): return the attempt's other
        reservations: its throttle rows, then its tokens, the order the reservation took them in (so
        that two transactions never wait on each other in a circle). A transaction that changes a
        token before this must :meth:`_lock_keys` first."""
        for key in att.keys:
            throttle.release(conn, key)
        for tid in token_ids:
            conn.execute(self._RELEASE_TOKEN, {"id": tid, "max_fail": self.policy.max_fail})

    @staticmethod
    def _lock_keys(conn, att: _Attempt) -> None:
        """Take the attempt's throttle rows before any token row, the order its reservation took them
        in (see :func:`throttle.lock`)."""
        throttle.lock(conn, att.keys)

    def _attempt(self, name: str, user, source: str | None, via: str | None = None) -> _Attempt:
        skey = None if source is None else throttle.source_key(source)
        return _Attempt(name, user, skey, throttle.user_key(self._box.name_tag(name)), via=via)

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

    def _refuse(self, att: _Attempt, now, action, reason, serial=None, actor=None) -> Result:
        """Audit a refused attempt (its failure was counted by its reservations, if any; a two-factor
        login checked during the user's back-off counts it on the user's key now, and its audit row
        is aggregated)."""

        def run(conn):
            row = self._row(att, action, reason, serial, actor)
            if att.backoff:  # checked during the user's back-off: counted, and audited in aggregate
                throttle.note_failure(conn, att.ukey, now, self.policy)
                throttle.aggregate(conn, att.ukey, now, row)
            else:
                _audit(conn, now, **row)

        db.write(self._engine, run)
        log.info("%s refused for %s: %s", action, att.user.name if att.user else "an unknown user", reason)
        return Result(False, att.user.name if att.user else "", reason, serial)

    def _open_tokens(self, tokens, now: float):
        """Tokens not known to be locked (a shortcut: the reservation is what decides)."""
        return [t for t in tokens if not rules.is_locked(t.fail_count, t.locked_until, now, self.policy)]

    # -- users -----------------------------------------------------------------------------------------

    def add_user(self, name: str, password: str, *, twofa: bool = True, actor: str = "admin") -> UserInfo:
        _check_name(name)
        hashed = self._pw.hash(password)
        now = self._clock()

        def run(conn):
            if conn.execute(select(_U.c.id).where(_U.c.name == name)).first() is not None:
                raise AlreadyExists(f"user {name!r} already exists")
            conn.execute(
                insert(_U),
                {
                    "name": name,
                    "password_hash": hashed,
                    "twofa": twofa,
                    "rl_start": None,
                    "rl_count": 0,
                    "created": now,
                },
            )
            _audit(conn, now, actor, "user-add", "ok", name, detail="2fa on" if twofa else "2fa off")

        db.write(self._engine, run)
        return UserInfo(name, twofa, 0, 0)

    def set_password(self, name: str, password: str, *, actor: str = "admin") -> None:
        """Set ``name``'s password; this also ends the user's throttle back-off."""
        hashed = self._pw.hash(password)
        now = self._clock()

        def run(conn):
            self._user(conn, name)
            conn.execute(update(_U).where(_U.c.name == name).values(password_hash=hashed))
            # a new password ends the user's back-off (as it reset the old fixed window)
            conn.execute(delete(_TH).where(_TH.c.key == throttle.user_key(self._box.name_tag(name))))
            _audit(conn, now, actor, "user-passwd", "ok", name)

        db.write(self._engine, run)

    def set_twofa(self, name: str, enabled: bool, *, actor: str = "admin") -> None:
        now = self._clock()

        def run(conn):
            self._user(conn, name)
            conn.execute(update(_U).where(_U.c.name == name).values(twofa=enabled))
            _audit(conn, now, actor, "user-2fa-on" if enabled else "user-2fa-off", "ok", name)

        db.write(self._engine, run)

    def check_new_user(self, name: str) -> None:
        """Raise :class:`BadInput` or :class:`AlreadyExists` if ``name`` cannot be added (so a caller
        can refuse before asking for a password)."""
        _check_name(name)
        with db.read(self._engine) as conn:
            if conn.execute(select(_U.c.id).where(_U.c.name == name)).first() is not None:
                raise AlreadyExists(f"user {name!r} already exists")

    def user(self, name: str) -> UserInfo:
        """One user's listing; :class:`UnknownUser` if there is none."""
        for u in self.list_users(name):
            return u
        raise UnknownUser(name)

    # -- policy ------------------------------------------------------------------------------------------

    def set_policy(self, changes: dict, *, actor: str = "admin") -> Policy:
        """Change shared policy settings (names in :data:`keyfob.verifier.rules.SHARED`) for every node
        using this database, audited with the old and new values. Other nodes apply them when they
        next open the database. Returns the new policy."""
        if not changes:
            raise BadInput("no setting to change")
        now = self._clock()

        def run(conn):
            blob = conn.execute(select(_S.c.value).where(_S.c.name == _POLICY)).scalar()
            old = _policy_from_blob(blob, self.policy)
            new = old.with_shared(changes)
            if blob is None:
                conn.execute(insert(_S), {"name": _POLICY, "value": _policy_blob(new)})
            else:
                conn.execute(update(_S).where(_S.c.name == _POLICY).values(value=_policy_blob(new)))
            for k in rules.SHARED:
                a, b = old.shared()[k], new.shared()[k]
                if a != b:
                    _audit(conn, now, actor, "server-config", "ok", detail=f"{k} {a} -> {b}"[:200])
            return new

        self.policy = db.write(self._engine, run)
        return self.policy

    def list_users(self, name: str | None = None) -> list[UserInfo]:
        ntok = (
            select(func.count())
            .select_from(_T)
            .where(_T.c.user_id == _U.c.id, _T.c.state.in_(("active", "disabled", "lost")))
            .scalar_subquery()
        )
        nbak = (
            select(func.count())
            .select_from(_B)
            .where(_B.c.user_id == _U.c.id, _B.c.used_at.is_(None))
            .scalar_subquery()
        )
        with db.read(self._engine) as conn:
            q = select(_U.c.name, _U.c.twofa, ntok, nbak).order_by(_U.c.name)
            if name is not None:
                q = q.where(_U.c.name == name)
            rows = conn.execute(q).all()
        return [UserInfo(r[0], bool(r[1]), r[2], r[3]) for r in rows]

    # -- tokens: inventory -------------------------------------------------------------------------

    def import_records(
        self, records: Iterable[TokenRecord], *, actor: str = "admin", source: str | None = None
    ) -> list[Imported]:
        """Put tokens into the inventory (state ``unassigned``), all or nothing.

        Serials follow :func:`keyfob.serials.accept_serial`: keyfob serials need their check digit,
        other vendors' serials are kept as given. A serial already in the inventory refuses the whole batch.
        ``source`` (e.g. the file name) prefixes error messages.

        A token outside its file's dates now (``valid_from``/``valid_until``: before its StartDate or
        after its ExpiryDate) is imported ``disabled``, and its :class:`Imported` says why; an admin
        who knows better enables it. A TOTP token starts with the file's drift (RFC 6030 TimeDrift)."""
        recs = list(records)
        serials = []
        for n, r in enumerate(recs, start=1):
            if not isinstance(r, TokenRecord):
                raise BadInput("import_records takes TokenRecord objects")
            try:
                serials.append(_serial(r.serial))
            except BadInput as exc:
                raise BadInput(f"{source or 'import'}: token {n}: {exc}") from None
        dup = {s for s, n in Counter(serials).items() if n > 1}
        if dup:
            raise BadInput(f"the seed file lists token {min(dup)} more than once")
        now = self._clock()
        disabled = [_outside_dates(r, now) for r in recs]

        def run(conn):
            have = conn.execute(select(_T.c.serial).where(_T.c.serial.in_(serials))).scalars().first()
            if have is not None:
                raise AlreadyExists(f"token {have} is already in the inventory; nothing imported")
            for s, r, why in zip(serials, recs, disabled, strict=True):
                conn.execute(
                    insert(_T),
                    _device_columns(s, r)
                    | {
                        "serial": s,
                        "mode": r.mode,
                        "algorithm": r.algorithm,
                        "digits": r.digits,
                        "period": r.period,
                        "seed": self._box.seal(r.secret, s),
                        "counter": r.counter,
                        "last_step": -1,
                        "drift": r.drift,
                        "fail_count": 0,
                        "locked_until": None,
                        "state": "unassigned" if why is None else "disabled",
                        "user_id": None,
                        "description": None,
                        "created": now,
                        "updated": now,
                    },
                )
                _audit(
                    conn,
                    now,
                    actor,
                    "token-import",
                    "ok",
                    serial=s,
                    detail=f"{r.mode} {r.algorithm} {r.digits} digits"
                    + ("" if why is None else f"; imported disabled: {why}"),
                )

        db.write(self._engine, run)
        return [Imported(s, why) for s, why in zip(serials, disabled, strict=True)]

    def import_seed_file(
        self,
        path,
        *,
        key: bytes | str | None = None,
        passphrase: str | None = None,
        psk_file=None,
        actor: str = "admin",
    ) -> list[Imported]:
        """Import a seed file, all or nothing: PSKC (RFC 6030; plain, pre-shared key or passphrase),
        OATH CSV or otpauth URIs, told apart by content (``keyfob.formats.read_seed_file``).
        ``psk_file``: the key file to try when a PSKC file needs a pre-shared key none was given."""
        try:
            from keyfob.formats import FormatError, read_seed_file
        except ImportError:
            raise SeedFileError("reading seed files needs keyfob.formats, which is missing") from None
        try:
            records = read_seed_file(path, key=key, passphrase=passphrase, psk_file=psk_file)
        except FormatError as exc:
            raise SeedFileError(str(exc)) from None
        except OSError as exc:
            raise SeedFileError(f"cannot read seed file {path}: {exc.strerror}") from None
        if not records:
            raise SeedFileError(f"seed file {path} holds no tokens")
        return self.import_records(records, actor=actor, source=str(path))

    def import_uri(self, uri: str, *, actor: str = "admin") -> list[Imported]:
        """Import the token of one otpauth:// URI (Key URI format); its account name is the serial."""
        from keyfob.formats import FormatError, parse_uri

        try:
            record = parse_uri(uri)
        except FormatError as exc:
            raise SeedFileError(f"otpauth URI: {exc}") from None
        return self.import_records([record], actor=actor, source="otpauth URI")

    #: states whose seeds may leave the database: a lost or revoked token must not come back to life
    EXPORTABLE = ("unassigned", "active", "disabled")
    _EXPORT_ACTIONS = ("token-export", "token-twin")

    def export_records(
        self,
        serials: Iterable[str] | None = None,
        *,
        actor: str = "admin",
        action: str = "token-export",
        detail: str | None = None,
        render: Callable[[list[TokenRecord]], object] | None = None,
    ):
        """The tokens' seeds and state as TokenRecords (HOTP: the next counter the verifier expects;
        TOTP: the period), for a seed file or a software twin.

        ``serials=None`` means every token that is unassigned, active or disabled; naming a lost or
        revoked token is refused. ``render(records)``, if given, turns the records into what the
        caller needs (file bytes, a URI); it runs before anything is written, so a render error
        leaves no trace. Then one audit row per token (``action``: ``token-export`` or
        ``token-twin``; ``detail`` says how, never a seed) is committed, and only then is the result
        returned. Returns ``render(records)`` or the records.
        """
        if action not in self._EXPORT_ACTIONS:
            raise BadInput(f"action must be one of {self._EXPORT_ACTIONS}")
        wanted = None if serials is None else [_serial(s) for s in serials]
        if wanted is not None and not wanted:
            raise BadInput("name at least one token (or none for all)")
        q = select(_T, _U.c.name.label("user_name")).select_from(_T.outerjoin(_U, _T.c.user_id == _U.c.id))
        if wanted is None:
            q = q.where(_T.c.state.in_(self.EXPORTABLE))
        else:
            q = q.where(_T.c.serial.in_(wanted))
        with db.read(self._engine) as conn:
            found = {r.serial: r for r in conn.execute(q.order_by(_T.c.serial)).all()}
        if wanted is None:
            rows = list(found.values())
            if not rows:
                raise TokenStateError("the inventory holds no token whose seed can be exported")
        else:
            rows = []
            for s in dict.fromkeys(wanted):
                tok = found.get(s)
                if tok is None:
                    raise UnknownToken(s)
                if tok.state not in self.EXPORTABLE:
                    raise TokenStateError(f"token {s} is {tok.state}; its seed is not handed out")
                rows.append(tok)
        records = [
            TokenRecord(
                serial=t.serial,
                mode=t.mode,
                algorithm=t.algorithm,
                digits=t.digits,
                secret=self._box.open(bytes(t.seed), t.serial),
                counter=t.counter if t.mode == "hotp" else 0,
                period=t.period,
                **_device_fields(t),
            )
            for t in rows
        ]
        result = records if render is None else render(records)
        now = self._clock()

        def run(conn):
            for t in rows:
                _audit(conn, now, actor, action, "ok", t.user_name, t.serial, detail)

        db.write(self._engine, run)
        log.info("%s: %d token(s) by %s", action, len(rows), actor)
        return result

    def list_tokens(self, *, user: str | None = None, state: str | None = None) -> list[TokenInfo]:
        now = self._clock()
        q = select(_T, _U.c.name.label("user_name")).select_from(_T.outerjoin(_U, _T.c.user_id == _U.c.id))
        if user is not None:
            q = q.where(_U.c.name == user)
        if state is not None:
            q = q.where(_T.c.state == state)
        with db.read(self._engine) as conn:
            if user is not None:
                self._user(conn, user)
            rows = conn.execute(q.order_by(_T.c.serial)).all()
        return [self._info(r, r.user_name, now) for r in rows]

    def token(self, serial: str) -> TokenInfo:
        serial = _serial(serial)
        with db.read(self._engine) as conn:
            tok = self._token(conn, serial)
            name = None
            if tok.user_id is not None:
                name = conn.execute(select(_U.c.name).where(_U.c.id == tok.user_id)).scalar()
        return self._info(tok, name, self._clock())

    def _info(self, t, user_name, now) -> TokenInfo:
        return TokenInfo(
            t.serial,
            t.mode,
            t.algorithm,
            t.digits,
            t.period,
            t.state,
            user_name,
            t.description,
            t.counter,
            t.last_step,
            t.drift,
            t.fail_count,
            rules.is_locked(t.fail_count, t.locked_until, now, self.policy),
            t.locked_until,
        )

    # -- tokens: enrolment and life cycle -------------------------------------------------------------

    def link(
        self, name: str, serial: str, code: str, *, description: str | None = None, actor: str = "admin"
    ) -> Result:
        """Link an inventory token to a user, proving possession with its current code.

        Linking turns 2FA on for the user. A wrong code counts as a failure on the token."""
        serial = _serial(serial)
        if description is not None and len(description) > 200:
            raise BadInput("a description has at most 200 characters")
        now = self._clock()
        with db.read(self._engine) as conn:
            user = self._user(conn, name)
            tok = self._token(conn, serial)
        if tok.state != "unassigned":
            raise TokenStateError(f"token {serial} is {tok.state}, not in the inventory (unlink it first?)")
        rules.check_code_format(code, (tok.digits,))
        att = _Attempt(name, user, None, "")
        if not self._open_tokens([tok], now) or not self._reserve([tok], now):
            return self._refuse(att, now, "token-link", "locked", serial, actor)
        for _ in range(_CAS_TRIES):
            new = self._match(tok, code, now)
            if new is None:
                return self._refuse(att, now, "token-link", "wrong-code", serial, actor)

            def run(conn, tok=tok, new=new):
                extra = {"state": "active", "user_id": user.id, "description": description}
                if new[0] == "step":
                    extra["sync_drift"] = new[2]
                if not self._cas(conn, tok, new, now, extra):
                    return False
                conn.execute(update(_U).where(_U.c.id == user.id).values(twofa=True))
                _audit(conn, now, actor, "token-link", "ok", name, serial, description and "with description")
                return True

            if db.write(self._engine, run):
                log.info("token %s linked to user %s", serial, name)
                return Result(True, name, "ok", serial)
            with db.read(self._engine) as conn:
                tok = self._token(conn, serial)
            if tok.state != "unassigned":
                raise TokenStateError(f"token {serial} was linked meanwhile")
        raise DatabaseError("too much contention on token " + serial)

    def _set_state(self, serial: str, action: str, allowed: tuple[str, ...], values: dict, actor: str, extra=None):
        serial = _serial(serial)
        now = self._clock()

        def run(conn):
            tok = self._token(conn, serial)
            if tok.state not in allowed:
                raise TokenStateError(f"token {serial} is {tok.state}; cannot {action.split('-')[-1]} it")
            name = None
            if tok.user_id is not None:
                name = conn.execute(select(_U.c.name).where(_U.c.id == tok.user_id)).scalar()
            conn.execute(update(_T).where(_T.c.id == tok.id).values(updated=now, **values))
            _audit(conn, now, actor, action, "ok", name, serial)
            return extra(conn, tok, name, now) if extra else None

        return db.write(self._engine, run)

    def unlink(self, serial: str, *, actor: str = "admin") -> None:
        """Remove a token from its user; it returns to the inventory (its counter and last step are
        kept: no replay; its learned drift is forgotten)."""
        self._set_state(
            serial,
            "token-unlink",
            ("active", "disabled", "lost"),
            {
                "state": "unassigned",
                "user_id": None,
                "description": None,
                "fail_count": 0,
                "locked_until": None,
                "drift": 0,
                "sync_drift": 0,
            },
            actor,
        )

    def reset_drift(self, serial: str, *, actor: str = "admin") -> None:
        """Forget a TOTP token's learned clock drift (the window is centred on now again)."""
        self._set_state(
            serial,
            "token-reset-drift",
            ("unassigned", "active", "disabled", "lost"),
            {"drift": 0, "sync_drift": 0},
            actor,
        )

    def disable(self, serial: str, *, actor: str = "admin") -> None:
        self._set_state(serial, "token-disable", ("active",), {"state": "disabled"}, actor)

    def enable(self, serial: str, *, actor: str = "admin") -> None:
        self._set_state(serial, "token-enable", ("disabled",), {"state": "active"}, actor)

    def unlock(self, serial: str, *, actor: str = "admin") -> None:
        self._set_state(
            serial,
            "token-unlock",
            ("unassigned", "active", "disabled", "lost"),
            {"fail_count": 0, "locked_until": None},
            actor,
        )

    def revoke(self, serial: str, *, actor: str = "admin") -> None:
        """End of life: the token's codes are refused for good and it cannot be linked again."""
        self._set_state(
            serial, "token-revoke", ("unassigned", "active", "disabled", "lost"), {"state": "revoked"}, actor
        )

    def mark_lost(self, serial: str, *, actor: str = "admin") -> list[str]:
        """Refuse the token's codes at once and give its owner fresh backup codes (returned once)."""

        def extra(conn, tok, name, now):
            return self._new_backup_codes(conn, tok.user_id, name, now, actor)

        return self._set_state(serial, "token-lost", ("active", "disabled"), {"state": "lost"}, actor, extra)

    # -- backup codes --------------------------------------------------------------------------------

    def _new_backup_codes(self, conn, user_id, name, now, actor, count=None) -> list[str]:
        codes = [rules.new_backup_code() for _ in range(count or self.policy.backup_codes)]
        conn.execute(delete(_B).where(_B.c.user_id == user_id, _B.c.used_at.is_(None)))
        for c in codes:
            conn.execute(
                insert(_B),
                {
                    "user_id": user_id,
                    "created": now,
                    "used_at": None,
                    "code_hash": self._box.backup_hash(user_id, rules.normalize_backup_code(c)),
                },
            )
        _audit(conn, now, actor, "backup-codes", "ok", name, detail=f"{len(codes)} new, old unused ones void")
        return codes

    def new_backup_codes(self, name: str, *, count: int | None = None, actor: str = "admin") -> list[str]:
        """Fresh single-use backup codes for ``name`` (replacing unused ones). Shown once: only hashes
        are kept."""
        if count is not None and not 1 <= count <= 100:
            raise BadInput("the number of backup codes must be 1 to 100")
        now = self._clock()

        def run(conn):
            user = self._user(conn, name)
            return self._new_backup_codes(conn, user.id, name, now, actor, count)

        return db.write(self._engine, run)

    def _try_backup(self, att: _Attempt, code: str, now: float) -> Result:
        """Use one backup code (normalised). Single use through ``UPDATE ... WHERE used_at IS NULL``."""
        user = att.user
        want = self._box.backup_hash(user.id, code)
        with db.read(self._engine) as conn:
            rows = conn.execute(
                select(_B.c.id, _B.c.code_hash).where(_B.c.user_id == user.id, _B.c.used_at.is_(None))
            ).all()
        hit = None
        for r in rows:
            if hmac.compare_digest(r.code_hash, want) and hit is None:
                hit = r.id
        if hit is not None:

            def run(conn):
                self._lock_keys(conn, att)
                res = conn.execute(update(_B).where(_B.c.id == hit, _B.c.used_at.is_(None)).values(used_at=now))
                if res.rowcount != 1:
                    return False
                self._give_back(conn, att, ())
                _audit(
                    conn,
                    now,
                    user.name,
                    "validate",
                    "ok",
                    user.name,
                    detail="backup-code",
                    source=att.shown_source,
                    via=att.via,
                )
                return True

            if db.write(self._engine, run):
                return Result(True, user.name, "backup-code")
        return self._refuse(att, now, "validate", "wrong-backup-code")

    # -- validation -------------------------------------------------------------------------------------
    #
    # What a relying party learns: accept or reject. Every refusal of ``verify`` and ``check_code``
    # is a ``Result`` with ``accepted=False`` (never an exception that names a cause: unknown user,
    # malformed code, user without 2FA given a code, disabled or locked token, wrong password or
    # code, replay, throttled); its ``reason`` is for the audit log and for an admin who asks
    # (:meth:`explain`, ``keyfob validate --explain``), and a front must not pass it on. Every
    # ``verify`` that is not throttled costs one Argon2 verify at least, against a fixed dummy hash
    # for an unknown user, so that unknown users take the time of known ones.

    def _load(self, name: str, conn=None) -> tuple[_User | None, list[_Tok], bool]:
        """The user (None: no such user), their active tokens and whether they have unused backup
        codes: one query (in ``conn``'s transaction if given, else in a read transaction of its own)."""
        if conn is None:
            with db.read(self._engine) as conn:
                rows = conn.execute(_LOAD_SQL, {"name": name}).all()
        else:
            rows = conn.execute(_LOAD_SQL, {"name": name}).all()
        if not rows:
            return None, [], False
        r0 = rows[0]
        user = _User(r0[0], r0[1], r0[2], bool(r0[3]))
        tokens = [_Tok(*r[5:11], bytes(r[11]), *r[12:19]) for r in rows if r[5] is not None]
        return user, tokens, r0[4] > 0

    def _check_tokens(self, att: _Attempt, tokens, code: str, now: float, reserved=None) -> Result:
        """Check ``code`` against the user's active tokens of its length and commit the match (CAS).

        Only tokens reserved by :meth:`_reserve` are checked (``reserved``: their ids, if the caller
        reserved them already); a wrong code leaves the reservations counted as failures, a replayed
        one (:meth:`_replayed`) gives them back."""
        user = att.user
        cand = [t for t in tokens if t.digits == len(code)]
        if not cand:
            return self._refuse(att, now, "validate", "no-token")
        if reserved is None:
            open_ = self._open_tokens(cand, now)
            reserved = self._reserve(open_, now) if open_ else []
        if not reserved:
            return self._refuse(att, now, "validate", "locked", cand[0].serial)
        for _ in range(_CAS_TRIES):
            mine = [t for t in tokens if t.id in reserved and t.digits == len(code)]
            hit = None
            for t in mine:
                new = self._match(t, code, now)
                if new is not None:
                    hit = (t, new)
                    break
            if hit is None:
                serial = mine[0].serial if len(mine) == 1 else None
                replay = next((t for t in mine if self._replayed(t, code, now)), None)
                if replay is not None:
                    return self._replay(att, reserved, replay.serial, now)
                return self._refuse(att, now, "validate", "wrong-code", serial)
            if self._before_commit is not None:
                self._before_commit()
            tok, new = hit

            def run(conn, tok=tok, new=new):
                self._lock_keys(conn, att)
                if not self._cas(conn, tok, new, now):
                    return False
                self._give_back(conn, att, [i for i in reserved if i != tok.id])
                _audit(
                    conn, now, user.name, "validate", "ok", user.name, tok.serial, source=att.shown_source,
                    via=att.via,
                )
                return True

            if db.write(self._engine, run):
                return Result(True, user.name, "ok", tok.serial)
            # Lost the race: someone else moved the counter (or the state). Look again, with the
            # reservations this attempt already holds (never a second one).
            tokens = self._load(user.name)[1]
        raise DatabaseError(f"too much contention on the tokens of user {user.name!r}")

    def _replay(self, att: _Attempt, reserved, serial: str, now: float) -> Result:
        """A code the token already used, sent again (a double click, a retrying client): refused and
        audited as ``replay``, and not a failure: every reservation of the attempt is given back."""

        def run(conn):
            self._give_back(conn, att, reserved)
            _audit(conn, now, **self._row(att, "validate", "replay", serial))

        db.write(self._engine, run)
        log.info("validate refused for user %s: replay", att.user.name)
        return Result(False, att.user.name, "replay", serial)

    def _code_kind(self, code: str, tokens, has_backup: bool) -> tuple[str, str]:
        """``("otp", code)`` or ``("backup", normalised)``; :class:`BadInput` for anything else."""
        if has_backup:
            b = rules.normalize_backup_code(code)
            if b is not None:
                return "backup", b
        lengths = {t.digits for t in tokens} or set(RECORD_DIGITS)
        return "otp", rules.check_code_format(code, lengths)

    def _start(self, name: str, source: str | None, now: float, prepare, checked_in_backoff, via: str | None = None):
        """Begin an attempt in one write transaction: load the user and their active tokens, let
        ``prepare(user, tokens, has_backup)`` make the plan and name the tokens to reserve, and
        reserve the attempt on the throttle (source key, then user key) and on those tokens.

        A source in back-off refuses the attempt unchecked; a user in back-off too, unless
        ``checked_in_backoff(plan)`` (a two-factor login, see :mod:`.throttle`). A throttled attempt
        is audited (aggregated) in the same transaction and gets ``plan`` None.

        Returns ``(attempt, tokens, plan, reserved_token_ids)``."""
        p = self.policy

        def run(conn):
            user, tokens, has_backup = self._load(name, conn)
            plan, to_reserve = prepare(user, tokens, has_backup)
            att = self._attempt(name, user, source, via)
            if p.user_rate_limit > 0:
                if att.source is not None:
                    if not throttle.reserve(conn, att.source, now, p):
                        throttle.aggregate(conn, att.source, now, self._row(att, "validate", THROTTLED))
                        return att, tokens, None, []
                    att.keys.append(att.source)
                if throttle.reserve(conn, att.ukey, now, p):
                    att.keys.append(att.ukey)
                elif checked_in_backoff(plan):
                    att.backoff = True
                else:
                    for key in att.keys:
                        throttle.release(conn, key)  # refused unchecked: not a failure of the source
                    throttle.aggregate(conn, att.ukey, now, self._row(att, "validate", THROTTLED))
                    return att, tokens, None, []
            self._maybe_prune(conn, now)
            return att, tokens, plan, self._reserve_in(conn, to_reserve, now) if to_reserve else []

        att, tokens, plan, reserved = db.write(self._engine, run)
        if plan is None:
            log.info("validate refused for %s: throttled", name if att.user else "an unknown user")
        return att, tokens, plan, reserved

    def _bad_text(self, now: float, *values) -> None:
        """Invalid UTF-8 in a login: audited (naming no one), then :class:`BadInput`; nothing else is
        written and no throttle slot is used."""
        try:
            _utf8(*values)
        except BadInput:
            db.write(
                self._engine, lambda conn: _audit(conn, now, "unknown", "validate", "fail", detail="invalid UTF-8")
            )
            raise

    def check_code(self, name: str, code: str, *, source: str | None = None, via: str | None = None) -> Result:
        """Validate a code alone, *without any password check*. Also takes a backup code.

        This is for a stack that has already checked the password earlier (e.g. pam_unix before a
        keyfob PAM module): wrong codes count against the user's tokens, so this must not be
        reachable by anyone who has not passed that check (see :mod:`.throttle`). Every refusal is a
        Result (see "What a relying party learns" above); only text that is not UTF-8 raises
        :class:`BadInput`. ``source``: where the attempt came from, if the front knows (an address)."""
        now = self._clock()
        self._bad_text(now, name, code)

        def prepare(user, tokens, has_backup):
            if user is None:
                return ("unknown-user",), ()
            try:
                kind, c = self._code_kind(code, tokens, has_backup)
            except BadInput:
                return ("malformed",), ()
            if kind == "backup":
                return (kind, c), ()
            return (kind, c), self._open_tokens([t for t in tokens if t.digits == len(c)], now)

        att, tokens, plan, reserved = self._start(name, source, now, prepare, lambda plan: False, via)
        if plan is None:
            return Result(False, att.user.name if att.user else "", THROTTLED)
        if len(plan) == 1:
            return self._refuse(att, now, "validate", plan[0])
        kind, c = plan
        if kind == "backup":
            return self._try_backup(att, c, now)
        return self._check_tokens(att, tokens, c, now, reserved)

    def verify(
        self, name: str, password: str, code: str | None = None, *, source: str | None = None, via: str | None = None
    ) -> Result:
        """A login: password and code, either as two arguments or typed together in one field.

        With ``code=None``, ``password`` is the one field: the code is its last ``digits`` characters,
        trying each digit length of the user's active tokens (and a backup code at the end). Users
        without 2FA give the password alone. Every refusal is a Result (see "What a relying party
        learns" above); only text that is not UTF-8 raises :class:`BadInput`. ``source``: where the
        attempt came from, if the front knows (an address): throttled per source as well. ``via``:
        the front and credential it came through (e.g. ``api:web-login``), written to its audit rows.

        The attempt is reserved on the throttle before the password is checked, and on the tokens
        only after the password was right: a wrong password never counts on a token.
        """
        if not isinstance(password, str) or not isinstance(name, str):
            raise BadInput("a user name and a password are required")
        now = self._clock()
        self._bad_text(now, name, password, code)

        def prepare(user, tokens, has_backup):
            if user is None:
                return ("unknown-user",), ()
            if not user.twofa:
                return (("password-only",) if code is None else ("unexpected-code",)), ()
            try:
                cands = self._login_candidates(password, code, tokens, has_backup)
            except BadInput:
                return ("malformed",), ()
            return (("candidates", cands) if cands else ("no-token",)), ()

        # a user in back-off is still checked when the login brings two factors (see .throttle)
        two_factor = lambda plan: plan[0] not in ("password-only", "unexpected-code")  # noqa: E731
        att, tokens, plan, _ = self._start(name, source, now, prepare, two_factor, via)
        if plan is None:
            return Result(False, att.user.name if att.user else "", THROTTLED)
        user = att.user
        if plan[0] == "unknown-user":
            self._pw.verify_dummy(password)
            return self._refuse(att, now, "validate", "unknown-user")
        if plan[0] == "password-only":
            return self._password_only(att, password, now)
        if plan[0] != "candidates":
            self._pw.verify(user.password_hash, password)  # the same time as any other refusal
            return self._refuse(att, now, "validate", plan[0])
        for pw, kind, c in plan[1]:
            if self._pw.verify(user.password_hash, pw):
                if kind == "backup":
                    return self._try_backup(att, c, now)
                return self._check_tokens(att, tokens, c, now)
        return self._refuse(att, now, "validate", "wrong-password")

    def _login_candidates(self, password: str, code: str | None, tokens, has_backup: bool) -> list:
        """``[(password, "otp"|"backup", code), ...]`` to try; :class:`BadInput` for malformed input."""
        if code is not None:
            return [(password,) + self._code_kind(code, tokens, has_backup)]
        candidates = [(p, "otp", c) for p, c in rules.split_field(password, {t.digits for t in tokens})]
        if has_backup:
            candidates += [(p, "backup", c) for p, c in rules.split_backup_field(password)]
        if not candidates and (tokens or has_backup):
            raise BadInput("no code at the end of the field")
        return candidates  # empty: nothing to check a code against, refused (audited) as no-token

    def _password_only(self, att: _Attempt, password: str, now: float) -> Result:
        user = att.user
        if not self._pw.verify(user.password_hash, password):
            return self._refuse(att, now, "validate", "wrong-password")

        def run(conn):
            self._give_back(conn, att, ())
            _audit(
                conn,
                now,
                user.name,
                "validate",
                "ok",
                user.name,
                detail="password only (2fa off)",
                source=att.shown_source,
                via=att.via,
            )

        db.write(self._engine, run)
        return Result(True, user.name, "password")

    def explain(self, name: str) -> AuditInfo | None:
        """Why the last login attempt naming ``name`` ended as it did (its audit row), for an admin:
        the reason a relying party is never told. Also finds an unknown name's attempts (recorded by
        the name's keyed hash, never the name). None if there is none."""
        actor = "unknown:" + self._box.name_tag(name)
        q = (
            select(_A)
            .where(_A.c.action == "validate", (_A.c.user_name == name) | (_A.c.actor == actor))
            .order_by(_A.c.id.desc())
            .limit(1)
        )
        with db.read(self._engine) as conn:
            r = conn.execute(q).first()
        return None if r is None else _audit_info(r)

    # -- resync ----------------------------------------------------------------------------------------

    def resync(
        self,
        serial: str,
        code1: str,
        code2: str,
        *,
        wide: bool = False,
        user: str | None = None,
        password: str | None = None,
        actor: str = "admin",
    ) -> Result:
        """Find the token again from two consecutive codes and clear its fail count.

        The search is narrow: HOTP the next ``hotp_near_window`` counters, TOTP ± ``totp_near_steps``
        steps around now + the token's drift. ``wide=True`` (admin only) searches the
        wide sync window instead (HOTP: the next ``hotp_sync_window`` counters; TOTP:
        ± ``totp_sync_seconds`` around now). Never a counter before the next expected one, nor a
        step at or before the last accepted one.

        As admin (no ``user``) it also unlocks the token. As self-service (``user`` and ``password``)
        the password must be right, the token must be the user's and not locked, and failures count.
        """
        serial = _serial(serial)
        if wide and user is not None:
            raise BadInput("the wide resync search is for an admin (self-service searches near the token)")
        now = self._clock()
        with db.read(self._engine) as conn:
            tok = self._token(conn, serial)
            owner = None
            if tok.user_id is not None:
                owner = conn.execute(select(_U).where(_U.c.id == tok.user_id)).first()
            urow = self._user(conn, user) if user is not None else None
        if tok.state not in ("unassigned", "active", "disabled"):
            raise TokenStateError(f"token {serial} is {tok.state}; cannot resync it")
        for c in (code1, code2):
            rules.check_code_format(c, (tok.digits,))
        self_service = user is not None
        att = _Attempt(user or actor, urow, None, "")
        if self_service:
            if password is None:
                raise BadInput("self-service resync needs the user's password")
            _utf8(password)
            if owner is None or owner.id != urow.id:
                raise TokenStateError(f"token {serial} does not belong to user {user!r}")
            att = self._attempt(user, urow, None)
            if not self._reserve_key(att, now):
                return self._refuse(att, now, "token-resync", THROTTLED, serial)
            if not self._open_tokens([tok], now):
                return self._refuse(att, now, "token-resync", "locked", serial)
            if not self._pw.verify(urow.password_hash, password):
                return self._refuse(att, now, "token-resync", "wrong-password", serial)
            if not self._reserve([tok], now):
                return self._refuse(att, now, "token-resync", "locked", serial)
        who = urow.name if self_service else actor
        name = owner.name if owner is not None else None
        p = self.policy
        for _ in range(_CAS_TRIES):
            key = self._key(tok)
            if tok.mode == "hotp":
                window = p.hotp_sync_window if wide else p.hotp_near_window
                n = rules.hotp_resync(key, tok.counter, code1, code2, window)
                new = None if n is None else ("counter", n)
            elif wide:
                r = rules.totp_resync(key, now, tok.period, tok.last_step, code1, code2, p.totp_sync_seconds)
                new = None if r is None else ("step", r[0], r[1])
            else:
                r = rules.totp_resync(
                    key,
                    now,
                    tok.period,
                    tok.last_step,
                    code1,
                    code2,
                    center_drift=tok.drift,
                    span_steps=p.totp_near_steps,
                )
                new = None if r is None else ("step", r[0], r[1])
            if new is None:
                if self_service:  # the token's reservation stays counted as a failure
                    return self._refuse(att, now, "token-resync", "wrong-code", serial)

                def run_fail(conn):
                    _audit(conn, now, who, "token-resync", "fail", name, serial, "codes not found")

                db.write(self._engine, run_fail)
                return Result(False, name or "", "wrong-code", serial)

            def run(conn, tok=tok, new=new):
                extra = {"sync_drift": new[2]} if new[0] == "step" else None
                if self_service:
                    self._lock_keys(conn, att)
                if not self._cas(conn, tok, new, now, extra):
                    return False
                if self_service:
                    self._give_back(conn, att, ())
                detail = f"drift {new[2]:+d} steps" if new[0] == "step" else None
                if wide:
                    detail = "wide search" + (f", {detail}" if detail else "")
                _audit(conn, now, who, "token-resync", "ok", name, serial, detail)
                return True

            if db.write(self._engine, run):
                return Result(True, name or "", "ok", serial)
            with db.read(self._engine) as conn:
                tok = self._token(conn, serial)
        raise DatabaseError("too much contention on token " + serial)

    def _reserve_key(self, att: _Attempt, now: float) -> bool:
        """Reserve a self-service attempt on the user's throttle key (False: in back-off, refused)."""
        if self.policy.user_rate_limit == 0:
            return True

        def run(conn):
            if throttle.reserve(conn, att.ukey, now, self.policy):
                att.keys.append(att.ukey)
                return True
            return False

        return db.write(self._engine, run)

    # -- audit -----------------------------------------------------------------------------------------

    #: the most rows one ``audit`` call returns
    AUDIT_LIMIT = 100_000

    def audit(
        self,
        *,
        user: str | None = None,
        serial: str | None = None,
        action: str | None = None,
        limit: int | None = 100,
    ) -> list[AuditInfo]:
        """Audit rows, newest first (``limit``: 1 to :attr:`AUDIT_LIMIT`, or None for all)."""
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= self.AUDIT_LIMIT
        ):
            raise BadInput(f"the audit limit is 1 to {self.AUDIT_LIMIT:,}")
        q = select(_A).order_by(_A.c.id.desc())
        if user is not None:
            q = q.where(_A.c.user_name == user)
        if serial is not None:
            q = q.where(_A.c.serial == _serial(serial))
        if action is not None:
            q = q.where(_A.c.action == action)
        if limit is not None:
            q = q.limit(limit)
        with db.read(self._engine) as conn:
            rows = conn.execute(q).all()
        return [_audit_info(r) for r in rows]

    def _prune_in(self, conn, now: float) -> int:
        """Delete audit rows older than ``audit_days`` and forgotten throttle keys; the audit rows
        deleted."""
        throttle.prune(conn, now, self.policy)
        if self.policy.audit_days == 0:
            return 0
        return conn.execute(delete(_A).where(_A.c.ts < now - self.policy.audit_days * 86400.0)).rowcount

    def _maybe_prune(self, conn, now: float) -> None:
        """Retention on write: at most every :data:`_PRUNE_EVERY` seconds per process, inside a write."""
        if now - self._pruned >= _PRUNE_EVERY or now < self._pruned:
            self._pruned = now
            self._prune_in(conn, now)

    def prune_audit(self, *, actor: str = "admin") -> int:
        """Apply the retention setting (``audit_days``) now: delete older audit rows (and forgotten
        throttle keys), audited. Returns how many audit rows went."""
        now = self._clock()

        def run(conn):
            n = self._prune_in(conn, now)
            days = self.policy.audit_days
            _audit(
                conn,
                now,
                actor,
                "audit-prune",
                "ok",
                detail=f"{n} rows older than {days} days" if days else "0 rows (kept for ever)",
            )
            return n

        self._pruned = now
        return db.write(self._engine, run)


def _audit_info(r) -> AuditInfo:
    return AuditInfo(r.ts, r.actor, r.action, r.user_name, r.serial, r.result, r.detail, r.count, r.source, r.via)
