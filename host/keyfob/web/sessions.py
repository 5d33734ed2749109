"""Signed session cookies. The cookie holds the user's name, the CSRF token, when the session began
and was last used, and the user's session generation; it is signed (itsdangerous: HMAC-SHA1)
with a secret derived from the verifier's key, so every node agrees and the secret is never stored
on its own. A session ends after :data:`IDLE` seconds unused, :data:`LIFETIME` after sign-in, or
when the user's generation moves on (a sign-out, on any node, ends them all).

A sign-in in two steps (the password first, for a password manager that fills the field, then the
code) keeps the first step's name and password in the cookie until the second, sealed with AES-GCM
(a key derived from the same secret) for at most :data:`PENDING` seconds, with the user's session
generation then (so a sign-out, a new password or a token marked lost makes it stale): nothing is
checked, and so nothing is told, before the code is there too."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, replace
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from itsdangerous import BadSignature, URLSafeSerializer

COOKIE = "keyfob_session"
#: seconds a session may go unused
IDLE = 15 * 60
#: seconds a session lasts at most after sign-in
LIFETIME = 8 * 3600
#: seconds between the two steps of a two-step sign-in
PENDING = 5 * 60


@dataclass(frozen=True)
class Session:
    csrf: str
    user: str | None = None  # None: not signed in (the cookie still carries a CSRF token)
    began: float = 0.0
    seen: float = 0.0
    generation: int = 0
    pending: str | None = None  # a two-step sign-in's first step, sealed (see :meth:`Cookies.seal`)


class FirstStep(NamedTuple):
    """A two-step sign-in's first step, unsealed."""

    user: str
    password: str
    generation: int  # the user's session generation when it was sealed (-1: no such user)
    tag: str  # names this sealing (not secret), to use it once (Accounts.use_once)
    until: float  # when it goes stale


def fresh() -> Session:
    return Session(csrf=secrets.token_urlsafe(32))


def signed_in(user: str, generation: int, now: float) -> Session:
    """A new session (and a new CSRF token) at sign-in: nothing of the anonymous one is kept."""
    return Session(secrets.token_urlsafe(32), user, now, now, generation)


class Cookies:
    def __init__(self, secret: bytes):
        self._s = URLSafeSerializer(secret, salt="keyfob-web-session")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"keyfob-web-pending").derive(secret)
        self._aead = AESGCM(key)

    def dump(self, s: Session) -> str:
        return self._s.dumps([s.csrf, s.user, s.began, s.seen, s.generation, s.pending])

    def seal(self, user: str, password: str, now: float, generation: int) -> str:
        """The first step of a two-step sign-in, for the cookie: readable by this server only;
        ``generation``: the user's session generation then (a sign-out since makes it stale)."""
        nonce = secrets.token_bytes(12)
        blob = self._aead.encrypt(nonce, json.dumps([user, password, now, generation]).encode(), b"keyfob-pending")
        return base64.urlsafe_b64encode(nonce + blob).decode("ascii")

    def unseal(self, pending: str | None, now: float) -> FirstStep | None:
        """The name, password and generation of a first step still fresh, else None."""
        if not pending:
            return None
        try:
            raw = base64.urlsafe_b64decode(pending.encode("ascii"))
            user, password, then, generation = json.loads(self._aead.decrypt(raw[:12], raw[12:], b"keyfob-pending"))
        except (InvalidTag, ValueError, TypeError):  # tampered, truncated or another key's: as if none
            return None
        if not (isinstance(user, str) and isinstance(password, str) and 0 <= now - float(then) <= PENDING):
            return None
        tag = hashlib.sha256(raw[:12]).hexdigest()[:40]
        return FirstStep(user, password, int(generation), tag, float(then) + PENDING)

    def load(self, raw: str | None, now: float) -> Session:
        """The session the cookie holds, else a fresh anonymous one (a bad signature, a malformed or
        expired session: the caller cannot tell, and need not)."""
        if not raw or len(raw) > 2048:
            return fresh()
        try:
            csrf, user, began, seen, generation, pending = self._s.loads(raw)
        except (BadSignature, ValueError, TypeError):
            return fresh()
        if not isinstance(csrf, str) or not (user is None or isinstance(user, str)):
            return fresh()
        if not (pending is None or isinstance(pending, str)):
            return fresh()
        s = Session(csrf, user, float(began), float(seen), int(generation), pending)
        if s.user is not None and not (0 <= now - s.seen <= IDLE and 0 <= now - s.began <= LIFETIME):
            return fresh()
        return s

    def touch(self, s: Session, now: float) -> Session:
        return replace(s, seen=now) if s.user is not None else s


def csrf_ok(s: Session, sent: str | None) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(s.csrf.encode(), sent.encode("utf-8", "replace"))
