"""A login as steps, so that each front runs them where they cost least.

``Logins.verify_steps`` and ``Logins.check_code_steps`` are generators. Each yields its steps and
is sent their outcomes:

- :class:`Write`: ``fn(conn)`` in one write transaction of the store (``store.write``);
- :class:`Hash`: one Argon2 verification of ``password`` against ``hashed`` (``Passwords.verify``).

:func:`run` drives one in the calling thread: that is the library's ``verify`` and ``check_code``.
The HTTP front drives them on its event loop instead (:mod:`keyfob.server.validate`): each
transaction runs there, tried again after a pause while the file is locked (the loop serving
others meanwhile), and a costly hash always runs on a thread. A login thread hands the GIL to
the loop at every SQLite call, and over HTTP that tripled a login's time (docs/bench.md). The
steps, their order and the rules between them are the same whoever drives.
"""

from __future__ import annotations


class Write:
    """A write transaction: ``fn(conn)``; its outcome is what ``fn`` returns."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn


class Hash:
    """One Argon2 verification; its outcome is True if ``password`` matches ``hashed``."""

    __slots__ = ("hashed", "password")

    def __init__(self, hashed: str, password: str):
        self.hashed, self.password = hashed, password


def outcome(step, write, verify_hash):
    """What ``step`` gives: ``write(fn)`` for a :class:`Write`, ``verify_hash(hashed, password)``
    for a :class:`Hash`."""
    if type(step) is Write:
        return write(step.fn)
    return verify_hash(step.hashed, step.password)


def run(steps, write, verify_hash, *, synced=None):
    """Drive ``steps`` to their end in this thread: ``write(fn)`` for a :class:`Write`,
    ``verify_hash(hashed, password)`` for a :class:`Hash`. A step's exception is thrown into the
    login (its ``finally`` still runs its steps), and what the login returns is returned.

    ``synced``: for a ``write`` that leaves its commits off the disk, called once the login has
    written anything, after its last write and before its outcome (or its refusal) leaves here:
    one sync puts all its commits on disk (:mod:`.logsync`), and a commit's outcome in between
    only leads to the login's next step."""
    if synced is None:
        return resume(steps, write, verify_hash, started=False)
    wrote = False

    def counted(fn):
        nonlocal wrote
        out = write(fn)
        wrote = True
        return out

    try:
        out = resume(steps, counted, verify_hash, started=False)
    except Exception:
        if wrote:
            synced()  # a failed sync is then the refusal
        raise
    if wrote:
        synced()
    return out


def resume(steps, write, verify_hash, *, out=None, exc=None, started=True):
    """:func:`run` for a login already under way, whose current step ended with ``out`` (or raised
    ``exc``): a front that must stop driving a login hands the rest to a thread with this."""
    try:
        if not started:
            step = next(steps)
        elif exc is not None:
            step = steps.throw(exc)
        else:
            step = steps.send(out)
        while True:
            try:
                out = outcome(step, write, verify_hash)
            except BaseException as e:
                step = steps.throw(e)
            else:
                step = steps.send(out)
    except StopIteration as stop:
        return stop.value
