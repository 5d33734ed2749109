"""``/admin/...``: what the CLI's admin commands do, for an admin-scope key. Each call is one
library call with ``actor="api:NAME"``, so the library audits it under the key's name. Reads
(lists, audit, explain) are audited too, as ``api-read`` rows. Bodies are JSON objects or forms
(:func:`.limits.fields`); answers are ``result.value`` in the shape of :mod:`.answers`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from keyfob.verifier.apikeys import ApiKeyInfo

from . import answers, limits
from .answers import ApiError
from .keys import require, via

router = APIRouter(prefix="/admin", tags=["admin"])
Admin = Annotated[ApiKeyInfo, Depends(require("admin"))]
_JSON_BODY = {"requestBody": {"content": {limits.JSON: {"schema": {"type": "object"}}}}}


async def _call(fn, *args, **kw):
    return await run_in_threadpool(fn, *args, **kw)


def _path(name: str, value: str) -> str:
    return limits.text(name, value)


async def _fields(request: Request, required=(), optional=()) -> dict:
    return limits.fields(await request.body(), request.headers, required=required, optional=optional)


def _flag(f: dict, name: str, default: bool) -> bool:
    if name not in f:
        return default
    if f[name] not in ("true", "false"):
        raise ApiError(400, f"field {name!r} is true or false")
    return f[name] == "true"


def _result(r) -> dict:
    return {"accepted": r.accepted, "reason": r.reason, "serial": r.serial}


# -- tokens ----------------------------------------------------------------------------------------


@router.get("/tokens", summary="List tokens")
async def tokens(
    request: Request,
    key: Admin,
    user: str | None = Query(None, max_length=64),
    state: str | None = Query(None, max_length=16),
):
    v = request.app.state.verifier
    rows = await _call(v.list_tokens, user=user, state=state)
    await _call(request.app.state.keys.note_read, "token-list", actor=via(key))
    return answers.ok([asdict(t) for t in rows])


@router.get("/tokens/{serial}", summary="One token")
async def token(request: Request, serial: str, key: Admin):
    t = await _call(request.app.state.verifier.token, _path("serial", serial))
    await _call(request.app.state.keys.note_read, "token-show", actor=via(key), serial=t.serial)
    return answers.ok(asdict(t))


@router.post("/tokens", openapi_extra=_JSON_BODY, summary="Import one token from an otpauth:// URI (its seed)")
async def import_uri(request: Request, key: Admin):
    f = await _fields(request, ("uri",))
    serials = await _call(request.app.state.verifier.import_uri, f["uri"], actor=via(key))
    return answers.ok(serials)


@router.post("/tokens/{serial}/link", openapi_extra=_JSON_BODY, summary="Link a token to a user (its current code)")
async def link(request: Request, serial: str, key: Admin):
    f = await _fields(request, ("user", "code"), ("description",))
    v = request.app.state.verifier
    serial = _path("serial", serial)
    r = await _call(v.link, f["user"], serial, f["code"], description=f.get("description"), actor=via(key))
    return answers.ok(r.accepted, _result(r))


@router.post("/tokens/{serial}/resync", openapi_extra=_JSON_BODY, summary="Resync from two consecutive codes")
async def resync(request: Request, serial: str, key: Admin):
    f = await _fields(request, ("code1", "code2"), ("wide",))
    v = request.app.state.verifier
    wide = _flag(f, "wide", False)
    r = await _call(v.resync, _path("serial", serial), f["code1"], f["code2"], wide=wide, actor=via(key))
    return answers.ok(r.accepted, _result(r))


def _state_change(action: str, method: str, summary: str):
    async def endpoint(request: Request, serial: str, key: Admin):
        await _fields(request)
        out = await _call(getattr(request.app.state.verifier, method), _path("serial", serial), actor=via(key))
        return answers.ok(True, {"backup_codes": out} if out else {})

    endpoint.__name__ = method
    router.post(f"/tokens/{{serial}}/{action}", summary=summary)(endpoint)


_state_change("unlink", "unlink", "Unlink a token (back to the inventory)")
_state_change("unlock", "unlock", "Clear a token's fail count and lock")
_state_change("disable", "disable", "Disable a token")
_state_change("enable", "enable", "Enable a disabled token")
_state_change("revoke", "revoke", "Revoke a token for good")
_state_change("lost", "mark_lost", "Mark a token lost: its codes are refused; the owner's new backup codes, once")


# -- users -----------------------------------------------------------------------------------------


@router.post("/users", openapi_extra=_JSON_BODY, summary="Add a user")
async def add_user(request: Request, key: Admin):
    f = await _fields(request, ("user", "password"), ("twofa",))
    u = await _call(
        request.app.state.verifier.add_user, f["user"], f["password"], twofa=_flag(f, "twofa", True), actor=via(key)
    )
    return answers.ok(asdict(u))


@router.post("/users/{name}/disable-2fa", summary="Turn 2FA off: the password alone logs in")
async def disable_2fa(request: Request, name: str, key: Admin):
    await _fields(request)
    await _call(request.app.state.verifier.set_twofa, _path("user", name), False, actor=via(key))
    return answers.ok(True)


@router.get("/users", summary="List users")
async def users(request: Request, key: Admin):
    rows = await _call(request.app.state.verifier.list_users)
    await _call(request.app.state.keys.note_read, "user-list", actor=via(key))
    return answers.ok([asdict(u) for u in rows])


# -- audit -----------------------------------------------------------------------------------------


@router.get("/audit", summary="Audit rows, newest first")
async def audit(
    request: Request,
    key: Admin,
    user: str | None = Query(None, max_length=64),
    serial: str | None = Query(None, max_length=64),
    action: str | None = Query(None, max_length=32),
    limit: int = Query(100, ge=1, le=100_000),
):
    rows = await _call(request.app.state.verifier.audit, user=user, serial=serial, action=action, limit=limit)
    await _call(request.app.state.keys.note_read, "audit-read", actor=via(key))
    return answers.ok([asdict(r) for r in rows])


@router.get("/explain/{name}", summary="Why the last login naming a user ended as it did")
async def explain(request: Request, name: str, key: Admin):
    r = await _call(request.app.state.verifier.explain, _path("user", name))
    await _call(request.app.state.keys.note_read, "explain", actor=via(key), user=name)
    return answers.ok(None if r is None else asdict(r))
