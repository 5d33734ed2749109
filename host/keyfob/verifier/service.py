"""The Verifier: users, tokens, enrolment, validation, resync, lockout, backup codes, audit.

A library that never prints. Every method that changes something writes an audit row in the same
transaction. Before a code (or a password) is checked, the attempt is *reserved*: counted in advance
as a failure on the token (and on the throttle's user and source keys, :mod:`.throttle`) by one
atomic UPDATE that only succeeds under the limit, so parallel guesses never get more checks than the
lockout allows (see ``Verifier._reserve``). A login's code is checked in the write transaction
that reserved it (one for ``check_code``; ``verify``'s second, after the password), against the
row the reservation returned, and a success is written with a compare-and-set (``UPDATE tokens
... WHERE id = ? AND counter = ?``) that also gives the reservations back, so of any number of
parallel submissions of one code, across threads, processes or nodes, exactly one is accepted,
and only failures stay counted.

Time comes from an injectable ``clock`` (a callable returning Unix seconds) so the TOTP rules are
tested without sleeping.
"""

from __future__ import annotations

from .attempts import Attempts
from .audit import Audit
from .backup import BackupCodes
from .core import VerifierCore, _audit, check_name
from .enrolment import Enrolment
from .inventory import Imported, Inventory
from .logins import Logins
from .opening import Opening
from .results import THROTTLED, AuditInfo, Result, TokenInfo, UserInfo
from .resync import Resync
from .users import Users

__all__ = [
    "THROTTLED",
    "AuditInfo",
    "Imported",
    "Result",
    "TokenInfo",
    "UserInfo",
    "Verifier",
    "_audit",
    "check_name",
]


class Verifier(Opening, Users, Inventory, Enrolment, BackupCodes, Logins, Resync, Audit, Attempts, VerifierCore):
    """Open with :meth:`open` (or create with :meth:`init`); thread-safe; ``close()`` when done.

    One class assembled from one part per concern (docs/internals.md says which owns what)."""
