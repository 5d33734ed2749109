"""The verifier's exceptions: each is a :class:`keyfob.errors.KeyfobError` of one kind (refused, bad
input, unavailable), which gives its exit code on the command line.

Every message is one clear line meant for a person. Messages name users, serials and files, never a
seed, a code, a password, a backup code or key material: an exception may end up in a log.
"""

from __future__ import annotations

from keyfob import errors


class VerifierError(errors.KeyfobError):
    """Base class: anything the verifier refuses to do, with a one-line reason."""


class BadInput(VerifierError, errors.BadInput):
    """Input that is malformed before any lookup (code with letters, wrong length, empty name...)."""


class UnknownUser(VerifierError, errors.BadInput):
    def __init__(self, name: str):
        super().__init__(f"unknown user {name!r}")


class UnknownToken(VerifierError, errors.BadInput):
    def __init__(self, serial: str):
        super().__init__(f"unknown token {serial}")


class AlreadyExists(VerifierError, errors.Refused):
    """A user or token that is already there."""


class TokenStateError(VerifierError, errors.Refused):
    """The operation does not fit the token's state (e.g. linking a revoked token)."""


class KeyFileError(VerifierError, errors.BadInput):
    """The seed encryption key is missing, malformed, unreadable or not the database's key."""


class SeedFileError(VerifierError, errors.BadInput):
    """A seed file that cannot be read: truncated, wrong format, wrong pre-shared key."""


class DatabaseError(VerifierError, errors.Unavailable):
    """The database is missing, not initialised, or of a schema this release cannot open."""


class DatabaseBusy(DatabaseError):
    """Another process held the database locked for longer than the bounded wait."""


__all__ = [
    "AlreadyExists",
    "BadInput",
    "DatabaseBusy",
    "DatabaseError",
    "KeyFileError",
    "SeedFileError",
    "TokenStateError",
    "UnknownToken",
    "UnknownUser",
    "VerifierError",
]
