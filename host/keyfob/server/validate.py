"""``POST /validate/check``: one login, answered accept or reject in privacyIDEA's shape.

Fields (JSON object or URL-encoded form): ``user`` (or ``serial``: the token's owner logs in) and
``pass``, the password and code in one string as the user typed them (for a key made
``--code-only``: the code alone, the password having been checked by the relying party). HTTP 200
for every decided login, ``value`` true or false; a reject is the same bytes whatever failed. The
``client`` (optional) is the end user's address as the relying party saw it: the verifier's
``source``, throttled per source. Without it the source is the connection's address, which for a
relying party is its own: give ``client``, or that party's concurrent logins share one throttle
key (more than ``user_rate_limit`` in flight at once are refused as throttled)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging

from fastapi import APIRouter, Request
from starlette.datastructures import Headers

from keyfob.verifier import BadInput, DatabaseBusy, VerifierError, steps
from keyfob.verifier.service import check_name
from keyfob.verifier.sql import SqliteStore, WouldWait
from keyfob.verifier.steps import Write
from keyfob.verifier.throttle import source_key

from . import answers, limits
from .answers import ApiError
from .keys import Credentials, authorize, bearer_credentials, via

router = APIRouter()
log = logging.getLogger("keyfob.server")

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
                        "client": {"type": "string", "maxLength": 64, "description": "the end user's address"},
                    },
                    "required": ["pass"],
                    "additionalProperties": False,
                }
            }
            for ctype in (limits.JSON, limits.FORM)
        },
    }
}


def _checkers(app) -> concurrent.futures.ThreadPoolExecutor:
    """The worker's queue of logins: ``app.state.logins_in_flight`` threads check them, the others
    wait their turn in order. A plain executor: anyio's hand-off (a capacity limiter and its own
    worker threads) cost 0.42 ms of CPU a request, this one 0.19 (a do-nothing call under uvicorn,
    against none: more than a SQLite login's own share)."""
    pool = getattr(app.state, "login_checkers", None)
    if pool is None:
        pool = app.state.login_checkers = concurrent.futures.ThreadPoolExecutor(
            app.state.logins_in_flight, thread_name_prefix="login"
        )
    return pool


#: a hash at most this costly (Argon2 memory in KiB times passes) is verified on the event loop;
#: the fast test profile is 8, the production default 196,608 (a fifth of a second: on a thread)
LOOP_HASH_COST = 64


def _hash_cost(hashed: str) -> int | None:
    """An Argon2 hash's memory (KiB) times passes, from its parameters; None if unreadable."""
    try:
        params = dict(kv.split("=", 1) for kv in hashed.split("$")[3].split(","))
        return int(params["m"]) * int(params["t"])
    except (IndexError, KeyError, ValueError):
        return None


def _on_loop(app) -> bool:
    """Whether this server runs logins' steps on its event loop: on a SQLite file, whose store
    can try a transaction without waiting (:meth:`keyfob.verifier.sql.SqliteStore.write_now`)."""
    return isinstance(app.state.verifier.store, SqliteStore)


async def _run_steps(app, login):
    """Drive a login's steps (:mod:`keyfob.verifier.steps`) from the event loop: each transaction
    here (:func:`_write`: never a wait that blocks the loop); a cheap hash here, a costly one on a
    login thread. On one thread of the loop's own a login gives the GIL away far less often
    (docs/bench.md), which is what this is for. The login is answered once its commits are on
    disk: one sync of the log after its last, which covers the ones before (a commit's outcome
    in between only leads to the login's next step, never to an answer)."""
    store, pw = app.state.verifier.store, app.state.verifier.passwords
    wrote = False
    try:
        step = next(login)
        while True:
            rest = None  # what a login thread needs to end this step, should the loop stop in it
            try:
                if type(step) is Write:
                    rest = functools.partial(steps.outcome, step, store.write, pw.verify)
                    out = await _write(store, step.fn)
                    wrote = True
                else:
                    cost = _hash_cost(step.hashed)
                    if cost is not None and cost <= LOOP_HASH_COST:
                        out = pw.verify(step.hashed, step.password)
                    else:
                        job = _checkers(app).submit(pw.verify, step.hashed, step.password)
                        rest = functools.partial(_hash_outcome, job, step, pw.verify)
                        out = await asyncio.wrap_future(job)
            except asyncio.CancelledError:
                # the loop is stopping while this step waits: the step's end (a transaction not
                # yet run; a hash's own job if it still runs) and the rest of the login on a login
                # thread, as a login on a thread would have ended
                _checkers(app).submit(_finish, app, login, rest)
                raise
            except Exception as exc:
                step = login.throw(exc)
            else:
                step = login.send(out)
    except StopIteration as stop:
        if wrote:
            await asyncio.wrap_future(store.on_disk())
        return stop.value
    except Exception:
        if wrote:  # a refusal after a commit (a bad text's audit row) waits for it as well
            await asyncio.wrap_future(store.on_disk())  # a failed sync is then the answer
        raise


#: the longest pause between two tries of a loop's transaction while the file is locked (the
#: loop's timers round to whole milliseconds: the pauses are in fact 0 or 1 ms)
POLL_MAX_S = 0.001


async def _write(store, fn):
    """A login's transaction from the loop: tried at once (:meth:`SqliteStore.write_now`), and
    while the file is locked (another process's writer, or this one's on a thread) tried again
    after a pause (up to :data:`POLL_MAX_S`) in which the loop serves other requests; after the store's wait,
    :class:`DatabaseBusy`, as :meth:`SqliteStore.write` would."""
    loop = asyncio.get_running_loop()
    deadline, pause = loop.time() + store.wait, 0.0002
    while True:
        try:
            return store.write_now(fn)
        except WouldWait:
            if loop.time() >= deadline:
                raise DatabaseBusy(
                    f"the database is locked by another process (waited {store.wait:g} s); try again"
                ) from None
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, POLL_MAX_S)


