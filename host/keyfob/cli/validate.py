"""``keyfob validate``, ``keyfob backup-codes`` and ``keyfob audit``.

``validate`` exits 0 only for an accepted login, 1 for a refused one, 2 for bad input.
"""

from __future__ import annotations

import click

from ._common import EXIT_REFUSED, console, emit_json, read_secret
from .server import actor, db_options, handle_errors, json_option, open_verifier, when


@click.command("validate")
@click.argument("user_name", metavar="USER")
@click.argument("secret", required=False, metavar="[PASS+CODE|-]")
@click.argument("code", required=False)
@click.option(
    "--code-only",
    is_flag=True,
    help="SECRET is the code alone, with no password check: only for a stack that has checked the "
    "password before (e.g. PAM). Wrong codes count against the user's tokens.",
)
@db_options
@json_option
@handle_errors
def validate(user_name, secret, code, code_only, db, key_file, as_json) -> None:
    """Check a login of USER: the password followed by the code in one field (PASS+CODE), or PASS
    CODE, or the password alone for users without 2FA. A backup code works in place of the code.

    Leave SECRET out or give `-` to read it from one line of standard input, which keeps it out of
    the process list and the shell history.
    """
    if secret is None or secret == "-":
        secret = read_secret("Password+code", from_stdin=secret == "-")
    with open_verifier(db, key_file) as v:
        if code_only:
            if code is not None:
                raise click.UsageError("--code-only takes one code")
            r = v.check_code(user_name, secret)
        else:
            r = v.verify(user_name, secret, code)
    if as_json:
        emit_json({"accepted": r.accepted, "user": r.user, "reason": r.reason, "serial": r.serial})
    elif r.accepted:
        click.echo(f"accepted ({r.reason}{', token ' + r.serial if r.serial else ''})")
    else:
        click.echo(f"refused: {r.reason}", err=True)
    if not r.accepted:
        raise SystemExit(EXIT_REFUSED)


@click.command("backup-codes")
@click.argument("user_name", metavar="USER")
@click.option("--count", type=click.IntRange(1, 100), default=None, help="How many (default 10).")
@db_options
@json_option
@handle_errors
def backup_codes(user_name, count, db, key_file, as_json) -> None:
    """Make new single-use backup codes for USER (old unused ones stop working). Shown only now."""
    with open_verifier(db, key_file) as v:
        codes = v.new_backup_codes(user_name, count=count, actor=actor())
    if as_json:
        emit_json({"user": user_name, "backup_codes": codes})
        return
    click.echo(f"backup codes for {user_name} (each works once; shown only now):")
    for c in codes:
        click.echo(f"  {c}")


@click.command("audit")
@click.option("--user", "user_name", default=None, help="Only events about this user.")
@click.option("--serial", default=None, help="Only events about this token.")
@click.option("--action", default=None, help="Only this action (validate, token-link, ...).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@db_options
@json_option
@handle_errors
def audit(user_name, serial, action, limit, db, key_file, as_json) -> None:
    """Show the audit log, newest first."""
    with open_verifier(db, key_file) as v:
        rows = v.audit(user=user_name, serial=serial, action=action, limit=limit)
    if as_json:
        emit_json(
            [
                {
                    "ts": r.ts,
                    "actor": r.actor,
                    "action": r.action,
                    "user": r.user,
                    "serial": r.serial,
                    "result": r.result,
                    "detail": r.detail,
                }
                for r in rows
            ]
        )
        return
    from rich.table import Table

    t = Table("time (UTC)", "actor", "action", "user", "serial", "result", "detail")
    for r in rows:
        t.add_row(when(r.ts), r.actor, r.action, r.user or "", r.serial or "", r.result, r.detail or "")
    console().print(t)


def register(main: click.Group) -> None:
    main.add_command(validate)
    main.add_command(backup_codes)
    main.add_command(audit)
