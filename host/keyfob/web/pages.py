"""The pages: sign in and out, the security center (my tokens; add, resync, remove; two-factor off;
backup codes) and the help desk. Each page is one handler run by :func:`.frame.run`; each action is
one or two library calls under the actor ``web:NAME``, so the library audits who did it."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Request

from keyfob.verifier import BadInput, Result, TokenStateError, UnknownToken, UnknownUser, VerifierError
from keyfob.verifier.results import THROTTLED

from . import sessions
from .frame import Ctx, PageRefused, run

router = APIRouter()

#: the one answer to a refused sign-in, whatever was wrong
SIGNIN_FAILED = "Sign-in failed."
_CODE_REFUSED = "That code was not accepted. Use the newest code: press the button again and type the new one."
#: a re-authentication refused unchecked: the user is in back-off after failed tries
_WAIT = "Too many failed tries. Wait a few minutes, then try again."
#: the one answer to a token that could not be added, whatever was wrong (unknown, in use, wrong code)
_ADD_REFUSED = "Not added: check the serial number, press the button again and type the new code."


def _msg(exc: VerifierError) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


# -- sign in and out ---------------------------------------------------------------------------------


@router.get("/", include_in_schema=False)
async def home(request: Request):
    return await run(request, lambda ctx: ctx.go("/security" if ctx.account else "/signin"), need=None)


def _signin_form(ctx: Ctx, status=200, separate=None, **values):
    values.setdefault("out", ctx.fields.get("out") == "1")
    separate = ctx.fields.get("separate") == "1" if separate is None else separate
    return ctx.page("signin.html", status, separate=separate, **values)


@router.get("/signin")
async def signin_page(request: Request):
    return await run(request, _signin_form, need=None, optional=("separate", "out"))


def _finish(ctx: Ctx, user: str, password: str, code: str | None, separate: bool):
    """The one check of a sign-in: a new session, or the one refusal whatever was wrong."""
    r = ctx.verifier.verify(user, password, code, source=ctx.source, via="web")
    account = ctx.accounts.account(user) if r.accepted else None
    if account is None:
        return _signin_form(ctx, 401, separate=separate, failed=True, form={"user": user})
    ctx.cookie = sessions.signed_in(account.name, account.generation, ctx.now)
    return ctx.go("/security")


@router.post("/signin")
async def signin(request: Request):
    def one_field(ctx: Ctx):
        return _finish(ctx, ctx.fields["user"], ctx.fields["password"], None, False)

    return await run(request, one_field, need=None, required=("user", "password"))


def _first_step(ctx: Ctx):
    """The password alone, kept sealed in the cookie for the code's step; nothing is checked yet."""
    f = ctx.fields
    sealed = ctx.cookies.seal(f["user"], f["password"], ctx.now, _generation(ctx, f["user"]))
    ctx.cookie = replace(ctx.session, pending=sealed)
    return ctx.go("/signin/code")


@router.post("/signin/password")
async def signin_password(request: Request):
    return await run(request, _first_step, need=None, required=("user", "password"))


def _generation(ctx: Ctx, user: str) -> int:
    account = ctx.accounts.account(user)
    return -1 if account is None else account.generation


def _first(ctx: Ctx) -> sessions.FirstStep | None:
    """The first step in the cookie, if fresh and sealed since the user's last sign-out."""
    first = ctx.cookies.unseal(ctx.session.pending, ctx.now)
    return first if first is not None and first.generation == _generation(ctx, first.user) else None


def _code_page(ctx: Ctx):
    first = _first(ctx)
    if first is None:
        return ctx.go("/signin?separate=1")
    return ctx.page("signin_code.html", user=first.user)


def _second_step(ctx: Ctx):
    first = _first(ctx)
    # one try per first step in this browser
    ctx.cookie = replace(ctx.session, pending=None)
    # and one try per first step at all: a copy of the cookie, in another browser, has none left
    if first is None or not ctx.accounts.use_once(first.tag, first.until):
        return ctx.go("/signin?separate=1")
    return _finish(ctx, first.user, first.password, ctx.fields.get("code") or None, True)


