"""The API key a request brings: ``Authorization: Bearer kf_...``. ``/validate/check`` needs a
validate- or admin-scope key, ``/admin/...`` an admin-scope key. Checking the key is the library's
(:mod:`keyfob.verifier.apikeys`); this module only reads the header and says 401 or 403."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool

from keyfob.verifier.apikeys import ApiKeyInfo

from .answers import ApiError

bearer = HTTPBearer(auto_error=False, description="An API key made by `keyfob server api-key add`.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def bearer_credentials(headers) -> HTTPAuthorizationCredentials | None:
    """What :data:`bearer` (``auto_error=False``) makes of a request's headers, for a caller outside
    FastAPI's dependencies (:class:`.validate.LoginPath`): the same rule, FastAPI's own parser."""
    scheme, credentials = get_authorization_scheme_param(headers.get("authorization"))
    if not (scheme and credentials) or scheme.lower() != "bearer":
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)


def authorize(keys, cred: HTTPAuthorizationCredentials | None, scope: str) -> ApiKeyInfo:
    """The active key of ``cred`` with ``scope`` (admin keys have every scope), or 401/403.
    One read (a SELECT): under WAL it waits for no writer, and once a server's store has used its
    file no other process can hold it whole (tests/test_verifier_store.py), so the login path
    calls it on the event loop; the admin calls, in a worker thread."""
    if cred is None:
        raise ApiError(401, "an API key is required (Authorization: Bearer <key>)", _CHALLENGE)
    info = keys.check(cred.credentials)
    if info is None:
        raise ApiError(401, "the API key is not valid (unknown or revoked)", _CHALLENGE)
    if not info.allows(scope):
        raise ApiError(403, f"this call needs an API key of scope {scope}")
    return info


def require(scope: str):
    """A FastAPI dependency: :func:`authorize` for ``scope``."""

    async def dependency(request: Request, cred: Credentials) -> ApiKeyInfo:
        return await run_in_threadpool(authorize, request.app.state.keys, cred, scope)

    return dependency


def via(key: ApiKeyInfo) -> str:
    """How a call through ``key`` is named in the audit log (``actor`` of admin calls, ``via`` of logins)."""
    return "api:" + key.name
