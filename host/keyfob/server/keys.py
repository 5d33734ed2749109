"""The API key a request brings: ``Authorization: Bearer kf_...``. ``/validate/check`` needs a
validate- or admin-scope key, ``/admin/...`` an admin-scope key. Checking the key is the library's
(:mod:`keyfob.verifier.apikeys`); this module only reads the header and says 401 or 403."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from keyfob.verifier.apikeys import ApiKeyInfo

from .answers import ApiError

_bearer = HTTPBearer(auto_error=False, description="An API key made by `keyfob server api-key add`.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require(scope: str):
    """A FastAPI dependency: the request's active key with ``scope`` (admin keys have every scope)."""

    async def dependency(
        request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> ApiKeyInfo:
        if cred is None:
            raise ApiError(401, "an API key is required (Authorization: Bearer <key>)", _CHALLENGE)
        info = await run_in_threadpool(request.app.state.keys.check, cred.credentials)
        if info is None:
            raise ApiError(401, "the API key is not valid (unknown or revoked)", _CHALLENGE)
        if not info.allows(scope):
            raise ApiError(403, f"this call needs an API key of scope {scope}")
        return info

    return dependency


def via(key: ApiKeyInfo) -> str:
    """How a call through ``key`` is named in the audit log (``actor`` of admin calls, ``via`` of logins)."""
    return "api:" + key.name