@router.get("/signin/code")
async def signin_code_page(request: Request):
    return await run(request, _code_page, need=None)


@router.post("/signin/code")
async def signin_code(request: Request):
    return await run(request, _second_step, need=None, optional=("code",))


def _signout(ctx: Ctx):
    ctx.accounts.end_sessions(ctx.user, actor=ctx.actor, source=ctx.source)
    ctx.cookie = sessions.fresh()
    return ctx.go("/signin?out=1")


@router.post("/signout")
async def signout(request: Request):
    return await run(request, _signout)


# -- the security center -------------------------------------------------------------------------------


def _mine(ctx: Ctx):
    return ctx.verifier.list_tokens(user=ctx.user)


def _my_token(ctx: Ctx, serial: str):
    for t in _mine(ctx):
        if t.serial == serial:
            return t
    raise PageRefused(404, "No such token", "That is not one of your tokens.")


def _center(ctx: Ctx, status=200, **values):
    tokens = [t for t in _mine(ctx) if t.state != "unassigned"]
    info = ctx.verifier.user(ctx.user)
    return ctx.page(
        "security.html", status, tokens=tokens, dates=ctx.accounts.token_dates(ctx.user), info=info, **values
    )


@router.get("/security")
async def center(request: Request):
    return await run(request, lambda ctx: _center(ctx, done=ctx.fields.get("done")), optional=("done",))


def _done(ctx: Ctx, what: str):
    return ctx.go("/security?done=" + what)


def _reauth(ctx: Ctx, password: str, code: str | None = None) -> Result:
    """The one check of a signed-in user's password (and code) before a change to their account:
    a login, refused unchecked while the user is in back-off (see Logins.verify ``reauth``)."""
    return ctx.verifier.verify(ctx.user, password, code, source=ctx.source, via="web", reauth=True)


def _refused(r: Result, message: str) -> str:
    return _WAIT if r.reason == THROTTLED else message


def _add(ctx: Ctx):
    f = ctx.fields
    form = {k: v for k, v in f.items() if k != "password"}
    if not f.get("serial"):
        return ctx.page("add.html", 400, errors={"serial": "Type the serial number shown on a long press."}, form=form)
    # the new token's code proves only that this browser holds that token: the account's owner
    # shows it is them first, as at sign-in
    r = _reauth(ctx, f["password"])
    if not r.accepted:
        msg = _refused(r, "Not accepted: your password followed by a current code, no space between them.")
        return ctx.page("add.html", 400, errors={"password": msg}, form=form)
    try:
        r = ctx.verifier.link(
            ctx.user,
            f["serial"],
            f["code"],
            description=f.get("description") or None,
            actor=ctx.actor,
            counted=True,  # each failed add counts like a failed login
            source=ctx.source,
        )
    except (UnknownToken, TokenStateError):
        r = None  # the same answer as a wrong code: the page tells no one which serials exist or are used
    except BadInput as exc:
        where = "description" if "description" in str(exc) else "serial" if "serial" in str(exc) else "code"
        return ctx.page("add.html", 400, errors={where: _msg(exc)}, form=form)
    if r is None or not r.accepted:
        return ctx.page("add.html", 400, errors={"code": _ADD_REFUSED}, form=form)
    return _done(ctx, "added")


@router.get("/security/add")
async def add_page(request: Request):
    return await run(request, lambda ctx: ctx.page("add.html"))


@router.post("/security/add")
async def add(request: Request):
    return await run(request, _add, required=("serial", "code", "password"), optional=("description",))


def _resync_page(ctx: Ctx):
    return ctx.page("resync.html", token=_my_token(ctx, ctx.fields.get("serial", "")))


