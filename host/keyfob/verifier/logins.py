"""Logins: ``verify`` (password and code) and ``check_code`` (the code alone), from the attempt's start
(the user loaded and the throttle reserved in one transaction) to its accept or refusal."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from keyfob.params import RECORDS

from . import db, modes, rules, throttle
from .attempts import _Attempt
from .core import _CAS_TRIES, _audit, _utf8, log
from .errors import BadInput, DatabaseError
from .results import THROTTLED, Result

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
    "expires_at",
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
    expires_at: float | None


class Logins:
    """``verify`` and ``check_code``: load the user, reserve, check, commit or refuse."""

    def _replayed(self, tok, code: str, now: float) -> bool:
        """True if ``code`` is one the token already used (just before its next counter, or at or
        before its last step, within the window): a replay, not a guess."""
        return modes.of(tok).replayed(self._key(tok), tok, code, now, self.policy)

    # -- validation -------------------------------------------------------------------------------------
    #
    # What a relying party learns: accept or reject. Every refusal of ``verify`` and ``check_code``
    # is a ``Result`` with ``accepted=False`` (never an exception that names a cause: unknown user,
    # malformed code, user without 2FA given a code, disabled or locked token, wrong password or
    # code, replay, throttled); its ``reason`` is for the audit log and for an admin who asks
    # (:meth:`explain`, ``keyfob validate --explain``), and a front must not pass it on. Every
    # ``verify`` that is checked costs the same number of Argon2 verifications for every user and
    # every cause (:meth:`_shape_cost`: the field's shape alone), padded with verifications against
    # a fixed dummy hash. A throttled one costs none, for anyone: a flood must be refused before any
    # Argon2 work (or it would buy the attacker the server's CPU), at the price that a user without
    # 2FA who is in back-off answers faster than an unknown name (checked, like any two-factor login).

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
        tokens = [_Tok(*r[5:11], bytes(r[11]), *r[12:20]) for r in rows if r[5] is not None]
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
        # past its ExpiryDate (inclusive, as at import): never checked, whatever the code
        live = [t for t in cand if t.expires_at is None or now <= t.expires_at]
        if not live:
            return self._refuse(att, now, "validate", "expired", cand[0].serial)
        cand, live_ids = live, {t.id for t in live}
        if reserved is None:
            open_ = self._open_tokens(cand, now)
            reserved = self._reserve(open_, now) if open_ else []
        if not reserved:
            return self._refuse(att, now, "validate", "locked", cand[0].serial)
        for _ in range(_CAS_TRIES):
            mine = [t for t in tokens if t.id in reserved and t.id in live_ids and t.digits == len(code)]
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
                self._audit_accepted(conn, att, now, tok.serial)
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
            b = modes.BACKUP.parse(code)
            if b is not None:
                return "backup", b
        lengths = {t.digits for t in tokens} or set(RECORDS.digits)
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
        self,
        name: str,
        password: str,
        code: str | None = None,
        *,
        source: str | None = None,
        via: str | None = None,
        reauth: bool = False,
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

        ``reauth=True``: a re-authentication by a user already signed in (a web form behind a
        session), refused unchecked while the user is in back-off even with two factors (a stranger
        cannot reach it, so refusing keeps no one out; checking it would let a taken-over session
        test passwords at any rate, see :mod:`.throttle`).
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
        checked = (lambda plan: False) if reauth else two_factor  # noqa: E731
        spent = 0  # Argon2 verifications made; padded to the field's shape's number (see _shape_cost)
        try:
            att, tokens, plan, _ = self._start(name, source, now, prepare, checked, via)
            if plan is None:
                spent = None  # refused unchecked: no Argon2 work, whoever it is
                return Result(False, att.user.name if att.user else "", THROTTLED)
            user = att.user
            spent = 1
            if plan[0] == "unknown-user":
                self._pw.verify_dummy(password)
                return self._refuse(att, now, "validate", "unknown-user")
            if plan[0] == "password-only":
                return self._password_only(att, password, now)
            if plan[0] != "candidates":
                self._pw.verify(user.password_hash, password)
                return self._refuse(att, now, "validate", plan[0])
            spent = 0
            for pw, kind, c in plan[1]:
                spent += 1
                if self._pw.verify(user.password_hash, pw):
                    if kind == "backup":
                        return self._try_backup(att, c, now)
                    return self._check_tokens(att, tokens, c, now)
            return self._refuse(att, now, "validate", "wrong-password")
        finally:
            for _ in range(0 if spent is None else self._shape_cost(password, code) - spent):
                self._pw.verify_dummy(password)

    @staticmethod
    def _shape_cost(password: str, code: str | None) -> int:
        """How many Argon2 verifications a login costs: from the field's shape alone (every split any
        token length or a backup code could make), never from who the user is, whether they have 2FA,
        tokens or backup codes; so the time of a checked login tells none of that."""
        if code is not None:
            return 1
        return max(1, len(rules.split_field(password, set(RECORDS.digits))) + len(modes.BACKUP.split(password)))

    def _login_candidates(self, password: str, code: str | None, tokens, has_backup: bool) -> list:
        """``[(password, "otp"|"backup", code), ...]`` to try; :class:`BadInput` for malformed input."""
        if code is not None:
            return [(password,) + self._code_kind(code, tokens, has_backup)]
        candidates = [(p, "otp", c) for p, c in rules.split_field(password, {t.digits for t in tokens})]
        if has_backup:
            candidates += [(p, "backup", c) for p, c in modes.BACKUP.split(password)]
        if not candidates and (tokens or has_backup):
            raise BadInput("no code at the end of the field")
        return candidates  # empty: nothing to check a code against, refused (audited) as no-token

    def _password_only(self, att: _Attempt, password: str, now: float) -> Result:
        user = att.user
        if not self._pw.verify(user.password_hash, password):
            return self._refuse(att, now, "validate", "wrong-password")

        def run(conn):
            self._give_back(conn, att, ())
            self._audit_accepted(conn, att, now, detail="password only (2fa off)")

        db.write(self._engine, run)
        return Result(True, user.name, "password")