def _hash_outcome(job, step, verify):
    """A hash's outcome: its job's, if the cancel did not take the job off the queue before it ran."""
    return job.result() if not job.cancelled() else steps.outcome(step, None, verify)


def _finish(app, login, rest) -> None:
    """On a login thread: the end of the step a stopping loop left (``rest()``: its outcome), then
    the login's other steps."""
    verifier = app.state.verifier
    write, verify = verifier.store.write, verifier.passwords.verify
    try:
        try:
            out, exc = rest(), None
        except Exception as e:  # the step's failure is the login's to handle, as in steps.run
            out, exc = None, e
        steps.resume(login, write, verify, out=out, exc=exc)
    except Exception:
        log.exception("a login left by the stopping server failed as it was finished")


def _slots(app) -> asyncio.Semaphore:
    """The worker's logins under way at once (``app.state.logins_in_flight``), as on the threads:
    more would each hold a throttle reservation while they wait for a login thread, and a burst
    of one relying party's logins (one source) would then be throttled though each is right."""
    slots = getattr(app.state, "login_slots", None)
    if slots is None:
        slots = app.state.login_slots = asyncio.Semaphore(app.state.logins_in_flight)
    return slots


async def _login(app, cred, name: str | None, serial: str | None, secret: str, source: str | None) -> bool:
    async with _slots(app):
        key, name = _key_and_name(app, cred, name, serial)  # reads that wait for no writer under WAL
        verifier = app.state.verifier
        if key.code_only:
            login = verifier.check_code_steps(name, secret, source=source, via=via(key))
        else:
            login = verifier.verify_steps(name, secret, source=source, via=via(key))
        return (await _run_steps(app, login)).accepted


