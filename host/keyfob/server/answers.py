"""The JSON shapes of answers, after privacyIDEA's, so a service wired to privacyIDEA can point at
keyfob: ``{"jsonrpc": "2.0", "id": 1, "result": {"status": true, "value": ...}, "detail": {...},
"version": ...}``. ``status`` says the request was understood; ``value`` is the answer (for a
login: true or false). An error has ``status`` false and ``result.error`` with the HTTP code and
one line for a person."""

from __future__ import annotations

import json
import logging

from fastapi.responses import JSONResponse, Response

from keyfob import __version__
from keyfob.errors import BadInput
from keyfob.verifier import (
    AlreadyExists,
    DatabaseBusy,
    SeedFileError,
    TokenStateError,
    UnknownToken,
    UnknownUser,
    VerifierError,
)
from keyfob.verifier import BadInput as RefusedInput
from keyfob.verifier.apikeys import UnknownApiKey

VERSION = f"keyfob {__version__}"
log = logging.getLogger("keyfob.server")

#: the HTTP status of each refusal the library raises (anything else: 500)
_STATUS = (
    (RefusedInput, 400),  # the verifier's own BadInput, not keyfob.errors' (a base of UnknownToken too)
    (SeedFileError, 400),
    (UnknownUser, 404),
    (UnknownToken, 404),
    (UnknownApiKey, 404),
    (AlreadyExists, 409),
    (TokenStateError, 409),
    (DatabaseBusy, 503),
)


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


def refusal(exc: ApiError | VerifierError, method: str, path: str) -> JSONResponse:
    """The answer to a refused request: an :class:`ApiError` with its own status and headers, or a
    refusal the library raised with its status (:data:`_STATUS`) and its one line; one the table
    does not know is a 500, and logged. The one place for both (the app's handlers, LoginPath)."""
    if isinstance(exc, ApiError):
        return error(exc.status, exc.message, exc.headers)
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    if status == 500:
        log.error("%s %s: %s", method, path, exc)
    return error(status, str(exc))
