"""What the verifier's public methods return: answers and listings, none of which carries a secret."""

from __future__ import annotations

from dataclasses import dataclass

#: the answer for an attempt refused unchecked by the throttle
THROTTLED = "throttled"


@dataclass(frozen=True)
class Result:
    """The outcome of one attempt. A relying party is told ``accepted`` and nothing else: ``reason``
    is for the audit log and an admin (:meth:`Verifier.explain`). It is one of: ``ok``,
    ``backup-code``, ``password`` (user without 2FA), ``wrong-code``, ``wrong-backup-code``,
    ``wrong-password``, ``replay`` (a code already used), ``locked``, ``throttled``, ``no-token``
    (no active token of the code's length), ``unknown-user``, ``malformed`` (not a code of an
    allowed length), ``unexpected-code`` (a code for a user without 2FA)."""

    accepted: bool
    user: str
    reason: str
    serial: str | None = None

    def __bool__(self) -> bool:
        return self.accepted


# Every dataclass here has a docstring: without one, @dataclass makes one from inspect.signature at
# import, a cost each `keyfob validate` would pay.


@dataclass(frozen=True)
class UserInfo:
    """A user as listed: name, 2FA on or off, how many active tokens and unused backup codes."""

    name: str
    twofa: bool
    tokens: int
    backup_codes: int


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (never its seed)."""

    serial: str
    mode: str
    algorithm: str
    digits: int
    period: int
    state: str
    user: str | None
    description: str | None
    counter: int
    last_step: int
    drift: int
    fail_count: int
    locked: bool
    locked_until: float | None


@dataclass(frozen=True)
class AuditInfo:
    """One audit row (``count``: the attempts an aggregated row stands for)."""

    ts: float
    actor: str
    action: str
    user: str | None
    serial: str | None
    result: str
    detail: str | None
    #: attempts the row stands for (throttled attempts are aggregated)
    count: int = 1
    source: str | None = None
    #: the front and API key a login came through (``api:NAME`` for ``keyfob serve``)
    via: str | None = None
