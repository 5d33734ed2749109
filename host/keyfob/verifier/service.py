"""The Verifier: users, tokens, enrolment, validation, resync, lockout, backup codes, audit.

A library that never prints. Every method that changes something writes an audit row in the same
transaction. Codes are checked outside any transaction and the result is written with a
compare-and-set (``UPDATE tokens ... WHERE id = ? AND counter = ?``), so of any number of parallel
submissions of one code, across threads, processes or nodes, exactly one is accepted.

Time comes from an injectable ``clock`` (a callable returning Unix seconds) so the TOTP rules are
tested without sleeping.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Self

from sqlalchemy import delete, func, insert, select, text, update

from keyfob.otp import HotpKey
from keyfob.records import DIGITS as RECORD_DIGITS
from keyfob.records import TokenRecord
from keyfob.serials import SerialError, accept_serial, is_valid_serial

from . import db, rules
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
from .models import AuditEntry, BackupCode, Setting, Token, User
from .passwords import Passwords
from .rules import Policy

log = logging.getLogger("keyfob.verifier")

_T = Token.__table__
_U = User.__table__
_B = BackupCode.__table__
_A = AuditEntry.__table__
_S = Setting.__table__

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}\Z")
_KEY_CHECK = "key_check"
_CAS_TRIES = 8
_CAS_SQL: dict = {}


# --- results and listings (never carry a secret) --------------------------------------------------


@dataclass(frozen=True)
class Result:
    """The outcome of one attempt. ``reason`` is one of: ``ok``, ``backup-code``, ``password``
    (user without 2FA), ``wrong-code``, ``wrong-backup-code``, ``wrong-password``, ``locked``,
    ``throttled``, ``no-token`` (no active token of the code's length)."""

    accepted: bool
    user: str
    reason: str
    serial: str | None = None

    def __bool__(self) -> bool:
        return self.accepted


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


# --- helpers --------------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not isinstance(name, str) or _NAME_RE.match(name) is None:
        raise BadInput("a user name has 1-64 characters: letters, digits and . _ @ + - (not first)")
    return name


def canonical_serial(text: str) -> str:
    """:func:`keyfob.serials.accept_serial` with the verifier's :class:`BadInput`: keyfob serials
    must pass their Damm check digit, other vendors' serials are kept as given (1 to 64 printable
    characters, no whitespace)."""
    try:
        return accept_serial(text)
    except SerialError as exc:
        raise BadInput(str(exc)) from None


_serial = canonical_serial


# The hot path (load, compare-and-set, audit) uses plain portable SQL: building SQLAlchemy Core
# expressions for every login costs more than the database work itself.
_AUDIT_SQL = text(
    "INSERT INTO audit (ts, actor, action, user_name, serial, result, detail)"
    " VALUES (:ts, :actor, :action, :user_name, :serial, :result, :detail)"
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
    "fail_count",
    "locked_until",
    "state",
)
_LOAD_SQL = text(
    "SELECT u.id, u.name, u.password_hash, u.twofa, u.rl_start, u.rl_count,"
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
    rl_start: float | None
    rl_count: int


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
    fail_count: int
    locked_until: float | None
    state: str


def _audit(conn, now, actor, action, result, user=None, serial=None, detail=None) -> None:
    conn.execute(
        _AUDIT_SQL,
        {
            "ts": now,
            "actor": actor,
            "action": action,
            "user_name": user,
            "serial": serial,
            "result": result,
            "detail": detail,
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
        #: test seam: called after a code matched and before its compare-and-set (see the race test)
        self._before_commit: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"Verifier({self._engine.url.render_as_string()})"

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
        """Create the schema (through the migrations) and the key file (0600) if it does not exist."""
        engine = db.make_engine(database, must_exist=False)
        if db.has_tables(engine):
            engine.dispose()
            raise AlreadyExists(f"database {db.to_url(database)} is already initialised")
        box = SeedBox(key if key is not None else resolve_key(key_file, create=True))
        db.upgrade(engine)
        now = clock()

        def run(conn):
            conn.execute(insert(_S), {"name": _KEY_CHECK, "value": box.key_check()})
            _audit(conn, now, actor, "server-init", "ok", detail="schema " + db.head_revision())

        db.write(engine, run)
        return cls(engine, box, policy or Policy(), clock)

    @classmethod
    def open(
        cls,
        database,
        *,
        key: bytes | None = None,
        key_file=None,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Verifier:
        """Open an initialised database, upgrading an older schema, and check the key against it."""
        engine = db.make_engine(database, must_exist=True)
        try:
            rev = db.current_revision(engine)
            if rev is None:
                raise DatabaseError(
                    f"{db.to_url(database)} is not a keyfob database (run `keyfob server init`)"
                )
            if rev != db.head_revision():
                db.upgrade(engine)
            box = SeedBox(key if key is not None else resolve_key(key_file))
            with db.read(engine) as conn:
                check = conn.execute(select(_S.c.value).where(_S.c.name == _KEY_CHECK)).scalar()
            if check is None or not box.verify_key_check(check):
                raise KeyFileError("the key does not belong to this database (wrong key file?)")
        except Exception:
            engine.dispose()
            raise
        return cls(engine, box, policy or Policy(), clock)

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
        )
        return None if r is None else ("step", r[0], r[1])

    def _cas(self, conn, tok, new, now: float, extra: dict | None = None, *, unlock: bool = False) -> bool:
        """Compare-and-set the token's counter (HOTP) or last step and drift (TOTP), also clearing its
        fail count: ``UPDATE tokens ... WHERE id = ? AND counter = ? AND state = ?`` (and not locked,
        unless ``unlock``). True if this call won; False if anyone changed the token since it was read."""
        extra = extra or {}
        sql_key = (new[0], tuple(sorted(extra)), unlock)
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
            if not unlock:
                where += (
                    " AND (fail_count < :max_fail OR (locked_until IS NOT NULL AND locked_until <= :now))"
                )
            stmt = _CAS_SQL[sql_key] = text(f"UPDATE tokens SET {', '.join(sets)} WHERE {where}")
        params = {
            "now": now,
            "id": tok.id,
            "state": tok.state,
            "new": new[1],
            "max_fail": self.policy.max_fail,
        }
        params["old"] = tok.counter if new[0] == "counter" else tok.last_step
        if new[0] == "step":
            params["drift"] = new[2]
        for k, val in extra.items():
            params["x_" + k] = val
        return conn.execute(stmt, params).rowcount == 1

    def _record_failure(self, conn, user_row, token_ids, now: float, count_user: bool = True) -> None:
        """One more failure on each token (lock at the limit) and on the user's rate window."""
        for tid in token_ids:
            row = conn.execute(
                select(_T.c.fail_count, _T.c.locked_until).where(_T.c.id == tid).with_for_update()
            ).first()
            if row is None:
                continue
            fc, lu = rules.after_failure(row.fail_count, row.locked_until, now, self.policy)
            conn.execute(update(_T).where(_T.c.id == tid).values(fail_count=fc, locked_until=lu, updated=now))
        if count_user and user_row is not None:
            u = conn.execute(
                select(_U.c.rl_start, _U.c.rl_count).where(_U.c.id == user_row.id).with_for_update()
            ).first()
            start, count = rules.after_user_failure(u.rl_start, u.rl_count, now, self.policy)
            conn.execute(update(_U).where(_U.c.id == user_row.id).values(rl_start=start, rl_count=count))

    def _fail(
        self,
        user_row,
        token_ids,
        now,
        action,
        reason,
        serial=None,
        actor=None,
        count_user=True,
    ) -> Result:
        def run(conn):
            self._record_failure(conn, user_row, token_ids, now, count_user)
            _audit(conn, now, actor or user_row.name, action, "fail", user_row.name, serial, reason)

        db.write(self._engine, run)
        log.info("%s refused for user %s: %s", action, user_row.name, reason)
        return Result(False, user_row.name, reason, serial)

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
        hashed = self._pw.hash(password)
        now = self._clock()

        def run(conn):
            self._user(conn, name)
            conn.execute(
                update(_U).where(_U.c.name == name).values(password_hash=hashed, rl_start=None, rl_count=0)
            )
            _audit(conn, now, actor, "user-passwd", "ok", name)

        db.write(self._engine, run)

    def set_twofa(self, name: str, enabled: bool, *, actor: str = "admin") -> None:
        now = self._clock()

        def run(conn):
            self._user(conn, name)
            conn.execute(update(_U).where(_U.c.name == name).values(twofa=enabled))
            _audit(conn, now, actor, "user-2fa-on" if enabled else "user-2fa-off", "ok", name)

        db.write(self._engine, run)

    def list_users(self) -> list[UserInfo]:
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
            rows = conn.execute(select(_U.c.name, _U.c.twofa, ntok, nbak).order_by(_U.c.name)).all()
        return [UserInfo(r[0], bool(r[1]), r[2], r[3]) for r in rows]

    # -- tokens: inventory -------------------------------------------------------------------------

    def import_records(
        self, records: Iterable[TokenRecord], *, actor: str = "admin", source: str | None = None
    ) -> list[str]:
        """Put tokens into the inventory (state ``unassigned``), all or nothing.

        Serials follow :func:`keyfob.serials.accept_serial`: keyfob serials need their check digit,
        other vendors' serials are kept as given. A serial already in the inventory refuses the whole batch.
        ``source`` (e.g. the file name) prefixes error messages."""
        recs = list(records)
        serials = []
        for n, r in enumerate(recs, start=1):
            if not isinstance(r, TokenRecord):
                raise BadInput("import_records takes TokenRecord objects")
            try:
                serials.append(_serial(r.serial))
            except BadInput as exc:
                raise BadInput(f"{source or 'import'}: token {n}: {exc}") from None
        dup = {s for s in serials if serials.count(s) > 1}
        if dup:
            raise BadInput(f"the seed file lists token {min(dup)} more than once")
        now = self._clock()

        def run(conn):
            have = conn.execute(select(_T.c.serial).where(_T.c.serial.in_(serials))).scalars().first()
            if have is not None:
                raise AlreadyExists(f"token {have} is already in the inventory; nothing imported")
            for s, r in zip(serials, recs, strict=True):
                conn.execute(
                    insert(_T),
                    {
                        "serial": s,
                        "mode": r.mode,
                        "algorithm": r.algorithm,
                        "digits": r.digits,
                        "period": r.period,
                        "seed": self._box.seal(r.secret, s),
                        "counter": r.counter,
                        "last_step": -1,
                        "drift": 0,
                        "fail_count": 0,
                        "locked_until": None,
                        "state": "unassigned",
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
                    detail=f"{r.mode} {r.algorithm} {r.digits} digits",
                )

        db.write(self._engine, run)
        return serials

    def import_seed_file(
        self, path, *, key: bytes | str | None = None, passphrase: str | None = None, actor: str = "admin"
    ) -> list[str]:
        """Import a seed file, all or nothing: PSKC (RFC 6030; plain, pre-shared key or passphrase),
        OATH CSV or otpauth URIs, told apart by content (``keyfob.formats.read_seed_file``)."""
        try:
            from keyfob.formats import FormatError, read_seed_file
        except ImportError:
            raise SeedFileError("reading seed files needs keyfob.formats, which is missing") from None
        try:
            records = read_seed_file(path, key=key, passphrase=passphrase)
        except FormatError as exc:
            raise SeedFileError(str(exc)) from None
        except OSError as exc:
            raise SeedFileError(f"cannot read seed file {path}: {exc.strerror}") from None
        if not records:
            raise SeedFileError(f"seed file {path} holds no tokens")
        return self.import_records(records, actor=actor, source=str(path))

    def import_uri(self, uri: str, *, actor: str = "admin") -> list[str]:
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
                **({} if is_valid_serial(t.serial) else {"manufacturer": "unknown", "model": "unknown"}),
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
        for _ in range(_CAS_TRIES):
            if rules.is_locked(tok.fail_count, tok.locked_until, now, self.policy):
                return self._fail(user, (), now, "token-link", "locked", serial, actor, count_user=False)
            new = self._match(tok, code, now)
            if new is None:
                return self._fail(
                    user, (tok.id,), now, "token-link", "wrong-code", serial, actor, count_user=False
                )

            def run(conn, tok=tok, new=new):
                extra = {"state": "active", "user_id": user.id, "description": description}
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

    def _set_state(
        self, serial: str, action: str, allowed: tuple[str, ...], values: dict, actor: str, extra=None
    ):
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
        """Remove a token from its user; it returns to the inventory (its counter is kept: no replay)."""
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
            },
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

    def _try_backup(self, user, code: str, now: float) -> Result:
        """Use one backup code (normalised). Single use through ``UPDATE ... WHERE used_at IS NULL``."""
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
                res = conn.execute(
                    update(_B).where(_B.c.id == hit, _B.c.used_at.is_(None)).values(used_at=now)
                )
                if res.rowcount != 1:
                    return False
                _audit(conn, now, user.name, "validate", "ok", user.name, detail="backup-code")
                return True

            if db.write(self._engine, run):
                return Result(True, user.name, "backup-code")
        return self._fail(user, (), now, "validate", "wrong-backup-code")

    # -- validation -------------------------------------------------------------------------------------

    def _load(self, name: str) -> tuple[_User, list[_Tok], bool]:
        """The user, their active tokens and whether they have unused backup codes: one query."""
        with db.read(self._engine) as conn:
            rows = conn.execute(_LOAD_SQL, {"name": name}).all()
        if not rows:
            raise UnknownUser(name)
        r0 = rows[0]
        user = _User(r0[0], r0[1], r0[2], bool(r0[3]), r0[4], r0[5])
        tokens = [_Tok(*r[7:13], bytes(r[13]), *r[14:20]) for r in rows if r[7] is not None]
        return user, tokens, r0[6] > 0

    def _check_tokens(self, user, tokens, code: str, now: float) -> Result:
        """Check ``code`` against the user's active tokens of its length and commit the match (CAS)."""
        for _ in range(_CAS_TRIES):
            cand = [t for t in tokens if t.digits == len(code)]
            if not cand:
                return self._fail(user, (), now, "validate", "no-token")
            open_ = [t for t in cand if not rules.is_locked(t.fail_count, t.locked_until, now, self.policy)]
            if not open_:
                return self._fail(user, (), now, "validate", "locked", cand[0].serial)
            hit = None
            for t in open_:
                new = self._match(t, code, now)
                if new is not None:
                    hit = (t, new)
                    break
            if hit is None:
                serial = open_[0].serial if len(open_) == 1 else None
                return self._fail(user, [t.id for t in open_], now, "validate", "wrong-code", serial)
            if self._before_commit is not None:
                self._before_commit()
            tok, new = hit

            def run(conn, tok=tok, new=new):
                if not self._cas(conn, tok, new, now):
                    return False
                _audit(conn, now, user.name, "validate", "ok", user.name, tok.serial)
                return True

            if db.write(self._engine, run):
                return Result(True, user.name, "ok", tok.serial)
            # Lost the race: someone else moved the counter (or locked the token). Look again.
            tokens = self._load(user.name)[1]
        raise DatabaseError(f"too much contention on the tokens of user {user.name!r}")

    def _code_kind(self, code: str, tokens, has_backup: bool) -> tuple[str, str]:
        """``("otp", code)`` or ``("backup", normalised)``; :class:`BadInput` for anything else."""
        if has_backup:
            b = rules.normalize_backup_code(code)
            if b is not None:
                return "backup", b
        lengths = {t.digits for t in tokens} or set(RECORD_DIGITS)
        return "otp", rules.check_code_format(code, lengths)

    def check_code(self, name: str, code: str) -> Result:
        """Validate a code alone (the password is checked elsewhere, e.g. by another PAM module).

        Also takes a backup code. Malformed input raises :class:`BadInput` and writes nothing."""
        now = self._clock()
        user, tokens, has_backup = self._load(name)
        kind, code = self._code_kind(code, tokens, has_backup)
        if rules.throttled(user.rl_start, user.rl_count, now, self.policy):
            return self._fail(user, (), now, "validate", "throttled", count_user=False)
        if kind == "backup":
            return self._try_backup(user, code, now)
        return self._check_tokens(user, tokens, code, now)

    def verify(self, name: str, password: str, code: str | None = None) -> Result:
        """A login: password and code, either as two arguments or typed together in one field.

        With ``code=None``, ``password`` is the one field: the code is its last ``digits`` characters,
        trying each digit length of the user's active tokens (and a backup code at the end). Users
        without 2FA give the password alone. Malformed input raises :class:`BadInput`, writes nothing.
        """
        if not isinstance(password, str):
            raise BadInput("a password is required")
        now = self._clock()
        user, tokens, has_backup = self._load(name)
        if not user.twofa:
            if code is not None:
                raise BadInput(f"user {name!r} has no second factor: give the password alone")
            return self._password_only(user, password, now)
        if code is not None:
            candidates = [(password,) + self._code_kind(code, tokens, has_backup)]
        else:
            candidates = [(p, "otp", c) for p, c in rules.split_field(password, {t.digits for t in tokens})]
            if has_backup:
                candidates += [(p, "backup", c) for p, c in rules.split_backup_field(password)]
            if not candidates:
                if not tokens and not has_backup:
                    candidates = []  # nothing to check the code against: refused below (audited)
                else:
                    want = " or ".join(str(d) for d in sorted({t.digits for t in tokens})) or "a backup"
                    raise BadInput(
                        f"type the password followed by the {want}-digit code"
                        if tokens
                        else "type the password followed by a backup code"
                    )
        if rules.throttled(user.rl_start, user.rl_count, now, self.policy):
            return self._fail(user, (), now, "validate", "throttled", count_user=False)
        if not candidates:
            return self._fail(user, (), now, "validate", "no-token")
        for pw, kind, c in candidates:
            if self._pw.verify(user.password_hash, pw):
                if kind == "backup":
                    return self._try_backup(user, c, now)
                return self._check_tokens(user, tokens, c, now)
        return self._fail(user, (), now, "validate", "wrong-password")

    def _password_only(self, user, password: str, now: float) -> Result:
        if rules.throttled(user.rl_start, user.rl_count, now, self.policy):
            return self._fail(user, (), now, "validate", "throttled", count_user=False)
        if not self._pw.verify(user.password_hash, password):
            return self._fail(user, (), now, "validate", "wrong-password")

        def run(conn):
            _audit(conn, now, user.name, "validate", "ok", user.name, detail="password only (2fa off)")

        db.write(self._engine, run)
        return Result(True, user.name, "password")

    # -- resync ----------------------------------------------------------------------------------------

    def resync(
        self,
        serial: str,
        code1: str,
        code2: str,
        *,
        user: str | None = None,
        password: str | None = None,
        actor: str = "admin",
    ) -> Result:
        """Find the token again from two consecutive codes over the wide sync window (HOTP: the next
        ``hotp_sync_window`` counters; TOTP: ± ``totp_sync_seconds``) and clear its fail count.

        As admin (no ``user``) it also unlocks the token. As self-service (``user`` and ``password``)
        the password must be right, the token must be the user's and not locked, and failures count.
        """
        serial = _serial(serial)
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
        if self_service:
            if password is None:
                raise BadInput("self-service resync needs the user's password")
            if owner is None or owner.id != urow.id:
                raise TokenStateError(f"token {serial} does not belong to user {user!r}")
            if rules.throttled(urow.rl_start, urow.rl_count, now, self.policy):
                return self._fail(urow, (), now, "token-resync", "throttled", serial, count_user=False)
            if rules.is_locked(tok.fail_count, tok.locked_until, now, self.policy):
                return self._fail(urow, (), now, "token-resync", "locked", serial)
            if not self._pw.verify(urow.password_hash, password):
                return self._fail(urow, (), now, "token-resync", "wrong-password", serial)
        who = urow.name if self_service else actor
        name = owner.name if owner is not None else None
        for _ in range(_CAS_TRIES):
            key = self._key(tok)
            if tok.mode == "hotp":
                n = rules.hotp_resync(key, tok.counter, code1, code2, self.policy.hotp_sync_window)
                new = None if n is None else ("counter", n)
            else:
                r = rules.totp_resync(
                    key, now, tok.period, tok.last_step, code1, code2, self.policy.totp_sync_seconds
                )
                new = None if r is None else ("step", r[0], r[1])
            if new is None:
                if self_service:
                    return self._fail(urow, (tok.id,), now, "token-resync", "wrong-code", serial)

                def run_fail(conn):
                    _audit(conn, now, who, "token-resync", "fail", name, serial, "codes not found")

                db.write(self._engine, run_fail)
                return Result(False, name or "", "wrong-code", serial)

            def run(conn, tok=tok, new=new):
                guard_ok = self._cas(conn, tok, new, now, unlock=not self_service)
                if guard_ok:
                    detail = f"drift {new[2]:+d} steps" if new[0] == "step" else None
                    _audit(conn, now, who, "token-resync", "ok", name, serial, detail)
                return guard_ok

            if db.write(self._engine, run):
                return Result(True, name or "", "ok", serial)
            with db.read(self._engine) as conn:
                tok = self._token(conn, serial)
        raise DatabaseError("too much contention on token " + serial)

    # -- audit -----------------------------------------------------------------------------------------

    def audit(
        self,
        *,
        user: str | None = None,
        serial: str | None = None,
        action: str | None = None,
        limit: int | None = 100,
    ) -> list[AuditInfo]:
        """Audit rows, newest first."""
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
        return [AuditInfo(r.ts, r.actor, r.action, r.user_name, r.serial, r.result, r.detail) for r in rows]