def _resync(ctx: Ctx):
    f = ctx.fields
    tok = _my_token(ctx, f["serial"])
    try:
        r = ctx.verifier.resync(
            tok.serial, f["code1"], f["code2"], user=ctx.user, password=f["password"], actor=ctx.actor
        )
    except (BadInput, TokenStateError) as exc:
        return ctx.page("resync.html", 400, token=tok, errors={"code1": _msg(exc)})
    if not r.accepted:
        msg = _refused(r, "Not found: two codes in a row, pressed one after the other, and your password.")
        return ctx.page("resync.html", 400, token=tok, errors={"code1": msg})
    return _done(ctx, "resynced")


@router.get("/security/resync")
async def resync_page(request: Request):
    return await run(request, _resync_page, optional=("serial",))


@router.post("/security/resync")
async def resync(request: Request):
    return await run(request, _resync, required=("serial", "code1", "code2", "password"))


_LAST_TOKEN = (
    "This is the only token you sign in with, and two-factor sign-in is on: without it you could not "
    "sign in. Add another token or make backup codes first (or turn two-factor off), then remove it."
)


def _locks_out(ctx: Ctx, tok) -> bool:
    """Removing ``tok`` would leave two-factor on with nothing to sign in with."""
    if not ctx.account.twofa or tok.state != "active":
        return False
    others = [t for t in _mine(ctx) if t.state == "active" and t.serial != tok.serial]
    return not others and ctx.verifier.user(ctx.user).backup_codes == 0


def _remove_page(ctx: Ctx):
    tok = _my_token(ctx, ctx.fields.get("serial", ""))
    return ctx.page("remove.html", token=tok, last=_LAST_TOKEN if _locks_out(ctx, tok) else None)


def _remove(ctx: Ctx):
    f = ctx.fields
    tok = _my_token(ctx, f["serial"])
    if _locks_out(ctx, tok):  # refused before anything is checked: nothing to try
        return ctx.page("remove.html", 409, token=tok, last=_LAST_TOKEN)
    wrong = ctx.page("remove.html", 400, token=tok, last=None, errors={"code": "Type the code this token shows now."})
    if not (f["code"].isdigit() and len(f["code"]) == tok.digits):
        return wrong  # not one of its codes (nor a backup code, which would be used up for nothing)
    r = _reauth(ctx, f["password"], f["code"])
    if not r.accepted or r.serial != tok.serial:
        msg = _refused(r, "Your password and the code this token shows now are both needed.")
        return ctx.page("remove.html", 400, token=tok, last=None, errors={"code": msg})
    ctx.verifier.unlink(tok.serial, actor=ctx.actor)
    return _done(ctx, "removed")


@router.get("/security/remove")
async def remove_page(request: Request):
    return await run(request, _remove_page, optional=("serial",))


@router.post("/security/remove")
async def remove(request: Request):
    return await run(request, _remove, required=("serial", "code", "password"))


def _twofa_off(ctx: Ctx):
    f = ctx.fields
    if not ctx.account.twofa:
        return _done(ctx, "twofa-off")
    r = _reauth(ctx, f["password"], f["code"] or None)
    if not r.accepted:
        msg = _refused(r, "Your password and a current code are both needed.")
        return ctx.page("twofa.html", 400, errors={"code": msg})
    ctx.verifier.set_twofa(ctx.user, False, actor=ctx.actor)
    return _done(ctx, "twofa-off")


@router.get("/security/twofa")
async def twofa_page(request: Request):
    return await run(request, lambda ctx: ctx.page("twofa.html"))


@router.post("/security/twofa")
async def twofa(request: Request):
    return await run(request, _twofa_off, required=("password", "code"))


def _backup(ctx: Ctx):
    r = _reauth(ctx, ctx.fields["password"])
    if not r.accepted:
        msg = _refused(r, "Not accepted: your password followed by a current code, no space between them.")
        return ctx.page("backup.html", 400, info=ctx.verifier.user(ctx.user), errors={"password": msg})
    codes = ctx.verifier.new_backup_codes(ctx.user, actor=ctx.actor)
    return ctx.page("codes.html", codes=codes, title="Your new backup codes", who=ctx.user, expires=None)


@router.get("/security/backup")
async def backup_page(request: Request):
    return await run(request, lambda ctx: ctx.page("backup.html", info=ctx.verifier.user(ctx.user)))


