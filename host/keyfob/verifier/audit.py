"""The audit log: listing, an admin's explanation of a login, retention."""

from __future__ import annotations

from . import db, sql, throttle
from .core import _audit, _serial
from .errors import BadInput
from .results import AuditInfo

#: prune the audit log (``audit_days``) and stale throttle rows at most this often per process
_PRUNE_EVERY = 3600.0


def _audit_info(r) -> AuditInfo:
    return AuditInfo(r.ts, r.actor, r.action, r.user_name, r.serial, r.result, r.detail, r.count, r.source, r.via)


class Audit:
    """``audit``, ``explain`` and ``prune_audit`` (and the prune on write)."""

    def explain(self, name: str) -> AuditInfo | None:
        """Why the last login attempt naming ``name`` ended as it did (its audit row), for an admin:
        the reason a relying party is never told. Also finds an unknown name's attempts (recorded by
        the name's keyed hash, never the name). None if there is none."""
        from sqlalchemy import select

        from .models import audit_table as _A

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
        from sqlalchemy import select

        from .models import audit_table as _A

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
        cut = now - self.policy.audit_days * 86400.0
        return sql.of(conn).execute("DELETE FROM audit WHERE ts < :cut", {"cut": cut}).rowcount

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
