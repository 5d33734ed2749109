"""Creating and opening a verifier database, and the shared policy stored in it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from . import db, rules, sql
from .core import _audit
from .crypto import SeedBox, resolve_key
from .errors import AlreadyExists, BadInput, DatabaseError, KeyFileError
from .rules import Policy

if TYPE_CHECKING:
    from .service import Verifier

_KEY_CHECK = "key_check"
_POLICY = "policy"
_SETTINGS_SQL = "SELECT name, value FROM settings WHERE name IN ('key_check', 'policy')"


def _policy_blob(policy: Policy) -> bytes:
    return json.dumps(policy.shared(), sort_keys=True).encode("ascii")


def _policy_from_blob(blob, base: Policy) -> Policy:
    """``base`` with the shared fields stored in the database (none stored: the defaults)."""
    if blob is None:
        return base.with_shared(Policy().shared())
    try:
        values = json.loads(bytes(blob).decode("ascii"))
        if not isinstance(values, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise DatabaseError("the stored policy is damaged (fix it with `keyfob server config --set`)") from None
    try:
        return base.with_shared({**Policy().shared(), **values})
    except BadInput as exc:
        raise DatabaseError(f"the stored policy is not valid: {exc}") from None


class Opening:
    """``Verifier.init``, ``Verifier.open`` and ``set_policy``."""

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
        """Create the schema (through the migrations) and the key file (0600) if it does not exist.

        The shared fields of ``policy`` (:data:`keyfob.verifier.rules.SHARED`) are stored in the
        database, so every node that opens it applies them."""
        from sqlalchemy import insert

        from .models import setting_table as _S

        policy = policy or Policy()
        store = sql.open_store(database, must_exist=False)
        try:
            engine = store.engine()
            with db.opening(database):
                if db.has_tables(engine):
                    raise AlreadyExists(f"database {db.display(database)} is already initialised")
                box = SeedBox(key if key is not None else resolve_key(key_file, create=True))
                db.upgrade(engine)
                now = clock()

                def run(conn):
                    conn.execute(insert(_S), {"name": _KEY_CHECK, "value": box.key_check()})
                    conn.execute(insert(_S), {"name": _POLICY, "value": _policy_blob(policy)})
                    _audit(conn, now, actor, "server-init", "ok", detail="schema " + db.head_revision())

                db.write(engine, run)
        except Exception:
            store.close()
            raise
        return cls(store, box, policy, clock)

    @classmethod
    def open(
        cls,
        database,
        *,
        key: bytes | None = None,
        key_file=None,
        policy: Policy | None = None,
        password_profile: str | None = None,
        clock: Callable[[], float] = time.time,
        lock_wait: float | None = None,
        serving: bool = False,
    ) -> Verifier:
        """Open an initialised database, upgrading an older schema, and check the key against it.

        The policy is the one stored in the database (the defaults for a database made before the
        policy was stored). ``policy``, if given, must agree with it on the shared fields (so no
        node runs with limits of its own); its local fields (``password_profile``,
        ``backup_codes``) are used. ``password_profile`` alone overrides just that field.
        ``lock_wait``: seconds a write waits for another process's lock before :class:`DatabaseBusy`
        (default ``$KEYFOB_DB_WAIT`` or 5). ``serving``: for a front that runs for hours (the HTTP
        and RADIUS servers): on a SQLite file, WAL checkpoints run on a thread of their own
        instead of inside a login's commit (:mod:`.checkpoints`)."""
        store = sql.open_store(database, must_exist=True, wait=lock_wait, serving=serving)
        try:
            with sql.opening(database):
                rows = cls._open_rows(store, database)
                box = SeedBox(key if key is not None else resolve_key(key_file))
            check = rows.get(_KEY_CHECK)
            if check is None or not box.verify_key_check(bytes(check)):
                raise KeyFileError("the key does not belong to this database (wrong key file?)")
            stored = _policy_from_blob(rows.get(_POLICY), policy or Policy())
            if policy is not None and policy.shared() != stored.shared():
                diff = [k for k in stored.shared() if stored.shared()[k] != policy.shared()[k]]
                raise BadInput(
                    f"the policy given differs from the database's in {', '.join(diff)}; "
                    "change it for every node with `keyfob server config --set`"
                )
            if password_profile is not None:
                stored = replace(stored, password_profile=password_profile)
        except Exception:
            store.close()
            raise
        return cls(store, box, stored, clock)

    @staticmethod
    def _open_rows(store, database) -> dict:
        """The schema checked (upgraded through Alembic if older), then the key check and the policy
        from ``settings``. A current SQLite file is read through the stdlib driver alone."""
        if isinstance(store, sql.SqliteStore):
            with store.read() as conn:
                rev = sql.sqlite_revision(conn)
        else:
            rev = db.current_revision(store.engine())
        if rev is None:
            raise DatabaseError(f"{db.display(database)} is not a keyfob database (run `keyfob server init`)")
        if rev != db.head_revision():
            db.upgrade(store.engine())
        with store.read() as conn:
            return {name: value for name, value in conn.execute(_SETTINGS_SQL).all()}

    def set_policy(self, changes: dict, *, actor: str = "admin") -> Policy:
        """Change shared policy settings (names in :data:`keyfob.verifier.rules.SHARED`) for every node
        using this database, audited with the old and new values. Other nodes apply them when they
        next open the database. Returns the new policy."""
        from sqlalchemy import insert, select, update

        from .models import setting_table as _S

        if not changes:
            raise BadInput("no setting to change")
        now = self._clock()

        def run(conn):
            blob = conn.execute(select(_S.c.value).where(_S.c.name == _POLICY)).scalar()
            old = _policy_from_blob(blob, self.policy)
            new = old.with_shared(changes)
            if blob is None:
                conn.execute(insert(_S), {"name": _POLICY, "value": _policy_blob(new)})
            else:
                conn.execute(update(_S).where(_S.c.name == _POLICY).values(value=_policy_blob(new)))
            for k in rules.SHARED:
                a, b = old.shared()[k], new.shared()[k]
                if a != b:
                    _audit(conn, now, actor, "server-config", "ok", detail=f"{k} {a} -> {b}"[:200])
            return new

        self.policy = db.write(self._engine, run)
        return self.policy
