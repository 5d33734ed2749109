"""API keys for the HTTP API (``keyfob serve``): made, listed, revoked and checked here, so every
front and the CLI share one rule.

A key is ``kf_`` and 43 URL-safe characters (256 random bits), shown once when it is made. Only its
SHA-256 is stored: a key of that strength needs no slow hash, and a lookup by hash costs one indexed
SELECT per request. A key has a *scope*: ``validate`` (a relying party: ``/validate/check``) or
``admin`` (everything). A validate key made ``code_only`` has its logins checked with the code alone
(:meth:`Verifier.check_code`): only for a relying party that checked the password itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from keyfob import errors

from . import db
from .errors import AlreadyExists, BadInput, VerifierError
from .models import api_key_table
from .service import Verifier, _audit

SCOPES = ("validate", "admin")
PREFIX = "kf_"
#: longer than any key this module makes; longer input is refused before hashing
KEY_MAX = 64
_K = api_key_table
_BY_HASH = "SELECT name, scope, code_only, created, revoked_at, key_hash FROM api_keys WHERE key_hash = :digest"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}\Z")


class UnknownApiKey(VerifierError, errors.BadInput):
    def __init__(self, name: str):
        super().__init__(f"unknown API key {name!r}")


@dataclass(frozen=True)
class ApiKeyInfo:
    name: str
    scope: str
    code_only: bool
    created: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        """An admin key may do what a validate key may."""
        return self.active and (self.scope == "admin" or self.scope == scope)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()


def _info(r) -> ApiKeyInfo:
    return ApiKeyInfo(r.name, r.scope, bool(r.code_only), r.created, r.revoked_at)


class ApiKeys:
    """The API keys of one verifier database."""

    def __init__(self, verifier: Verifier):
        self._verifier = verifier
        self._clock = verifier._clock

    @property
    def _engine(self):  # the admin operations' (SQLAlchemy, made on first use)
        return self._verifier._engine

    def add(self, name: str, scope: str, *, code_only: bool = False, actor: str = "admin") -> tuple[ApiKeyInfo, str]:
        """Make a key; returns its info and the key itself (the only time it is seen)."""
        if not isinstance(name, str) or _NAME_RE.match(name) is None:
            raise BadInput("an API key name has 1-32 characters: letters, digits and . _ - (not first)")
        if scope not in SCOPES:
            raise BadInput(f"an API key's scope is one of {', '.join(SCOPES)}")
        if code_only and scope != "validate":
            raise BadInput("only a validate key can be code-only")
        key = PREFIX + secrets.token_urlsafe(32)
        now = self._clock()

        def run(conn):
            if conn.execute(select(_K.c.id).where(_K.c.name == name)).first() is not None:
                raise AlreadyExists(f"API key {name!r} already exists (revoked keys keep their name)")
            conn.execute(
                insert(_K),
                {"name": name, "scope": scope, "code_only": code_only, "key_hash": _digest(key), "created": now},
            )
            what = f"{name} ({scope}{', code only' if code_only else ''})"
            _audit(conn, now, actor, "api-key-add", "ok", detail=what)

        db.write(self._engine, run)
        return ApiKeyInfo(name, scope, code_only, now, None), key

    def list(self) -> list[ApiKeyInfo]:
        with db.read(self._engine) as conn:
            return [_info(r) for r in conn.execute(select(_K).order_by(_K.c.name)).all()]

    def revoke(self, name: str, *, actor: str = "admin") -> None:
        """The key stops working at once, on every node; its row (and name) stay for the audit log."""
        now = self._clock()

        def run(conn):
            row = conn.execute(select(_K).where(_K.c.name == name)).first()
            if row is None:
                raise UnknownApiKey(name)
            if row.revoked_at is not None:
                raise BadInput(f"API key {name!r} is already revoked")
            conn.execute(update(_K).where(_K.c.id == row.id).values(revoked_at=now))
            _audit(conn, now, actor, "api-key-revoke", "ok", detail=name)

        db.write(self._engine, run)

    def note_read(self, what: str, *, actor: str, user: str | None = None, serial: str | None = None) -> None:
        """Audit a read made through the API (a list, the audit log, an explain) under the key's name."""
        now = self._clock()
        db.write(self._engine, lambda conn: _audit(conn, now, actor, "api-read", "ok", user, serial, what))

    def check(self, key: str) -> ApiKeyInfo | None:
        """The active key ``key`` is, or None (unknown, revoked or malformed: the caller cannot tell)."""
        if not isinstance(key, str) or not key.startswith(PREFIX) or len(key) > KEY_MAX or not key.isascii():
            return None
        digest = _digest(key)
        with self._verifier._db.read() as conn:  # every request: on the login path's connections
            row = conn.execute(_BY_HASH, {"digest": digest}).first()
        if row is None or not hmac.compare_digest(bytes(row[5]), digest) or row[4] is not None:
            return None
        return ApiKeyInfo(row[0], row[1], bool(row[2]), row[3], row[4])
