"""Enrolment and a token's life cycle: link (proving possession), unlink, disable, enable, unlock,
revoke, lost, drift reset."""

from __future__ import annotations

from . import db, modes, rules, throttle
from .attempts import _Attempt
from .core import _CAS_TRIES, _audit, _end_web_sessions, _serial, log
from .errors import BadInput, DatabaseError, TokenStateError, UnknownToken
from .results import Result


class Enrolment:
    """Linking tokens to users and moving them through their states."""

    def link(
        self,
        name: str,
        serial: str,
        code: str,
        *,
        description: str | None = None,
        actor: str = "admin",
        counted: bool = False,
        source: str | None = None,
    ) -> Result:
        """Link an inventory token to a user, proving possession with its current code.

        Linking turns 2FA on for the user. A wrong code counts as a failure on the token.
        ``counted=True`` (self-service, e.g. the web, after a re-authentication that took the
        throttle's gate): a failure (an unknown or used serial, a wrong code) also counts on the
        user's throttle key and ``source``'s, as a failed login does."""
        if not counted:
            return self._link(name, serial, code, description, actor)
        try:
            r = self._link(name, serial, code, description, actor)
        except (UnknownToken, TokenStateError):
            self._count_failure(name, source)
            raise
        if not r.accepted:
            self._count_failure(name, source)
        return r

    def _count_failure(self, name: str, source: str | None) -> None:
        if self.policy.user_rate_limit == 0:
            return
        att, now = self._attempt(name, None, source), self._clock()

        def run(conn):
            for key in (k for k in (att.source, att.ukey) if k is not None):
                throttle.note_failure(conn, key, now, self.policy)

        db.write(self._engine, run)

    def _link(self, name: str, serial: str, code: str, description: str | None, actor: str) -> Result:
        from sqlalchemy import update

        from .models import user_table as _U

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
                extra |= modes.of(tok).synced(new)
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
        from sqlalchemy import select, update

        from .models import token_table as _T
        from .models import user_table as _U

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
        """Refuse the token's codes at once, end its owner's web sessions (one may be the finder's)
        and give the owner fresh backup codes (returned once)."""
        from .models import user_table as _U

        def extra(conn, tok, name, now):
            _end_web_sessions(conn, _U.c.id == tok.user_id)
            return self._new_backup_codes(conn, tok.user_id, name, now, actor)

        return self._set_state(serial, "token-lost", ("active", "disabled"), {"state": "lost"}, actor, extra)
