"""The frame every page goes through: read the session, check who may see the page, check the CSRF
token and the form's fields (the API's rules, :func:`keyfob.server.limits.fields`), run the page in
a worker thread (the verifier's calls block), render its template and give the session cookie back.
Pages only say what they need (``need="user"``, the fields) and what they show."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from keyfob import errors
from keyfob.server import limits
from keyfob.server.answers import ApiError
from keyfob.verifier import BadInput, DatabaseBusy, Verifier, VerifierError
from keyfob.verifier.accounts import Account, Accounts
from keyfob.verifier.throttle import source_key

from . import sessions
from .sessions import Session

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_ENV.filters["when"] = lambda ts: (
    "—" if ts is None else datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
)


class PageRefused(errors.Refused):
    """A page refused before it ran: a status, a title and one line for a person."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


@dataclass
class Ctx:
    request: Request
    verifier: Verifier
    accounts: Accounts
    cookies: sessions.Cookies
    session: Session
    account: Account | None
    now: float
    fields: dict = field(default_factory=dict)
    cookie: Session | None = None  # the session to give back (None: the one read, touched)

    @property
    def user(self) -> str:
        assert self.account is not None
        return self.account.name

    @property
    def actor(self) -> str:
        return "web:" + self.user

    @property
    def source(self) -> str | None:
        """The client's address as the verifier's throttle takes it (None if it takes none)."""
        host = self.request.client.host if self.request.client else None
        if host is None:
            return None
        try:
            source_key(host)
        except BadInput:
            return None
        return host

    def page(self, template: str, status: int = 200, **values) -> HTMLResponse:
        values.setdefault("errors", {})
        values.setdefault("form", {})
        html = _ENV.get_template(template).render(csrf=(self.cookie or self.session).csrf, me=self.account, **values)
        return HTMLResponse(html, status_code=status)

    def go(self, path: str) -> RedirectResponse:
        return RedirectResponse("/web" + path, status_code=303)


def _account(ctx_accounts: Accounts, s: Session) -> Account | None:
    """The signed-in user, if the session still stands: the user exists and has not signed out since."""
    if s.user is None:
        return None
    a = ctx_accounts.account(s.user)
    if a is None or a.generation != s.generation:
        return None
    return a


def _error_page(status: int, title: str, message: str, csrf: str, me=None) -> HTMLResponse:
    html = _ENV.get_template("error.html").render(title=title, message=message, csrf=csrf, me=me, errors={}, form={})
    return HTMLResponse(html, status_code=status)


async def run(request: Request, handler, *, need: str | None = "user", required=(), optional=()) -> Response:
    """Serve one page: ``need`` is None (anyone), ``"user"`` (signed in) or ``"admin"`` (help desk)."""
    post = request.method == "POST"
    raw = await request.body() if post else b""
    state = request.app.state
    cookies: sessions.Cookies = state.cookies

    def work() -> Response:
        now = state.verifier._clock()
        s = cookies.load(request.cookies.get(sessions.COOKIE), now)
        account = _account(state.accounts, s)
        if account is None and s.user is not None:
            s = sessions.fresh()  # signed out elsewhere, or the user is gone
        ctx = Ctx(request, state.verifier, state.accounts, cookies, s, account, now)
        try:
            if need is not None and account is None:
                if post:
                    raise PageRefused(
                        403, "Signed out", "Your session has ended. Sign in again, then repeat what you did."
                    )
                return ctx.go("/signin")
            if need == "admin" and not account.admin:
                raise PageRefused(403, "Help desk only", "These pages are for help-desk staff.")
            if post:
                try:
                    f = limits.fields(raw, request.headers, required=("csrf", *required), optional=optional)
                except ApiError as exc:
                    if not sessions.csrf_ok(s, _sent_csrf(raw)):
                        raise PageRefused(403, "Form refused", _CSRF_MESSAGE) from None
                    raise PageRefused(400, "Form refused", exc.message[:1].upper() + exc.message[1:] + ".") from None
                if not sessions.csrf_ok(s, f.pop("csrf")):
                    raise PageRefused(403, "Form refused", _CSRF_MESSAGE)
                ctx.fields = f
            else:
                ctx.fields = {k: limits.text(k, v) for k, v in request.query_params.items() if k in optional}
            resp = handler(ctx)
        except PageRefused as exc:
            resp = _error_page(exc.status, exc.title, exc.message, s.csrf, account)
        except ApiError as exc:
            resp = _error_page(400, "Not understood", exc.message, s.csrf, account)
        except DatabaseBusy:
            resp = _error_page(503, "Busy", "The server is busy. Try again in a moment.", s.csrf, account)
        except VerifierError as exc:  # a refusal the page did not expect (a change made meanwhile)
            resp = _error_page(409, "Not done", str(exc), s.csrf, account)
        give = ctx.cookie or cookies.touch(ctx.session, now)
        resp.set_cookie(
            sessions.COOKIE,
            cookies.dump(give),
            max_age=sessions.LIFETIME,
            path="/web",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return resp

    return await run_in_threadpool(work)


_CSRF_MESSAGE = "This form was not sent from this site's page, or the page is too old. Reload it and try again."


def _sent_csrf(raw: bytes) -> str | None:
    """The csrf field of a form the field rules refused (to tell a forged post from a bad one)."""
    try:
        got = parse_qs(raw.decode("utf-8", "replace")).get("csrf")
    except ValueError:
        return None
    return got[0] if got and len(got) == 1 else None
