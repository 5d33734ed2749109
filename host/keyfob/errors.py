"""The one base of every keyfob error, and the four kinds of failure a caller acts on.

Each library error derives from exactly one kind below (and keeps its own name, and ValueError or
RuntimeError where callers catch those). The kind carries what a front needs: the command line's
exit code (the README's table) and a short name for JSON answers. A message is one line for a
person and never quotes a seed, a code, a password or key material.
"""

from __future__ import annotations


class KeyfobError(Exception):
    """Base of every keyfob error. Raise one of its kinds, not this."""

    kind = "failed"
    exit_code = 4


class Refused(KeyfobError):
    """Understood and well-formed, but not allowed now: a login or a code refused, a locked or
    already-provisioned token, a name already taken, a token in the wrong state."""

    kind = "refused"
    exit_code = 1


class BadInput(KeyfobError):
    """The input itself is wrong: a malformed value or file, an unknown name, a wrong key."""

    kind = "bad-input"
    exit_code = 2


class Unavailable(KeyfobError):
    """What the request needs is not there or busy: no device, a device that does not answer, a
    database that is missing or locked, a virtual token not running."""

    kind = "unavailable"
    exit_code = 3


class Failed(KeyfobError):
    """Started, then went wrong: a device that broke off mid-way, a check after writing that did
    not match, tokens of a batch that could not be provisioned."""

    kind = "failed"
    exit_code = 4


#: the kinds, in exit-code order (the README's table lists the same)
KINDS = (Refused, BadInput, Unavailable, Failed)


def kind_of(exc: KeyfobError | type[KeyfobError]) -> type[KeyfobError]:
    """The one kind an error (or error class) belongs to: Failed for one of no kind, such as a
    module's own base (DeployError) raised as it is."""
    cls = exc if isinstance(exc, type) else type(exc)
    return next((k for k in KINDS if issubclass(cls, k)), Failed)
