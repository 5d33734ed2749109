"""Users: added, listed, their password and 2FA setting."""

from __future__ import annotations

from . import db, throttle
from .core import _audit, _check_name, _end_web_sessions
from .errors import AlreadyExists, UnknownUser
from .results import UserInfo


class Users:
    """The user administration."""

    def add_user(self, name: str, password: str, *, twofa: bool = True, actor: str = "admin") -> UserInfo:
        from sqlalchemy import insert, select

        from .models import user_table as _U

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
        """Set ``name``'s password; this also ends the user's throttle back-off and web sessions."""
        from sqlalchemy import delete, update

        from .models import throttle_table as _TH
        from .models import user_table as _U

        hashed = self._pw.hash(password)
        now = self._clock()

        def run(conn):
            self._user(conn, name)
            conn.execute(update(_U).where(_U.c.name == name).values(password_hash=hashed))
            _end_web_sessions(conn, _U.c.name == name)  # a session taken over ends with the old password
            # a new password ends the user's back-off (as it reset the old fixed window)
            conn.execute(delete(_TH).where(_TH.c.key == throttle.user_key(self._box.name_tag(name))))
            _audit(conn, now, actor, "user-passwd", "ok", name)

        db.write(self._engine, run)

    def set_twofa(self, name: str, enabled: bool, *, actor: str = "admin") -> None:
        from sqlalchemy import update

        from .models import user_table as _U

        now = self._clock()

        def run(conn):
            self._user(conn, name)
            conn.execute(update(_U).where(_U.c.name == name).values(twofa=enabled))
            _audit(conn, now, actor, "user-2fa-on" if enabled else "user-2fa-off", "ok", name)

        db.write(self._engine, run)

    def check_new_user(self, name: str) -> None:
        """Raise :class:`BadInput` or :class:`AlreadyExists` if ``name`` cannot be added (so a caller
        can refuse before asking for a password)."""
        from sqlalchemy import select

        from .models import user_table as _U

        _check_name(name)
        with db.read(self._engine) as conn:
            if conn.execute(select(_U.c.id).where(_U.c.name == name)).first() is not None:
                raise AlreadyExists(f"user {name!r} already exists")

    def user(self, name: str) -> UserInfo:
        """One user's listing; :class:`UnknownUser` if there is none."""
        for u in self.list_users(name):
            return u
        raise UnknownUser(name)

    def list_users(self, name: str | None = None) -> list[UserInfo]:
        from sqlalchemy import func, select

        from .models import backup_code_table as _B
        from .models import token_table as _T
        from .models import user_table as _U

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
