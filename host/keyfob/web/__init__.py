"""The security center in a browser (issue 13): server-rendered pages under ``/web`` of ``keyfob
serve``, over the same verifier library as every other front. :func:`create_web` makes the app;
:mod:`.pages` has the pages, :mod:`.frame` what every page goes through, :mod:`.sessions` the signed
cookie, :mod:`.headers` the security headers. Templates and the stylesheet are package data."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from keyfob.verifier import Verifier
from keyfob.verifier.accounts import Accounts

from . import pages
from .headers import SecurityHeaders
from .sessions import Cookies

STATIC = Path(__file__).parent / "static"


def create_web(verifier: Verifier) -> FastAPI:
    """The pages over ``verifier``; mount it at ``/web`` (the session cookie's path)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.verifier = verifier
    app.state.accounts = Accounts(verifier)
    app.state.cookies = Cookies(verifier._box.session_key())
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(SecurityHeaders)
    return app
