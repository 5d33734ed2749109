"""The JSON shapes of answers, after privacyIDEA's, so a service wired to privacyIDEA can point at
keyfob: ``{"jsonrpc": "2.0", "id": 1, "result": {"status": true, "value": ...}, "detail": {...},
"version": ...}``. ``status`` says the request was understood; ``value`` is the answer (for a
login: true or false). An error has ``status`` false and ``result.error`` with the HTTP code and
one line for a person."""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse, Response

from keyfob import __version__
from keyfob.errors import BadInput

VERSION = f"keyfob {__version__}"


class ApiError(BadInput):
    """A request refused before (or instead of) any verifier call: one status, one line."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def body(value, detail: dict | None = None) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"status": True, "value": value},
        "detail": detail or {},
        "version": VERSION,
    }


def ok(value, detail: dict | None = None) -> JSONResponse:
    return JSONResponse(body(value, detail))


def _rendered(value: bool) -> bytes:
    detail = {"message": "accepted" if value else "refused"}
    return json.dumps(body(value, detail), ensure_ascii=False, separators=(",", ":")).encode("utf-8")  # as JSONResponse


#: the two answers a decided login can get, rendered once: a reject is these bytes whatever failed
_LOGIN = {True: _rendered(True), False: _rendered(False)}


def login(accepted: bool) -> Response:
    """A decided login. The detail is one of two fixed messages: a reject says nothing of its cause."""
    return Response(_LOGIN[bool(accepted)], media_type="application/json")


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "result": {"status": False, "error": {"code": status, "message": message}},
            "version": VERSION,
        },
        status_code=status,
        headers=headers,
    )
