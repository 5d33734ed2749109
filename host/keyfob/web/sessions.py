"""Signed session cookies. The cookie holds the user's name, the CSRF token, when the session began
and was last used, and the user's session generation; it is signed (itsdangerous, HMAC-SHA256)
with a secret derived from the verifier's key, so every node agrees and the secret is never stored
on its own. A session ends after :data:`IDLE` seconds unused, :data:`LIFETIME` after sign-in, or
when the user's generation moves on (a sign-out, on any node, ends them all)."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, replace

from itsdangerous import BadSignature, URLSafeSerializer

COOKIE = "keyfob_session"
#: seconds a session may go unused
IDLE = 15 * 60
#: seconds a session lasts at most after sign-in
LIFETIME = 8 * 3600


@dataclass(frozen=True)
class Session:
    csrf: str
    user: str | None = None  # None: not signed in (the cookie still carries a CSRF token)
    began: float = 0.0
    seen: float = 0.0
    generation: int = 0


def fresh() -> Session:
    return Session(csrf=secrets.token_urlsafe(32))


def signed_in(user: str, generation: int, now: float) -> Session:
    """A new session (and a new CSRF token) at sign-in: nothing of the anonymous one is kept."""
    return Session(secrets.token_urlsafe(32), user, now, now, generation)


class Cookies:
    def __init__(self, secret: bytes):
        self._s = URLSafeSerializer(secret, salt="keyfob-web-session")

    def dump(self, s: Session) -> str:
        return self._s.dumps([s.csrf, s.user, s.began, s.seen, s.generation])

    def load(self, raw: str | None, now: float) -> Session:
        """The session the cookie holds, else a fresh anonymous one (a bad signature, a malformed or
        expired session: the caller cannot tell, and need not)."""
        if not raw or len(raw) > 1024:
            return fresh()
        try:
            csrf, user, began, seen, generation = self._s.loads(raw)
        except (BadSignature, ValueError, TypeError):
            return fresh()
        if not isinstance(csrf, str) or not (user is None or isinstance(user, str)):
            return fresh()
        s = Session(csrf, user, float(began), float(seen), int(generation))
        if s.user is not None and not (0 <= now - s.seen <= IDLE and 0 <= now - s.began <= LIFETIME):
            return fresh()
        return s

    def touch(self, s: Session, now: float) -> Session:
        return replace(s, seen=now) if s.user is not None else s


def csrf_ok(s: Session, sent: str | None) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(s.csrf.encode(), sent.encode("utf-8", "replace"))