async def _check_on_loop(app, cred, name: str | None, serial: str | None, secret: str, source: str | None) -> bool:
    """A login named by its user or its token, on the loop. Shielded: once started it runs to its
    end even if its request is cancelled, as one on a thread would (a task of its own, kept until
    done)."""
    task = asyncio.ensure_future(_login(app, cred, name, serial, secret, source))
    running = getattr(app.state, "logins_running", None)
    if running is None:
        running = app.state.logins_running = set()
    running.add(task)
    task.add_done_callback(running.discard)
    return await asyncio.shield(task)


def _key_and_name(app, cred, name: str | None, serial: str | None):
    """The request's API key (401/403 first: nothing is looked up for a caller without one), and
    whom the login logs in: ``name``, or for a login named by its token, the token's owner. A
    token with no owner (unknown, or not linked) still gets a full attempt, under a name no user
    can have, so that it costs and is audited as any other refusal (an unknown user)."""
    key = authorize(app.state.keys, cred, "validate")
    if serial is not None:
        name = app.state.verifier.token_owner(serial)
        name = name if name is not None else "-" + serial
    return key, name


def _check(app, cred, name: str | None, serial: str | None, secret: str, source: str | None) -> bool:
    """In one worker thread (one hand-off per login): the key, then the login."""
    key, name = _key_and_name(app, cred, name, serial)
    verifier = app.state.verifier
    if key.code_only:
        return verifier.check_code(name, secret, source=source, via=via(key)).accepted
    return verifier.verify(name, secret, source=source, via=via(key)).accepted


async def _decide(app, raw: bytes, headers, cred, peer: str | None):
    """One ``/validate/check``: the fields, then the key and the login (on the event loop on a
    SQLite file, :func:`_check_on_loop`; else in a worker thread); the answer."""
    f = limits.fields(raw, headers, required=("pass",), optional=("user", "serial", "client"))
    if ("user" in f) == ("serial" in f):
        raise ApiError(400, "give either user or serial")
    if "user" in f:
        try:
            check_name(f["user"])
        except BadInput as exc:
            raise ApiError(400, str(exc)) from None
    source = f["client"] if "client" in f else peer
    if source is not None:
        try:
            source_key(source)  # the library's rule for a source, before anything is written
        except BadInput as exc:
            raise ApiError(400, str(exc)) from None
    if _on_loop(app):
        return answers.login(await _check_on_loop(app, cred, f.get("user"), f.get("serial"), f["pass"], source))
    check = functools.partial(_check, app, cred, f.get("user"), f.get("serial"), f["pass"], source)
    accepted = await asyncio.get_running_loop().run_in_executor(_checkers(app), check)
    return answers.login(accepted)


@router.post("/validate/check", tags=["validate"], openapi_extra=_BODY, summary="Check one login")
async def check(request: Request, cred: Credentials):
    """The route of the OpenAPI description; a server's requests are answered by :class:`LoginPath`
    (this is the same call, reached only where that middleware is left out)."""
    return await _decide(request.app, await request.body(), request.headers, cred, _peer(request.scope))


def _peer(scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


class LoginPath:
    """ASGI middleware: ``POST /validate/check`` answered here, around FastAPI's router, its
    dependency solving and its exception middleware, which together took a quarter of a worker's
    CPU at 1,000 logins/s (docs/bench.md). What a login needs of them is here: the bearer key as
    ``HTTPBearer`` reads it, the body, the answer of an :class:`ApiError` or a library refusal.
    Anything else that goes wrong propagates to the app's 500 handler, as from the route."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/validate/check" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        raw = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return  # the client went away: no one to answer
            raw += msg.get("body", b"")
            if not msg.get("more_body", False):
                break
        headers = Headers(scope=scope)
        try:
            answer = await _decide(scope["app"], bytes(raw), headers, bearer_credentials(headers), _peer(scope))
        except (ApiError, VerifierError) as exc:
            answer = answers.refusal(exc, "POST", scope["path"])
        await answer(scope, receive, send)
