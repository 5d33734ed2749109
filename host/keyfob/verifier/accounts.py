"""What the web pages (:mod:`keyfob.web`) need of the verifier besides logins and token calls: the
help-desk flag on users, the session generation a sign-out bumps, when each token was added and
last used, a one-day temporary code, and the record of a help desk's identity check. Every change
is audited with its actor, as in :mod:`.service`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, insert, select, update

from . import db, rules, throttle
from .core import _end_web_sessions
from .errors import BadInput, UnknownUser
from .models import audit_table, backup_code_table, token_table, user_table
from .service import Verifier, _audit, check_name

_U = user_table
_T = token_table
_B = backup_code_table
_A = audit_table

#: how long a help desk's temporary code works
TEMPORARY_SECONDS = 86400.0
#: the longest identity-check note kept in the audit log
NOTE_MAX = 120
FIND_MAX = 20


@dataclass(frozen=True)
class Account:
    """What a session needs to know about its user, read on every request."""

    name: str
    twofa: bool
    admin: bool
    generation: int


@dataclass(frozen=True)
class TokenDates:
    added: float | None  # the last link of the token to its user
    last_used: float | None  # its last accepted login


class Accounts:
    """The web-facing account facts of one verifier database."""

    def __init__(self, verifier: Verifier):
        self._v = verifier
        self._engine = verifier._engine
        self._clock = verifier._clock

    def account(self, name: str) -> Account | None:
        with db.read(self._engine) as conn:
            r = conn.execute(
                select(_U.c.name, _U.c.twofa, _U.c.admin, _U.c.web_generation).where(_U.c.name == name)
            ).first()
        return None if r is None else Account(r.name, bool(r.twofa), bool(r.admin), r.web_generation)

    def set_admin(self, name: str, admin: bool, *, actor: str = "admin") -> None:
        """Give or take the help-desk pages; taking them also ends the user's web sessions."""
        now = self._clock()

        def run(conn):
            if conn.execute(select(_U.c.id).where(_U.c.name == name)).first() is None:
                raise UnknownUser(name)
            conn.execute(update(_U).where(_U.c.name == name).values(admin=admin))
            if not admin:
                _end_web_sessions(conn, _U.c.name == name)
            _audit(conn, now, actor, "user-admin-on" if admin else "user-admin-off", "ok", name)

        db.write(self._engine, run)

    def end_sessions(self, name: str, *, actor: str, source: str | None = None) -> None:
        """Sign ``name`` out everywhere: every session cookie made before this is refused from now on."""
        now = self._clock()

        def run(conn):
            if _end_web_sessions(conn, _U.c.name == name) != 1:
                raise UnknownUser(name)
            _audit(conn, now, actor, "web-signout", "ok", name, source=source, via="web")

        db.write(self._engine, run)

    def use_once(self, tag: str, until: float) -> bool:
        """True the first time ``tag`` is used (a sealed sign-in step, valid until ``until``), on
        every node; False ever after."""
        now = self._clock()
        return db.write(self._engine, lambda conn: throttle.use_once(conn, tag, now, until))

    def token_dates(self, name: str) -> dict[str, TokenDates]:
        """For each token of ``name``: when it was added (linked) and last used, from the audit log."""
        tokens = [t.serial for t in self._v.list_tokens(user=name)]
        if not tokens:
            return {}
        q = (
            select(_A.c.serial, _A.c.action, func.max(_A.c.ts))
            .where(
                _A.c.serial.in_(tokens),
                _A.c.user_name == name,
                _A.c.result == "ok",
                _A.c.action.in_(("token-link", "validate")),
            )
            .group_by(_A.c.serial, _A.c.action)
        )
        with db.read(self._engine) as conn:
            rows = conn.execute(q).all()
        seen = {(r[0], r[1]): r[2] for r in rows}
        return {s: TokenDates(seen.get((s, "token-link")), seen.get((s, "validate"))) for s in tokens}

    def find(self, text: str) -> list[str]:
        """User names starting with ``text`` (at most :data:`FIND_MAX`)."""
        text = text.strip()
        if not text:
            return []
        check_name(text)  # the name rule (and "_", which names may hold, is escaped for LIKE below)
        with db.read(self._engine) as conn:
            rows = conn.execute(
                select(_U.c.name).where(_U.c.name.startswith(text, autoescape=True)).order_by(_U.c.name).limit(FIND_MAX)
            ).all()
        return [r[0] for r in rows]

    def note_identity_check(self, name: str, how: str, note: str, *, actor: str, action: str) -> None:
        """Record, before a help-desk action, how the person asking was identified."""
        if not how.strip():
            raise BadInput("say how the person's identity was checked")
        if len(how) + len(note) > NOTE_MAX:
            raise BadInput(f"the identity check has at most {NOTE_MAX} characters")
        now = self._clock()
        detail = f"for {action}: {how.strip()}" + (f" ({note.strip()})" if note.strip() else "")

        def run(conn):
            if conn.execute(select(_U.c.id).where(_U.c.name == name)).first() is None:
                raise UnknownUser(name)
            _audit(conn, now, actor, "identity-check", "ok", name, detail=detail[:200], via="web")

        db.write(self._engine, run)

    def temporary_code(self, name: str, *, actor: str) -> tuple[str, float]:
        """A single-use code that logs ``name`` in (as a backup code does) for one day; returned once
        with its expiry time. The user's backup codes stay as they were."""
        now = self._clock()
        code = rules.new_backup_code()
        box = self._v._box

        def run(conn):
            row = conn.execute(select(_U.c.id).where(_U.c.name == name)).first()
            if row is None:
                raise UnknownUser(name)
            conn.execute(
                insert(_B),
                {
                    "user_id": row.id,
                    "created": now,
                    "used_at": None,
                    "expires_at": now + TEMPORARY_SECONDS,
                    "code_hash": box.backup_hash(row.id, rules.normalize_backup_code(code)),
                },
            )
            _audit(conn, now, actor, "temporary-code", "ok", name, detail="one code, one day", via="web")

        db.write(self._engine, run)
        return code, now + TEMPORARY_SECONDS
