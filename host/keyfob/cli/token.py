"""``keyfob token``: the inventory (import from seed files) and each token's life cycle."""

from __future__ import annotations

import click

from keyfob.serials import normalize_serial
from keyfob.verifier import SeedFileError

from .server import (
    EXIT_REFUSED,
    actor,
    console,
    db_options,
    emit_json,
    handle_errors,
    json_option,
    open_verifier,
)


@click.group("token")
def token() -> None:
    """Tokens: inventory, linking to users, resync, unlock, lost, revoke."""


def _read_psk(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            text = fh.read().strip()
    except OSError as exc:
        raise SeedFileError(f"cannot read the pre-shared key file {path}: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) not in (16, 24, 32):
        raise SeedFileError(f"{path} does not hold a 128/192/256-bit pre-shared key in hex")
    return key


@token.command("import")
@click.argument("seed_file", type=click.Path(dir_okay=False))
@click.option(
    "--psk-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File with the PSKC pre-shared key in hex (for encrypted seed files).",
)
@click.option("--passphrase-stdin", is_flag=True, help="Read a PSKC passphrase from standard input.")
@db_options
@json_option
@handle_errors
def import_(seed_file, psk_file, passphrase_stdin, db, key_file, as_json) -> None:
    """Put the tokens of SEED_FILE (PSKC, RFC 6030) into the inventory, all or nothing."""
    psk = _read_psk(psk_file)
    passphrase = None
    if passphrase_stdin:
        from .server import read_secret

        passphrase = read_secret("Passphrase", from_stdin=True)
    with open_verifier(db, key_file) as v:
        serials = v.import_seed_file(seed_file, key=psk, passphrase=passphrase, actor=actor())
    if as_json:
        emit_json({"imported": serials})
    else:
        click.echo(f"imported {len(serials)} token(s): {', '.join(serials)}")


def _token_dict(t) -> dict:
    return {
        "serial": t.serial,
        "mode": t.mode,
        "algorithm": t.algorithm,
        "digits": t.digits,
        "period": t.period if t.mode == "totp" else None,
        "state": t.state,
        "user": t.user,
        "description": t.description,
        "counter": t.counter if t.mode == "hotp" else None,
        "last_step": t.last_step if t.mode == "totp" else None,
        "drift": t.drift if t.mode == "totp" else None,
        "fail_count": t.fail_count,
        "locked": t.locked,
        "locked_until": t.locked_until,
    }


@token.command("list")
@click.option("--user", "user_name", default=None, help="Only this user's tokens.")
@click.option(
    "--state", type=click.Choice(["unassigned", "active", "disabled", "lost", "revoked"]), default=None
)
@db_options
@json_option
@handle_errors
def list_(user_name, state, db, key_file, as_json) -> None:
    """List tokens (never their seeds)."""
    with open_verifier(db, key_file) as v:
        tokens = v.list_tokens(user=user_name, state=state)
    if as_json:
        emit_json([_token_dict(t) for t in tokens])
        return
    from rich.table import Table

    t = Table("serial", "type", "state", "user", "counter/step", "drift", "fails", "description")
    for k in tokens:
        kind = f"{k.mode} {k.algorithm} {k.digits}" + (f" {k.period}s" if k.mode == "totp" else "")
        pos = str(k.counter) if k.mode == "hotp" else ("-" if k.last_step < 0 else str(k.last_step))
        fails = str(k.fail_count) + (" locked" if k.locked else "")
        t.add_row(
            k.serial,
            kind,
            k.state,
            k.user or "",
            pos,
            str(k.drift) if k.mode == "totp" else "",
            fails,
            k.description or "",
        )
    console().print(t)


def _outcome(r, as_json, ok_text: str) -> None:
    if as_json:
        emit_json({"accepted": r.accepted, "user": r.user, "serial": r.serial, "reason": r.reason})
    elif r.accepted:
        click.echo(ok_text)
    else:
        click.echo(f"refused: {r.reason}", err=True)
    if not r.accepted:
        raise SystemExit(EXIT_REFUSED)


@token.command("link")
@click.argument("user_name", metavar="USER")
@click.argument("serial")
@click.argument("code")
@click.option("--description", default=None, help="A note, e.g. 'blue key ring'.")
@db_options
@json_option
@handle_errors
def link(user_name, serial, code, description, db, key_file, as_json) -> None:
    """Link inventory token SERIAL to USER, proven by the CODE it shows now."""
    with open_verifier(db, key_file) as v:
        r = v.link(user_name, serial, code, description=description, actor=actor())
    _outcome(r, as_json, f"token {r.serial} linked to {r.user}")


@token.command("resync")
@click.argument("serial")
@click.argument("code1")
@click.argument("code2")
@db_options
@json_option
@handle_errors
def resync(serial, code1, code2, db, key_file, as_json) -> None:
    """Find SERIAL again from two consecutive codes (press twice / wait for the next code)."""
    with open_verifier(db, key_file) as v:
        r = v.resync(serial, code1, code2, actor=actor())
    _outcome(r, as_json, f"token {r.serial} resynchronised")


def _simple(name: str, method: str, done: str, help_text: str):
    @token.command(name, help=help_text)
    @click.argument("serial")
    @db_options
    @handle_errors
    def cmd(serial, db, key_file) -> None:
        with open_verifier(db, key_file) as v:
            getattr(v, method)(serial, actor=actor())
        click.echo(f"token {normalize_serial(serial)} {done}")

    return cmd


_simple("unlink", "unlink", "unlinked (back in the inventory)", "Remove SERIAL from its user.")
_simple("unlock", "unlock", "unlocked", "Clear the fail count and lock of SERIAL.")
_simple("revoke", "revoke", "revoked", "Refuse SERIAL's codes for good (cannot be linked again).")
_simple("disable", "disable", "disabled", "Refuse SERIAL's codes until enabled again.")
_simple("enable", "enable", "enabled", "Accept SERIAL's codes again after `disable`.")


@token.command("lost")
@click.argument("serial")
@db_options
@json_option
@handle_errors
def lost(serial, db, key_file, as_json) -> None:
    """Mark SERIAL lost (its codes are refused at once) and print backup codes for its owner."""
    with open_verifier(db, key_file) as v:
        codes = v.mark_lost(serial, actor=actor())
        owner = v.token(serial).user
    if as_json:
        emit_json({"serial": normalize_serial(serial), "user": owner, "backup_codes": codes})
        return
    click.echo(
        f"token {normalize_serial(serial)} marked lost. Backup codes for {owner} (each works once; "
        "shown only now):"
    )
    for c in codes:
        click.echo(f"  {c}")


def register(main: click.Group) -> None:
    main.add_command(token)
