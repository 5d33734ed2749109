"""Security headers on every answer of the web pages: no script at all and styles only from the
site's own stylesheet (CSP), never in a frame, no caching (pages show codes and tokens), no
referrer, and HSTS when served over TLS."""

from __future__ import annotations

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
    "cache-control": "no-store",
}
HSTS = ("strict-transport-security", "max-age=31536000")


class SecurityHeaders:
    """ASGI middleware: the headers above on every answer (set here, so no page can forget them)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = [(k.encode(), v.encode()) for k, v in HEADERS.items()]
        if scope.get("scheme") == "https":
            extra.append((HSTS[0].encode(), HSTS[1].encode()))
        names = {k for k, _ in extra}

        async def with_headers(msg):
            if msg["type"] == "http.response.start":
                kept = [(k, v) for k, v in msg.get("headers", []) if k.lower() not in names]
                msg = {**msg, "headers": kept + extra}
            await send(msg)

        await self.app(scope, receive, with_headers)
