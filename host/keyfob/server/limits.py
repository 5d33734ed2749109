"""What a request may look like, checked before any verifier call (so a refused request writes
nothing): a body of at most :data:`BODY_MAX` bytes, JSON or a URL-encoded form, known fields only,
each a string of bounded length in valid UTF-8 without control characters. The rate per source is
not here: it is the verifier's throttle."""

from __future__ import annotations

import json
import re
import unicodedata
from urllib.parse import parse_qsl

from .answers import ApiError, error

BODY_MAX = 16 * 1024
#: the longest value of each field any endpoint takes (a user name and a serial have at most 64)
FIELD_MAX = {
    "user": 64,
    "serial": 64,
    "client": 64,
    "uri": 512,
    "pass": 256,
    "password": 256,
    "code": 16,
    "code1": 16,
    "code2": 16,
    "description": 200,
    "state": 16,
    "action": 32,
    "limit": 8,
    "wide": 5,
    "twofa": 5,
}
FORM = "application/x-www-form-urlencoded"
_FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]{0,31}\Z")
JSON = "application/json"


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is answered 413 without reading the rest, whether
    its Content-Length says so or it streams (chunked) past the limit."""

    def __init__(self, app, limit: int = BODY_MAX):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    return await self._refuse(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        await error(413, f"the request body is larger than {self.limit:,} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


def _content_type(headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def text(name: str, value) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"field {name!r} must be a string")
    if len(value) > FIELD_MAX.get(name, 64):
        raise ApiError(400, f"field {name!r} is longer than {FIELD_MAX.get(name, 64)} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"field {name!r} is not valid UTF-8") from None
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ApiError(400, f"field {name!r} holds a control character")
    return value


def fields(raw: bytes, headers, *, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict:
    """The request's fields from a JSON object or a URL-encoded form: every ``required`` field, the
    ``optional`` ones given, and nothing else (an unknown field is refused: it may be a typo that
    would change the meaning). Values are strings; :class:`ApiError` 400/415 otherwise."""
    ctype = _content_type(headers)
    if not raw and not required:
        data = {}
    elif ctype == JSON:
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(400, "the body is not valid UTF-8") from None
        except ValueError:
            raise ApiError(400, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
    elif ctype == FORM:
        try:
            form = raw.decode("utf-8")
            pairs = parse_qsl(form, keep_blank_values=True, strict_parsing=bool(raw), errors="strict")
        except UnicodeDecodeError:
            raise ApiError(400, "the form is not valid UTF-8") from None
        except ValueError:
            raise ApiError(400, "the form is malformed") from None
        data = {}
        for k, v in pairs:
            if k in data:
                raise ApiError(400, f"field {k!r} is given twice")
            data[k] = v
    else:
        raise ApiError(415, f"send the fields as {JSON} or {FORM}")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:  # named only if it looks like a field name: anything else may be a misplaced secret
        name = unknown[0]
        raise ApiError(400, f"unknown field {name!r}" if _FIELD_NAME.match(name) else "unknown field")
    missing = [k for k in required if k not in data]
    if missing:
        raise ApiError(400, f"field {missing[0]!r} is required")
    return {k: text(k, v) for k, v in data.items()}