@router.post("/security/backup")
async def backup(request: Request):
    return await run(request, _backup, required=("password",))


# -- the help desk -------------------------------------------------------------------------------------

_CHECKS = ("photo ID seen in person", "called back on the number on file", "video call, ID shown", "manager vouched")


def _helpdesk(ctx: Ctx):
    q = ctx.fields.get("q", "")
    try:
        found = ctx.accounts.find(q)
    except BadInput:
        return ctx.page(
            "helpdesk.html", 400, q=q, found=[], errors={"q": "A user name has letters, digits and . _ @ + -."}
        )
    return ctx.page("helpdesk.html", q=q, found=found)


@router.get("/helpdesk")
async def helpdesk(request: Request):
    return await run(request, _helpdesk, need="admin", optional=("q",))


def _person(ctx: Ctx, name: str, status=200, **values):
    try:
        info = ctx.verifier.user(name)
    except UnknownUser:
        raise PageRefused(404, "No such user", "There is no user by that name.") from None
    tokens = [t for t in ctx.verifier.list_tokens(user=name)]
    return ctx.page("helpdesk_user.html", status, person=info, tokens=tokens, checks=_CHECKS, **values)


@router.get("/helpdesk/user")
async def person(request: Request):
    return await run(request, lambda ctx: _person(ctx, ctx.fields.get("name", "")), need="admin", optional=("name",))


def _checked(ctx: Ctx, action: str):
    """Record the identity check the form names, before the action it is for."""
    f = ctx.fields
    if f["how"] not in _CHECKS:
        return _person(ctx, f["name"], 400, errors={"how": "Choose how you checked who the person is."}, form=f)
    try:
        ctx.accounts.note_identity_check(f["name"], f["how"], f.get("note", ""), actor=ctx.actor, action=action)
    except BadInput as exc:
        return _person(ctx, f["name"], 400, errors={"note": _msg(exc)}, form=f)
    except UnknownUser:
        raise PageRefused(404, "No such user", "There is no user by that name.") from None
    return None


def _lost(ctx: Ctx):
    f = ctx.fields
    refused = _checked(ctx, "token-lost " + f["serial"][:64])
    if refused:
        return refused
    tok = next((t for t in ctx.verifier.list_tokens(user=f["name"]) if t.serial == f["serial"]), None)
    if tok is None:
        return _person(ctx, f["name"], 404, errors={"serial": "That token is not this user's."})
    try:
        codes = ctx.verifier.mark_lost(tok.serial, actor=ctx.actor)
    except TokenStateError as exc:
        return _person(ctx, f["name"], 409, errors={"serial": _msg(exc)})
    return ctx.page("codes.html", codes=codes, title=f"Token {tok.serial} is marked lost", who=f["name"], expires=None)


def _backup_for(ctx: Ctx):
    f = ctx.fields
    refused = _checked(ctx, "backup-codes")
    if refused:
        return refused
    codes = ctx.verifier.new_backup_codes(f["name"], actor=ctx.actor)
    return ctx.page("codes.html", codes=codes, title="New backup codes", who=f["name"], expires=None)


def _temporary(ctx: Ctx):
    f = ctx.fields
    refused = _checked(ctx, "temporary-code")
    if refused:
        return refused
    code, until = ctx.accounts.temporary_code(f["name"], actor=ctx.actor)
    return ctx.page("codes.html", codes=[code], title="A temporary code", who=f["name"], expires=until)


_CHECK_FIELDS = ("name", "how")


@router.post("/helpdesk/lost")
async def lost(request: Request):
    return await run(request, _lost, need="admin", required=(*_CHECK_FIELDS, "serial"), optional=("note",))


@router.post("/helpdesk/backup")
async def backup_for(request: Request):
    return await run(request, _backup_for, need="admin", required=_CHECK_FIELDS, optional=("note",))


@router.post("/helpdesk/temporary")
async def temporary(request: Request):
    return await run(request, _temporary, need="admin", required=_CHECK_FIELDS, optional=("note",))
