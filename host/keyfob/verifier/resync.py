"""Resynchronisation: finding a token again from two consecutive codes (narrow, or wide for an admin)."""

from __future__ import annotations

from . import db, modes, rules
from .attempts import _Attempt
from .core import _CAS_TRIES, _audit, _serial, _utf8
from .errors import BadInput, DatabaseError, TokenStateError
from .results import THROTTLED, Result


class Resync:
    """``resync``: admin or self-service."""

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
        from sqlalchemy import select

        from .models import user_table as _U

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
        for _ in range(_CAS_TRIES):
            mode = modes.of(tok)
            new = mode.resync(self._key(tok), tok, code1, code2, now, self.policy, wide)
            if new is None:
                if self_service:  # the token's reservation stays counted as a failure
                    return self._refuse(att, now, "token-resync", "wrong-code", serial)

                def run_fail(conn):
                    _audit(conn, now, who, "token-resync", "fail", name, serial, "codes not found")

                db.write(self._engine, run_fail)
                return Result(False, name or "", "wrong-code", serial)

            def run(conn, tok=tok, new=new, mode=mode):
                extra = mode.synced(new) or None
                if self_service:
                    self._lock_keys(conn, att)
                if not self._cas(conn, tok, new, now, extra):
                    return False
                if self_service:
                    self._give_back(conn, att, ())
                detail = mode.detail(new)
                if wide:
                    detail = "wide search" + (f", {detail}" if detail else "")
                _audit(conn, now, who, "token-resync", "ok", name, serial, detail)
                return True

            if db.write(self._engine, run):
                return Result(True, name or "", "ok", serial)
            with db.read(self._engine) as conn:
                tok = self._token(conn, serial)
        raise DatabaseError("too much contention on token " + serial)
