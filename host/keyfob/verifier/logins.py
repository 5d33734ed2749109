"""Logins: ``verify`` (password and code) and ``check_code`` (the code alone), from the attempt's start
(the user loaded and the throttle reserved) to its accept or refusal.

Write transactions (all through :mod:`.sql`, so on stdlib sqlite3 for a SQLite file): a
``check_code`` is **one** in every outcome (load, throttle and token reservations, match,
compare-and-set, give-back, audit row); a ``verify`` is one before the Argon2 hash (load, throttle
reservation) and one after it (token reservation, match, compare-and-set, give-back, audit row),
never one held across the hash. The reservations' ``UPDATE ... RETURNING`` gives the token as it is
under its row lock, so what is matched is never a stale read (PostgreSQL, READ COMMITTED)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from keyfob.params import RECORDS

from . import modes, rules, steps, throttle
from .attempts import TOKEN_COLS, _Attempt, _tok
from .core import _CAS_TRIES, _audit, _utf8
from .errors import BadInput, DatabaseError
from .results import THROTTLED, Result
from .steps import Hash, Write

_LOAD_SQL = (
    "SELECT u.id, u.name, u.password_hash, u.twofa,"
    " (SELECT count(*) FROM backup_codes b WHERE b.user_id = u.id AND b.used_at IS NULL),"
    + ", ".join("t." + c for c in TOKEN_COLS)
    + " FROM users u LEFT OUTER JOIN tokens t ON t.user_id = u.id AND t.state = 'active'"
    " WHERE u.name = :name ORDER BY t.id"
)
_REREAD_SQL = "SELECT " + ", ".join(TOKEN_COLS) + " FROM tokens WHERE id = :id"


@dataclass(frozen=True, slots=True)
class _User:
    """The user a login names, as loaded."""

    id: int
    name: str
    password_hash: str
    twofa: bool


class Logins:
    """``verify`` and ``check_code``: load the user, reserve, check, commit or refuse."""

    def _replayed(self, tok, code: str, now: float, warm=None) -> bool:
        """True if ``code`` is one the token already used (just before its next counter, or at or
        before its last step, within the window): a replay, not a guess."""
        return modes.of(tok).replayed(self._warm_key(tok, warm), tok, code, now, self.policy)

    #: user names whose last accepted token this process remembers (for :meth:`_warm`)
    _HINTS_MAX = 10_000

    def _warm(self, name: str, code: str, now: float):
        """Before the deciding transaction: the code's window computed where this process last saw
        the user's token go (its last accepted login here), so that the transaction, which holds
        the database's write lock, finds it done. Only a guess: what is matched is the row read
        under the lock, and any other window is computed there (:class:`keyfob.otp.WarmKey`)."""
        hint = self._hints.get(name)
        if hint is None or hint.digits != len(code):
            return None
        key = self._key(hint).warm()
        modes.of(hint).match(key, hint, code, now, self.policy)
        return {hint.id: (hint.seed, key)}

    def _remember(self, name: str, tok, move) -> None:
        """Where an accepted login moved the token (``_warm``'s guess for the next one)."""
        if len(self._hints) >= self._HINTS_MAX:
            self._hints.clear()
        changes = {move.column: move.value}
        if move.drift is not None:
            changes["drift"] = move.drift
        self._hints[name] = replace(tok, **changes)

    # -- validation -------------------------------------------------------------------------------------
    #
    # What a relying party learns: accept or reject. Every refusal of ``verify`` and ``check_code``
    # is a ``Result`` with ``accepted=False`` (never an exception that names a cause: unknown user,
    # malformed code, user without 2FA given a code, disabled or locked token, wrong password or
    # code, replay, throttled); its ``reason`` is for the audit log and for an admin who asks
    # (:meth:`explain`, ``keyfob validate --explain``), and a front must not pass it on. Every
    # ``verify`` that is checked costs the same number of Argon2 verifications for every user and
    # every cause (:meth:`_shape_cost`: the field's shape alone), padded with verifications against
    # a fixed dummy hash. One refused by its source's back-off costs none, for anyone: a flood must be
    # refused before any Argon2 work (or it would buy the attacker the server's CPU). One refused by
    # the user name's back-off (a user without 2FA) is padded as a checked one is, and counts on its
    # source as a failure, so its time does not tell that user from an unknown name (see .throttle).

    def _load(self, conn, name: str) -> tuple[_User | None, list, bool]:
        """The user (None: no such user), their active tokens and whether they have unused backup
        codes: one query, in the caller's transaction."""
        rows = conn.execute(_LOAD_SQL, {"name": name}).all()
        if not rows:
            return None, [], False
        r0 = rows[0]
        user = _User(r0[0], r0[1], r0[2], bool(r0[3]))
        return user, [_tok(r[5:]) for r in rows if r[5] is not None], r0[4] > 0

    def _tokens_in(self, conn, att: _Attempt, tokens, code: str, now: float, reserved=None, warm=None) -> Result:
        """Check ``code`` against the user's active tokens of its length and commit the match (CAS),
        inside the attempt's deciding write transaction, which holds its throttle rows already.

        Only tokens reserved by :meth:`_reserve_in` are checked, as the reservation returned them
        (``reserved``: if the caller reserved them already, else reserved here); a wrong code leaves
        the reservations counted as failures, a replayed one (:meth:`_replayed`) gives them back."""
        cand = [t for t in tokens if t.digits == len(code)]
        if not cand:
            return self._refuse_in(conn, att, now, "validate", "no-token")
        # past its ExpiryDate (inclusive, as at import): never checked, whatever the code
        live = [t for t in cand if t.expires_at is None or now <= t.expires_at]
        if not live:
            return self._refuse_in(conn, att, now, "validate", "expired", cand[0].serial)
        live_ids = {t.id for t in live}
        if reserved is None:
            open_ = self._open_tokens(live, now)
            reserved = self._reserve_in(conn, open_, now) if open_ else []
        if not reserved:
            return self._refuse_in(conn, att, now, "validate", "locked", cand[0].serial)
        ids = [t.id for t in reserved]
        mine = [t for t in reserved if t.id in live_ids and t.digits == len(code)]
        for _ in range(_CAS_TRIES):
            hit = None
            for t in mine:
                new = self._match(t, code, now, warm)
                if new is not None:
                    hit = (t, new)
                    break
            if hit is None:
                serial = mine[0].serial if len(mine) == 1 else None
                replay = next((t for t in mine if self._replayed(t, code, now, warm)), None)
                if replay is not None:
                    return self._replay_in(conn, att, ids, replay.serial, now)
                return self._refuse_in(conn, att, now, "validate", "wrong-code", serial)
            tok, new = hit
            if self._cas(conn, tok, new, now):
                self._give_back(conn, att, [i for i in ids if i != tok.id])
                self._audit_accepted(conn, att, now, tok.serial)
                self._remember(att.user.name, tok, new)
                return Result(True, att.user.name, "ok", tok.serial)
            # The row moved since it was read (not under its reservation's lock): read it again in
            # this transaction, with the reservations the attempt already holds (never a second one).
            mine = [_tok(r) for t in mine for r in conn.execute(_REREAD_SQL, {"id": t.id}).all()]
        raise DatabaseError(f"too much contention on the tokens of user {att.user.name!r}")

    def _replay_in(self, conn, att: _Attempt, reserved, serial: str, now: float) -> Result:
        """A code the token already used, sent again (a double click, a retrying client): refused and
        audited as ``replay``, and not a failure: every reservation of the attempt is given back."""
        self._give_back(conn, att, reserved)
        _audit(conn, now, **self._row(att, "validate", "replay", serial))
        return Result(False, att.user.name, "replay", serial)

    def _code_kind(self, code: str, tokens, has_backup: bool) -> tuple[str, str]:
        """``("otp", code)`` or ``("backup", normalised)``; :class:`BadInput` for anything else."""
        if has_backup:
            b = modes.BACKUP.parse(code)
            if b is not None:
                return "backup", b
        lengths = {t.digits for t in tokens} or set(RECORDS.digits)
        return "otp", rules.check_code_format(code, lengths)

    def _begin_in(self, conn, name: str, keys, now: float, prepare, checked_in_backoff, via=None, padded=False):
        """Begin an attempt inside a write transaction: load the user and their active tokens, let
        ``prepare(user, tokens, has_backup)`` make the plan and name the tokens to reserve, and
        reserve the attempt on the throttle (source key, then user key: ``keys``, from
        :meth:`_attempt_keys`) and on those tokens.

        A source in back-off refuses the attempt unchecked; a user in back-off too, unless
        ``checked_in_backoff(plan)`` (a two-factor login, see :mod:`.throttle`). A throttled attempt
        is audited (aggregated) in the same transaction and gets ``plan`` None. Refused by the
        user's back-off, it is not a failure of its source, unless it is ``padded`` (it will cost
        the Argon2 work of a checked attempt, so it counts on its source as one does).

        Returns ``(attempt, tokens, plan, reserved_tokens)`` (the tokens as reserved)."""
        p = self.policy
        user, tokens, has_backup = self._load(conn, name)
        plan, to_reserve = prepare(user, tokens, has_backup)
        att = _Attempt(name, user, *keys, via=via)
        if p.user_rate_limit > 0:
            if att.source is not None:
                if not throttle.reserve(conn, att.source, now, p):
                    throttle.aggregate(conn, att.source, now, self._row(att, "validate", THROTTLED))
                    att.throttled_by = "source"
                    return att, tokens, None, []
                att.keys.append(att.source)
            if throttle.reserve(conn, att.ukey, now, p):
                att.keys.append(att.ukey)
            elif checked_in_backoff(plan):
                att.backoff = True
            else:
                if not padded:
                    for key in att.keys:
                        throttle.release(conn, key)  # refused unchecked: not a failure of the source
                throttle.aggregate(conn, att.ukey, now, self._row(att, "validate", THROTTLED))
                att.throttled_by = "user"
                return att, tokens, None, []
        self._maybe_prune(conn, now)
        return att, tokens, plan, self._reserve_in(conn, to_reserve, now) if to_reserve else []

    @staticmethod
    def _throttled(att: _Attempt) -> Result:
        return Result(False, att.user.name if att.user else "", THROTTLED)

    def _bad_text(self, now: float, *values):
        """Steps: invalid UTF-8 in a login is audited (naming no one), then :class:`BadInput`;
        nothing else is written and no throttle slot is used."""
        try:
            _utf8(*values)
        except BadInput:
            yield Write(lambda conn: _audit(conn, now, "unknown", "validate", "fail", detail="invalid UTF-8"))
            raise

    def _run(self, login) -> Result:
        """A login's steps, run here (see :mod:`.steps`); its commits synced once, at its end."""
        return steps.run(login, self._write_unsynced, self._pw.verify, synced=self._db.sync)

    def _write_unsynced(self, fn):
        return self._db.write(fn, sync=False)

    def _refuse_steps(self, att: _Attempt, now, reason, serial=None):
        """Steps of :meth:`_refuse` for a login: its audit row in a transaction of its own."""
        result = yield Write(lambda conn: self._refuse_in(conn, att, now, "validate", reason, serial))
        return self._logged("validate", result)

    def check_code(self, name: str, code: str, *, source: str | None = None, via: str | None = None) -> Result:
        """Validate a code alone, *without any password check*. Also takes a backup code.

        This is for a stack that has already checked the password earlier (e.g. pam_unix before a
        keyfob PAM module): wrong codes count against the user's tokens, so this must not be
        reachable by anyone who has not passed that check (see :mod:`.throttle`). Every refusal is a
        Result (see "What a relying party learns" above); only text that is not UTF-8 raises
        :class:`BadInput`. ``source``: where the attempt came from, if the front knows (an address).

        One write transaction, whatever the outcome (see the module's docstring)."""
        return self._run(self.check_code_steps(name, code, source=source, via=via))

    def check_code_steps(self, name: str, code: str, *, source: str | None = None, via: str | None = None):
        """:meth:`check_code` as steps (:mod:`.steps`), for a front that runs them itself."""
        now = self._clock()
        yield from self._bad_text(now, name, code)

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

        keys = self._attempt_keys(name, source)
        warm = self._warm(name, code, now)

        def run(conn):
            att, tokens, plan, reserved = self._begin_in(conn, name, keys, now, prepare, lambda plan: False, via)
            if plan is None:
                return self._throttled(att)
            if len(plan) == 1:
                return self._refuse_in(conn, att, now, "validate", plan[0])
            kind, c = plan
            if kind == "backup":
                return self._backup_in(conn, att, c, now)
            return self._tokens_in(conn, att, tokens, c, now, reserved, warm)

        if self._before_write is not None:
            self._before_write()
        return self._logged("validate", (yield Write(run)))

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
        return self._run(self.verify_steps(name, password, code, source=source, via=via, reauth=reauth))

    def verify_steps(
        self,
        name: str,
        password: str,
        code: str | None = None,
        *,
        source: str | None = None,
        via: str | None = None,
        reauth: bool = False,
    ):
        """:meth:`verify` as steps (:mod:`.steps`), for a front that runs them itself."""
        if not isinstance(password, str) or not isinstance(name, str):
            raise BadInput("a user name and a password are required")
        now = self._clock()
        yield from self._bad_text(now, name, password, code)

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
        dummy = self._pw.dummy_hash
        try:
            keys = self._attempt_keys(name, source)
            att, tokens, plan, _ = yield Write(
                lambda conn: self._begin_in(conn, name, keys, now, prepare, checked, via, padded=True)
            )
            if plan is None:
                # Refused unchecked. By the source's back-off: no Argon2 work, whoever the name is
                # (the source is the attacker's own). By the name's: padded as a checked attempt
                # is, and counted on its source as one is, or its time would tell a user without
                # 2FA (refused here) from a two-factor user or no one (both checked in back-off).
                spent = None if att.throttled_by == "source" else 0
                return self._logged("validate", self._throttled(att))
            user = att.user
            spent = 1
            if plan[0] == "unknown-user":
                yield Hash(dummy, password)
                return (yield from self._refuse_steps(att, now, "unknown-user"))
            if plan[0] == "password-only":
                return (yield from self._password_only(att, password, now))
            if plan[0] != "candidates":
                yield Hash(user.password_hash, password)
                return (yield from self._refuse_steps(att, now, plan[0]))
            spent = 0
            for pw, kind, c in plan[1]:
                spent += 1
                if (yield Hash(user.password_hash, pw)):
                    return (yield from self._second_factor(att, tokens, kind, c, now))
            return (yield from self._refuse_steps(att, now, "wrong-password"))
        finally:
            for _ in range(0 if spent is None else self._shape_cost(password, code) - spent):
                yield Hash(dummy, password)

    def _second_factor(self, att: _Attempt, tokens, kind: str, code: str, now: float):
        """``verify``'s second write transaction, once the password was right: the attempt's throttle
        rows first (the order every transaction takes them in), then the code (a token's, reserved
        and matched here, or a backup code), its compare-and-set, give-back and audit row."""

        warm = self._warm(att.user.name, code, now) if kind == "otp" else None

        def run(conn):
            self._lock_keys(conn, att)
            if kind == "backup":
                return self._backup_in(conn, att, code, now)
            return self._tokens_in(conn, att, tokens, code, now, warm=warm)

        if self._before_write is not None:
            self._before_write()
        return self._logged("validate", (yield Write(run)))

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

    def _password_only(self, att: _Attempt, password: str, now: float):
        user = att.user
        if not (yield Hash(user.password_hash, password)):
            return (yield from self._refuse_steps(att, now, "wrong-password"))

        def run(conn):
            self._give_back(conn, att, ())
            self._audit_accepted(conn, att, now, detail="password only (2fa off)")

        yield Write(run)
        return Result(True, user.name, "password")
