"""Backup codes: made (shown once, kept as keyed hashes) and used once."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update

from . import db, modes
from .attempts import _Attempt
from .core import _B, _audit
from .errors import BadInput
from .results import Result


class BackupCodes:
    """``new_backup_codes`` and the single use of one in a login."""

    def _new_backup_codes(self, conn, user_id, name, now, actor, count=None) -> list[str]:
        codes = [modes.BACKUP.new() for _ in range(count or self.policy.backup_codes)]
        conn.execute(delete(_B).where(_B.c.user_id == user_id, _B.c.used_at.is_(None)))
        for c in codes:
            conn.execute(
                insert(_B),
                {
                    "user_id": user_id,
                    "created": now,
                    "used_at": None,
                    "code_hash": self._box.backup_hash(user_id, modes.BACKUP.parse(c)),
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
                select(_B.c.id, _B.c.code_hash).where(
                    _B.c.user_id == user.id,
                    _B.c.used_at.is_(None),
                    _B.c.expires_at.is_(None) | (_B.c.expires_at > now),  # a temporary code's day (0008)
                )
            ).all()
        hit = modes.BACKUP.find(rows, want)
        if hit is not None:

            def run(conn):
                self._lock_keys(conn, att)
                res = conn.execute(update(_B).where(_B.c.id == hit, _B.c.used_at.is_(None)).values(used_at=now))
                if res.rowcount != 1:
                    return False
                self._give_back(conn, att, ())
                self._audit_accepted(conn, att, now, detail="backup-code")
                return True

            if db.write(self._engine, run):
                return Result(True, user.name, "backup-code")
        return self._refuse(att, now, "validate", "wrong-backup-code")
