"""``keyfob user``: add, list, change passwords, turn 2FA off and on, give the web help desk."""

from __future__ import annotations

import click

from .server import (
    actor,
    console,
    db_options,
    emit_json,
    handle_errors,
    json_option,
    open_verifier,
    read_secret,
)


@click.group("user")
def user() -> None:
    """Users of the verifier."""


@user.command("add")
@click.argument("name")
@click.option("--no-2fa", "no_2fa", is_flag=True, help="Password alone until a token is linked.")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of standard input.")
@db_options
@json_option
@handle_errors
def add(name, no_2fa, password_stdin, db, key_file, as_json) -> None:
    """Add user NAME (the password is prompted for, or read with --password-stdin)."""
    with open_verifier(db, key_file) as v:
        v.check_new_user(name)  # before asking for a password that would be thrown away
        password = read_secret("Password", from_stdin=password_stdin, confirm=True)
        info = v.add_user(name, password, twofa=not no_2fa, actor=actor())
    if as_json:
        emit_json({"user": info.name, "twofa": info.twofa})
    else:
        click.echo(f"added user {info.name} (2FA {'on' if info.twofa else 'off'})")


@user.command("list")
@db_options
@json_option
@handle_errors
def list_(db, key_file, as_json) -> None:
    """List users."""
    with open_verifier(db, key_file) as v:
        users = v.list_users()
    if as_json:
        emit_json(
            [{"user": u.name, "twofa": u.twofa, "tokens": u.tokens, "backup_codes": u.backup_codes} for u in users]
        )
        return
    from rich.table import Table

    t = Table("user", "2FA", "tokens", "backup codes left")
    for u in users:
        t.add_row(u.name, "on" if u.twofa else "off", str(u.tokens), str(u.backup_codes))
    console().print(t)


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of standard input.")
@db_options
@json_option
@handle_errors
def passwd(name, password_stdin, db, key_file, as_json) -> None:
    """Set the password of user NAME."""
    with open_verifier(db, key_file) as v:
        v.user(name)  # unknown user: refused before the password is asked for
        password = read_secret("New password", from_stdin=password_stdin, confirm=True)
        v.set_password(name, password, actor=actor())
    if as_json:
        emit_json({"user": name, "password_changed": True})
    else:
        click.echo(f"password of {name} changed")


def _set_twofa(name, enabled, db, key_file, as_json, text) -> None:
    with open_verifier(db, key_file) as v:
        v.set_twofa(name, enabled, actor=actor())
    if as_json:
        emit_json({"user": name, "twofa": enabled})
    else:
        click.echo(text)


@user.command("disable-2fa")
@click.argument("name")
@db_options
@json_option
@handle_errors
def disable_2fa(name, db, key_file, as_json) -> None:
    """Let user NAME log in with the password alone."""
    _set_twofa(name, False, db, key_file, as_json, f"2FA off for {name}: the password alone now logs in")


@user.command("enable-2fa")
@click.argument("name")
@db_options
@json_option
@handle_errors
def enable_2fa(name, db, key_file, as_json) -> None:
    """Require a code (or backup code) from user NAME again."""
    _set_twofa(name, True, db, key_file, as_json, f"2FA on for {name}")


@user.command("help-desk")
@click.argument("name")
@click.option("--off", is_flag=True, help="Take the help desk away (and end the user's web sessions).")
@db_options
@json_option
@handle_errors
def help_desk(name, off, db, key_file, as_json) -> None:
    """Let user NAME use the help-desk pages of `keyfob serve` (/web/helpdesk)."""
    from keyfob.verifier.accounts import Accounts

    with open_verifier(db, key_file) as v:
        Accounts(v).set_admin(name, not off, actor=actor())
    if as_json:
        emit_json({"user": name, "help_desk": not off})
    else:
        click.echo(f"help desk {'off' if off else 'on'} for {name}")


def register(main: click.Group) -> None:
    main.add_command(user)
