"""Backup codes: made (shown once, kept as keyed hashes) and used once."""

from __future__ import annotations

from . import db, modes, sql
from .attempts import _Attempt
from .core import _audit
from .errors import BadInput
from .results import Result


class BackupCodes:
    """``new_backup_codes`` and the single use of one in a login."""

    def _new_backup_codes(self, conn, user_id, name, now, actor, count=None) -> list[str]:
        from sqlalchemy import delete, insert

        from .models import backup_code_table as _B

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

    _UNUSED = (
        "SELECT id, code_hash FROM backup_codes WHERE user_id = :user_id AND used_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > :now)"  # a temporary code's day (0008)
    )
    _USE = "UPDATE backup_codes SET used_at = :now WHERE id = :id AND used_at IS NULL"

    def _backup_in(self, conn, att: _Attempt, code: str, now: float) -> Result:
        """Use one backup code (normalised) inside the login's write transaction, which holds the
        attempt's throttle rows already. Single use through ``UPDATE ... WHERE used_at IS NULL``."""
        conn = sql.of(conn)
        user = att.user
        want = self._box.backup_hash(user.id, code)
        hit = modes.BACKUP.find(conn.execute(self._UNUSED, {"user_id": user.id, "now": now}).all(), want)
        if hit is not None and conn.execute(self._USE, {"id": hit, "now": now}).rowcount == 1:
            self._give_back(conn, att, ())
            self._audit_accepted(conn, att, now, detail="backup-code")
            return Result(True, user.name, "backup-code")
        return self._refuse_in(conn, att, now, "validate", "wrong-backup-code")
