"""The verifier's tables (SQLAlchemy 2.x declarative). The schema itself is made by the Alembic
migrations in ``migrations/versions``; these classes must describe the head revision.

Nothing secret is stored in clear: ``tokens.seed`` is AES-GCM sealed (see :mod:`.crypto`),
passwords are Argon2id hashes, backup codes are keyed hashes, and codes are never stored at all.
Times are Unix seconds (floats) so every engine stores them the same way.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from keyfob.serials import SERIAL_MAX

STATES = ("unassigned", "active", "disabled", "lost", "revoked")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Setting(Base):
    """Key/value facts about this database (e.g. the sealed key check)."""

    __tablename__ = "settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    twofa: Mapped[bool] = mapped_column(Boolean, default=True)
    #: unused since 0004 (the fixed per-user window gave way to the ``throttle`` table)
    rl_start: Mapped[float | None] = mapped_column(Float, nullable=True)
    rl_count: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[float] = mapped_column(Float)
    #: may use the web help desk (added by 0007)
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: a web sign-out bumps it; sessions made under an older value are refused (added by 0007)
    web_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: keyfob serials (canonical, with check digit) or other vendors' as given; widened by 0003
    serial: Mapped[str] = mapped_column(String(SERIAL_MAX), unique=True)
    mode: Mapped[str] = mapped_column(String(4))
    algorithm: Mapped[str] = mapped_column(String(8))
    digits: Mapped[int] = mapped_column(Integer)
    period: Mapped[int] = mapped_column(Integer, default=30)
    seed: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM sealed
    #: HOTP: the next counter expected
    counter: Mapped[int] = mapped_column(BigInteger, default=0)
    #: TOTP: the last accepted time step (-1: none yet); steps <= this are refused
    last_step: Mapped[int] = mapped_column(BigInteger, default=-1)
    #: TOTP: learned clock offset of the token, in steps
    drift: Mapped[int] = mapped_column(Integer, default=0)
    #: TOTP: the drift the last link or resync set; logins move ``drift`` at most ``totp_drift_max``
    #: from it (added by 0004)
    sync_drift: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    fail_count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str] = mapped_column(String(12), default="unassigned")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    description: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)
    #: RFC 6030 DeviceInfo, kept for export (added by 0004; NULL: not known)
    manufacturer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: RFC 6030 ExpiryDate, Unix seconds (inclusive): logins with the token are refused after it
    #: (added by 0007; NULL: no expiry)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class BackupCode(Base):
    __tablename__ = "backup_codes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[bytes] = mapped_column(LargeBinary)  # HMAC-SHA256, see crypto.SeedBox.backup_hash
    created: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: a help desk's temporary code stops working at this time; NULL: never (added by 0007)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AuditEntry(Base):
    """Who did what, when, with what result. Never a seed, code, password or backup code."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    user_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    serial: Mapped[str | None] = mapped_column(String(SERIAL_MAX), nullable=True)  # widened by 0003
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: attempts this row stands for: throttled attempts are aggregated (added by 0004)
    count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: the source address a front gave for an attempt (added by 0004)
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the front and API key a login came through, e.g. ``api:web-login`` (added by 0006)
    via: Mapped[str | None] = mapped_column(String(40), nullable=True)

    # added by revision 0002
    __table_args__ = (
        Index("ix_audit_user_name", "user_name"),
        Index("ix_audit_serial", "serial"),
        Index("ix_audit_ts", "ts"),  # added by 0004
    )


class Throttle(Base):
    """Back-off state of one key: a user name's tag (``u:...``) or a source address (``s:...``).
    See :mod:`.throttle`. Added by 0004."""

    __tablename__ = "throttle"
    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    fails: Mapped[int] = mapped_column(Integer)
    last_fail: Mapped[float] = mapped_column(Float, index=True)  # pruning forgotten keys
    #: no checked attempt before this time (failures past the free ones push it out)
    next_ok: Mapped[float] = mapped_column(Float)
    #: the audit row that counts this key's throttled attempts until ``agg_until``
    agg_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agg_until: Mapped[float | None] = mapped_column(Float, nullable=True)


class ApiKey(Base):
    """A key for the HTTP API (``keyfob serve``). Only the key's SHA-256 is kept: the key is 256
    random bits, so no slow hash is needed. See :mod:`.apikeys`. Added by 0006."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    code_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
