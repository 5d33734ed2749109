"""``keyfob validate``, ``keyfob backup-codes`` and ``keyfob audit``.

``validate`` exits 0 only for an accepted login, 1 for a refused one (whatever the cause: the same
line and code for all); errors have the README's codes (2 text that is not UTF-8, 3 a database that
is missing or stays locked...).
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
@click.option(
    "--source",
    default=None,
    metavar="ADDR",
    help="Where the login comes from (e.g. $PAM_RHOST): attempts are throttled per source as well.",
)
@click.option(
    "--explain",
    is_flag=True,
    help="Admin option: also say why (the reason in the audit log, e.g. wrong-code, locked). Never "
    "give this output to the one logging in.",
)
@db_options
@json_option
@handle_errors
def validate(user_name, secret, code, code_only, source, explain, db, key_file, as_json) -> None:
    """Check a login of USER: the password followed by the code in one field (PASS+CODE), or PASS
    CODE, or the password alone for users without 2FA. A backup code works in place of the code.

    The answer is `accepted` (exit 0) or `refused` (exit 1), the same for every cause: the reason
    goes to the audit log (`keyfob audit`) and, with --explain, to the admin.

    Leave SECRET out or give `-` to read it from one line of standard input, which keeps it out of
    the process list and the shell history.
    """
    if secret is None or secret == "-":
        secret = read_secret("Password+code", from_stdin=secret == "-")
    if code_only and code is not None:
        raise click.UsageError("--code-only takes one code")
    with open_verifier(db, key_file) as v:
        if code_only:
            r = v.check_code(user_name, secret, source=source)
        else:
            r = v.verify(user_name, secret, code, source=source)
    if as_json:
        emit_json({"accepted": r.accepted, **({"reason": r.reason, "serial": r.serial} if explain else {})})
    elif explain:
        why = f"{r.reason}{', token ' + r.serial if r.serial else ''}"
        click.echo(f"{'accepted' if r.accepted else 'refused'} ({why})", err=not r.accepted)
    elif r.accepted:
        click.echo("accepted")
    else:
        click.echo("refused", err=True)
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


def _audit_dict(r) -> dict:
    return {
        "ts": r.ts,
        "actor": r.actor,
        "action": r.action,
        "user": r.user,
        "serial": r.serial,
        "result": r.result,
        "detail": r.detail,
        "count": r.count,
        "source": r.source,
    }


@click.group("audit", invoke_without_command=True)
@click.option("--user", "user_name", default=None, help="Only events about this user.")
@click.option("--serial", default=None, help="Only events about this token.")
@click.option("--action", default=None, help="Only this action (validate, token-link, ...).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@db_options
@json_option
@click.pass_context
@handle_errors
def audit(ctx, user_name, serial, action, limit, db, key_file, as_json) -> None:
    """Show the audit log, newest first (throttled attempts are counted in one row per user or
    source per minute: see the count column). `keyfob audit prune` applies the retention setting."""
    if ctx.invoked_subcommand is not None:
        return
    with open_verifier(db, key_file) as v:
        rows = v.audit(user=user_name, serial=serial, action=action, limit=limit)
    if as_json:
        emit_json([_audit_dict(r) for r in rows])
        return
    from rich.table import Table

    t = Table("time (UTC)", "actor", "action", "user", "serial", "result", "detail", "count", "source")
    for r in rows:
        t.add_row(
            when(r.ts),
            r.actor,
            r.action,
            r.user or "",
            r.serial or "",
            r.result,
            r.detail or "",
            str(r.count),
            r.source or "",
        )
    console().print(t)


@audit.command("prune")
@db_options
@json_option
@handle_errors
def prune(db, key_file, as_json) -> None:
    """Delete audit rows older than the retention setting (`audit_days`; also done on its own while
    logins are checked, at most hourly)."""
    with open_verifier(db, key_file) as v:
        n = v.prune_audit(actor=actor())
        days = v.policy.audit_days
    if as_json:
        emit_json({"pruned": n, "audit_days": days})
    else:
        click.echo(f"pruned {n} audit row(s) older than {days} days" if days else "audit rows are kept for ever")


def register(main: click.Group) -> None:
    main.add_command(validate)
    main.add_command(backup_codes)
    main.add_command(audit)
