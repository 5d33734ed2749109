"""``POST /validate/check``: one login, answered accept or reject in privacyIDEA's shape.

Fields (JSON object or URL-encoded form): ``user`` (or ``serial``: the token's owner logs in) and
``pass``, the password and code in one string as the user typed them (for a key made
``--code-only``: the code alone, the password having been checked by the relying party). HTTP 200
for every decided login, ``value`` true or false; a reject is the same bytes whatever failed. The
client's address is the verifier's ``source`` (throttled per source)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from keyfob.verifier import BadInput, UnknownToken
from keyfob.verifier.apikeys import ApiKeyInfo
from keyfob.verifier.service import check_name

from . import answers, limits
from .answers import ApiError
from .keys import require, via

router = APIRouter()

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            ctype: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "user": {"type": "string", "maxLength": 64},
                        "serial": {"type": "string", "maxLength": 64},
                        "pass": {"type": "string", "maxLength": 256, "description": "password+code, or the code"},
                    },
                    "required": ["pass"],
                    "additionalProperties": False,
                }
            }
            for ctype in (limits.JSON, limits.FORM)
        },
    }
}


def _owner(verifier, serial: str) -> str | None:
    try:
        return verifier.token(serial).user
    except UnknownToken:
        return None


def _check(verifier, key: ApiKeyInfo, name: str | None, serial: str | None, secret: str, source: str | None) -> bool:
    if serial is not None:
        name = _owner(verifier, serial)
        # no owner: still a full attempt under a name no user can have, so it costs and is
        # audited like any other refusal (an unknown user)
        name = name if name is not None else "-" + serial
    if key.code_only:
        return verifier.check_code(name, secret, source=source, via=via(key)).accepted
    return verifier.verify(name, secret, source=source, via=via(key)).accepted


@router.post("/validate/check", tags=["validate"], openapi_extra=_BODY, summary="Check one login")
async def check(request: Request, key: Annotated[ApiKeyInfo, Depends(require("validate"))]):
    f = limits.fields(await request.body(), request.headers, required=("pass",), optional=("user", "serial"))
    if ("user" in f) == ("serial" in f):
        raise ApiError(400, "give either user or serial")
    if "user" in f:
        try:
            check_name(f["user"])
        except BadInput as exc:
            raise ApiError(400, str(exc)) from None
    source = request.client.host if request.client else None
    v = request.app.state.verifier
    accepted = await run_in_threadpool(_check, v, key, f.get("user"), f.get("serial"), f["pass"], source)
    return answers.login(accepted)
