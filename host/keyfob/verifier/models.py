"""The verifier's tables (SQLAlchemy Core). The schema itself is made by the Alembic migrations in
``migrations/versions``; these tables must describe the head revision.

Core ``Table`` objects, not ORM classes: the verifier only ever runs Core statements on them, and
``sqlalchemy.orm`` costs a quarter of SQLAlchemy's import again for every ``keyfob validate``.

Nothing secret is stored in clear: ``tokens.seed`` is AES-GCM sealed (see :mod:`.crypto`),
passwords are Argon2id hashes, backup codes are keyed hashes, and codes are never stored at all.
Times are Unix seconds (floats) so every engine stores them the same way.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    false,
)

from keyfob.serials import SERIAL_MAX

STATES = ("unassigned", "active", "disabled", "lost", "revoked")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


def _req(name: str, type_, *args, **kw) -> Column:
    """A NOT NULL column (Core columns are nullable unless told)."""
    return Column(name, type_, *args, nullable=False, **kw)


def _opt(name: str, type_, *args, **kw) -> Column:
    return Column(name, type_, *args, nullable=True, **kw)


#: key/value facts about this database (e.g. the sealed key check, the shared policy)
setting_table = Table(
    "settings",
    metadata,
    _req("name", String(64), primary_key=True),
    _req("value", LargeBinary),
)

user_table = Table(
    "users",
    metadata,
    _req("id", Integer, primary_key=True),
    _req("name", String(64), unique=True),
    _req("password_hash", String(255)),
    _req("twofa", Boolean, default=True),
    # rl_start, rl_count: unused since 0004 (the fixed per-user window gave way to ``throttle``)
    _opt("rl_start", Float),
    _req("rl_count", Integer, default=0),
    _req("created", Float),
    # may use the web help desk (added by 0008)
    _req("admin", Boolean, default=False, server_default=false()),
    # a web sign-out bumps it; sessions made under an older value are refused (added by 0008)
    _req("web_generation", Integer, default=0, server_default="0"),
)

token_table = Table(
    "tokens",
    metadata,
    _req("id", Integer, primary_key=True),
    # keyfob serials (canonical, with check digit) or other vendors' as given; widened by 0003
    _req("serial", String(SERIAL_MAX), unique=True),
    _req("mode", String(4)),
    _req("algorithm", String(8)),
    _req("digits", Integer),
    _req("period", Integer, default=30),
    _req("seed", LargeBinary),  # AES-GCM sealed
    # HOTP: the next counter expected
    _req("counter", BigInteger, default=0),
    # TOTP: the last accepted time step (-1: none yet); steps <= this are refused
    _req("last_step", BigInteger, default=-1),
    # TOTP: learned clock offset of the token, in steps
    _req("drift", Integer, default=0),
    # TOTP: the drift the last link or resync set; logins move ``drift`` at most ``totp_drift_max``
    # from it (added by 0004)
    _req("sync_drift", Integer, default=0, server_default="0"),
    _req("fail_count", Integer, default=0),
    _opt("locked_until", Float),
    _req("state", String(12), default="unassigned"),
    _opt("user_id", Integer, ForeignKey("users.id"), index=True),
    _opt("description", String(200)),
    _req("created", Float),
    _req("updated", Float),
    # RFC 6030 DeviceInfo, kept for export (added by 0004; NULL: not known)
    _opt("manufacturer", String(64)),
    _opt("model", String(64)),
    # RFC 6030 ExpiryDate, Unix seconds (inclusive): logins with the token are refused after it
    # (added by 0007; NULL: no expiry)
    _opt("expires_at", Float),
)

backup_code_table = Table(
    "backup_codes",
    metadata,
    _req("id", Integer, primary_key=True),
    _req("user_id", Integer, ForeignKey("users.id"), index=True),
    _req("code_hash", LargeBinary),  # HMAC-SHA256, see crypto.SeedBox.backup_hash
    _req("created", Float),
    _opt("used_at", Float),
    # a help desk's temporary code stops working at this time; NULL: never (added by 0008)
    _opt("expires_at", Float),
)

#: who did what, when, with what result; never a seed, code, password or backup code
audit_table = Table(
    "audit",
    metadata,
    _req("id", Integer, primary_key=True),
    _req("ts", Float),
    _req("actor", String(64)),
    _req("action", String(32)),
    _opt("user_name", String(64)),
    _opt("serial", String(SERIAL_MAX)),  # widened by 0003
    _req("result", String(16)),
    _opt("detail", String(200)),
    # attempts this row stands for: throttled attempts are aggregated (added by 0004)
    _req("count", Integer, default=1, server_default="1"),
    # the source address a front gave for an attempt (added by 0004)
    _opt("source", String(64)),
    # the front and API key a login came through, e.g. ``api:web-login`` (added by 0006)
    _opt("via", String(40)),
    Index("ix_audit_user_name", "user_name"),  # added by 0002
    Index("ix_audit_serial", "serial"),  # added by 0002
    Index("ix_audit_ts", "ts"),  # added by 0004
)

#: back-off state of one key: a user name's tag (``u:...``) or a source address (``s:...``); also
#: the used first steps of the web's two-step sign-in (``o:...``, pruned with the rest); see
#: :mod:`.throttle`. Added by 0004.
throttle_table = Table(
    "throttle",
    metadata,
    _req("key", String(80), primary_key=True),
    _req("fails", Integer),
    _req("last_fail", Float, index=True),  # pruning forgotten keys
    # no checked attempt before this time (failures past the free ones push it out)
    _req("next_ok", Float),
    # the audit row that counts this key's throttled attempts until ``agg_until``
    _opt("agg_id", Integer),
    _opt("agg_until", Float),
)

#: keys for the HTTP API (``keyfob serve``); only the key's SHA-256 is kept: the key is 256 random
#: bits, so no slow hash is needed. See :mod:`.apikeys`. Added by 0006.
api_key_table = Table(
    "api_keys",
    metadata,
    _req("id", Integer, primary_key=True),
    _req("name", String(32), unique=True),
    _req("scope", String(16)),
    _req("code_only", Boolean, default=False, server_default=false()),
    _req("key_hash", LargeBinary(32), unique=True),
    _req("created", Float),
    _opt("revoked_at", Float),
)
