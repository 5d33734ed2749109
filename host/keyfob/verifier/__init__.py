"""The host verifier: validates one-time codes like a login service.

Users (Argon2id passwords, 2FA on/off), tokens (AES-GCM sealed seeds, HOTP counter / TOTP step and
drift, fail count and lock, state), backup codes (keyed hashes, single use) and an audit log, in any
SQLAlchemy database (a SQLite file by default), with the schema kept by Alembic migrations.

    >>> v = Verifier.open("verifier.db")                      # doctest: +SKIP
    >>> v.verify("alice", "correct horse" + "755224")        # doctest: +SKIP
    Result(accepted=True, user='alice', reason='ok', serial='KF000000013')

Serials follow :func:`accept_serial` (from :mod:`keyfob.serials`): keyfob serials need their Damm
check digit, other vendors' serials are kept as given (the verifier raises :class:`BadInput` for a
serial it refuses).

The library never prints; ``keyfob server|user|token|validate|backup-codes|audit`` are the CLI.
"""

from keyfob.serials import SerialError, accept_serial

from .errors import (
    AlreadyExists,
    BadInput,
    DatabaseBusy,
    DatabaseError,
    KeyFileError,
    SeedFileError,
    TokenStateError,
    UnknownToken,
    UnknownUser,
    VerifierError,
)
from .rules import Policy
from .service import AuditInfo, Result, TokenInfo, UserInfo, Verifier

__all__ = [
    "AlreadyExists",
    "AuditInfo",
    "BadInput",
    "DatabaseBusy",
    "DatabaseError",
    "KeyFileError",
    "Policy",
    "Result",
    "SeedFileError",
    "SerialError",
    "TokenInfo",
    "TokenStateError",
    "UnknownToken",
    "UnknownUser",
    "UserInfo",
    "Verifier",
    "VerifierError",
    "accept_serial",
]
