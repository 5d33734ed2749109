"""The app factory. ``create_app(verifier)`` for tests and embedding; ``from_env()`` is what uvicorn
starts in each worker (``keyfob serve`` passes the database and key file in the environment, the
way the CLI reads them)."""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException

from keyfob import __version__
from keyfob.verifier import Verifier, VerifierError
from keyfob.verifier import db as vdb
from keyfob.verifier.apikeys import ApiKeys
from keyfob.verifier.db import ENV_DB, default_db
from keyfob.verifier.passwords import profile_from_env

from . import admin, answers, validate
from .answers import ApiError
from .limits import BodyLimit

log = logging.getLogger("keyfob.server")


def logins_in_flight(db: str) -> int:
    """How many logins a worker checks at once; the others wait their turn, in order. SQLite runs one
    write at a time for the whole file, and a store's writers take turns (:mod:`keyfob.verifier.sql`),
    so on SQLite two: one can hash a password while the other writes. Each more thread only
    contends for the GIL with the event loop: at 1,300-1,600 logins/s, four cost 1.1 ms of CPU a
    login against two's 0.85 (docs/bench.md). On PostgreSQL a login mostly waits for the server,
    so more overlap, within SQLAlchemy's pool (5 + 10 overflow). Either way this bounds a worker's
    Argon2 memory (64 MiB a hash)."""
    return 2 if vdb.sqlite_path(vdb.to_url(db)) is not None else 8


def create_app(verifier: Verifier, *, in_flight: int = 8) -> FastAPI:
    app = FastAPI(
        title="keyfob verifier",
        version=__version__,
        description="One-time-code logins in privacyIDEA's shape (`POST /validate/check`) and the admin calls. "
        "Every call needs an API key: `Authorization: Bearer <key>` (`keyfob server api-key add`).",
        # no Swagger UI: its page loads a CDN's script, and on the security center's origin that
        # script could read /web pages with the user's cookie; the description stays at /openapi.json
        docs_url=None,
        redoc_url=None,
    )
    app.state.verifier = verifier
    app.state.logins_in_flight = in_flight
    app.state.keys = ApiKeys(verifier)
    app.include_router(validate.router)
    app.include_router(admin.router)
    from keyfob.web import create_web  # the pages import jinja2: only when an app is made

    app.mount("/web", create_web(verifier))

    @app.get("/", include_in_schema=False)
    async def _home():
        return RedirectResponse("/web/", status_code=307)

    @app.get("/docs", include_in_schema=False)
    async def _docs():  # the OpenAPI description itself (tools render it), not a page with a CDN's script
        return RedirectResponse("/openapi.json", status_code=307)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return answers.refusal(exc, request.method, request.url.path)

    @app.exception_handler(VerifierError)
    async def _verifier_error(request: Request, exc: VerifierError):
        return answers.refusal(exc, request.method, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        return answers.error(400, f"{where or 'request'}: {first.get('msg', 'not valid')}".lower())

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return answers.error(exc.status_code, str(exc.detail).lower())

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return answers.error(500, "internal error (see the server's log)")

    app.add_middleware(validate.LoginPath)  # inside BodyLimit: a login's body is limited too
    app.add_middleware(BodyLimit)
    return app


def from_env() -> FastAPI:
    """The app over ``$KEYFOB_DB`` (and the key of ``$KEYFOB_KEY_FILE`` / ``$KEYFOB_KEY``): uvicorn's factory."""
    db = os.environ.get(ENV_DB) or default_db()
    verifier = Verifier.open(db, password_profile=profile_from_env(), serving=True)
    return create_app(verifier, in_flight=logins_in_flight(db))
