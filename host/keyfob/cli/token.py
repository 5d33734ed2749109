"""``keyfob token``: the inventory (import from seed files) and each token's life cycle."""

from __future__ import annotations

import os
from pathlib import Path

import click

from keyfob.verifier import BadInput, SeedFileError, TokenStateError

from ._common import EXIT_REFUSED, console, emit_json, read_secret
from .server import actor, db_options, handle_errors, json_option, open_verifier


@click.group("token")
def token() -> None:
    """Tokens: inventory (import/export of seed files), linking to users, resync, unlock, lost,
    revoke, software twins."""


def _read_psk(path: str | None) -> bytes | None:
    if path is None:
        return None
    from keyfob.formats import FormatError
    from keyfob.formats._common import read_key_file

    try:
        return read_key_file(path)
    except FormatError as exc:
        raise SeedFileError(str(exc)) from None


def _hex_key(text: str | None) -> bytes | None:
    if text is None:
        return None
    from keyfob.formats import FormatError
    from keyfob.formats.pskc import coerce_key

    try:
        return coerce_key(text, "--key")
    except FormatError:
        raise SeedFileError("--key must be 32, 48 or 64 hex digits (an AES-128/192/256 key)") from None


def _unlocking(key_hex, psk_file, passphrase, passphrase_stdin) -> tuple[bytes | None, str | None]:
    """The PSKC pre-shared key or passphrase from the options (at most one way)."""
    given = [
        n
        for n, val in (
            ("--key", key_hex),
            ("--psk-file", psk_file),
            ("--passphrase", passphrase),
            ("--passphrase-stdin", passphrase_stdin),
        )
        if val
    ]
    if len(given) > 1:
        raise BadInput(f"give only one of {', '.join(given)}")
    key = _hex_key(key_hex) if key_hex is not None else _read_psk(psk_file)
    if passphrase_stdin:
        passphrase = read_secret("Passphrase", from_stdin=True)
    if passphrase is not None and not passphrase:
        raise BadInput("the passphrase is empty")
    return key, passphrase


def _pskc_options(fn):
    fn = click.option(
        "--passphrase-stdin", is_flag=True, help="Read the PSKC passphrase from one line of standard input."
    )(fn)
    fn = click.option(
        "--passphrase",
        default=None,
        help="PSKC passphrase (PBKDF2). Visible in the process list: prefer --passphrase-stdin.",
    )(fn)
    fn = click.option(
        "--psk-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="File with the PSKC pre-shared AES key in hex.",
    )(fn)
    fn = click.option(
        "--key",
        "key_hex",
        default=None,
        metavar="HEX",
        help="The PSKC pre-shared AES key in hex (128/192/256 bit). Visible in the process list: prefer --psk-file.",
    )(fn)
    return fn


@token.command("import")
@click.argument("source", metavar="FILE|URI")
@_pskc_options
@db_options
@json_option
@handle_errors
def import_(source, key_hex, psk_file, passphrase, passphrase_stdin, db, key_file, as_json) -> None:
    """Put the tokens of a seed file into the inventory, all or nothing.

    FILE is PSKC (RFC 6030: plain, or encrypted with a pre-shared key or a passphrase), OATH CSV
    (serial, seed, type, digits, counter|period) or otpauth:// URIs, one per line; the format is
    recognised from the content. A single otpauth:// URI may also be given instead of a file (its
    account name becomes the serial; note that it is then visible in the shell history).

    Serials starting with KF are keyfob serials and must have their check digit right; other
    vendors' serials are taken as they are. A serial already in the inventory imports nothing.

    An encrypted PSKC file given no key or passphrase is opened with the key file provisioning used
    for it: the one its manifest names, else $KEYFOB_TRANSPORT_KEY_FILE or
    ~/.config/keyfob/transport.key.

    A PSKC key whose Policy (or DeviceInfo) dates exclude today is imported disabled, and listed
    with the reason; a key whose KeyUsage excludes OTP, or whose Policy keyfob cannot enforce,
    refuses the file. A TOTP key's TimeDrift becomes its starting drift. With --json, "disabled"
    (serial: reason) is there when a key was imported disabled.
    """
    if source.strip().lower().startswith("otpauth:"):
        if key_hex or psk_file or passphrase or passphrase_stdin:
            raise BadInput("an otpauth URI is not encrypted: drop the key or passphrase")
        with open_verifier(db, key_file) as v:
            serials = v.import_uri(source, actor=actor())
    else:
        key, pw = _unlocking(key_hex, psk_file, passphrase, passphrase_stdin)
        fallback = None
        if key is None and pw is None:
            from keyfob.provision import key_file_for

            fallback = key_file_for(source)  # where `keyfob provision` put the key of this file
        with open_verifier(db, key_file) as v:
            serials = v.import_seed_file(source, key=key, passphrase=pw, psk_file=fallback, actor=actor())
    disabled = {s: s.disabled for s in serials if s.disabled}
    if as_json:
        emit_json({"imported": list(serials), **({"disabled": disabled} if disabled else {})})
    else:
        click.echo(f"imported {len(serials)} token(s): {', '.join(serials)}")
        for serial, why in disabled.items():
            click.echo(f"  {serial} imported disabled: {why} (keyfob token enable {serial} to override)")


def _check_out(path: str, force: bool) -> None:
    """Refuse an output path that cannot work before any seed leaves the database."""
    target = Path(path)
    if target.is_dir():
        raise BadInput(f"{path} is a directory")
    if target.exists() and not force:
        raise BadInput(f"{path} exists (use --force to replace it)")
    parent = target.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write into {parent}")


def _formats_error(fn):
    """Run ``fn`` turning a keyfob.formats.FormatError into a SeedFileError (one line, exit 2)."""
    from keyfob.formats import FormatError

    try:
        return fn()
    except FormatError as exc:
        raise SeedFileError(str(exc)) from None


@token.command("export")
@click.argument("serials", nargs=-1, metavar="[SERIAL]...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["pskc", "csv", "uri"]),
    default="pskc",
    show_default=True,
    help="PSKC (RFC 6030), OATH CSV, or otpauth:// URIs one per line.",
)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="File to write (mode 0600).")
@_pskc_options
@click.option(
    "--plain",
    is_flag=True,
    help="Write the seeds in the clear. Required for CSV and URIs (they cannot be encrypted).",
)
@click.option("--issuer", default="keyfob", show_default=True, help="Issuer in otpauth URIs.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@db_options
@json_option
@handle_errors
def export(
    serials,
    fmt,
    out,
    key_hex,
    psk_file,
    passphrase,
    passphrase_stdin,
    plain,
    issuer,
    force,
    db,
    key_file,
    as_json,
) -> None:
    """Write the seeds of tokens (all unassigned, active and disabled ones, or the SERIALs named)
    to a seed file another server or the provisioning tool can import.

    PSKC is encrypted with a pre-shared key (--key/--psk-file) or a passphrase unless --plain is
    given; CSV and URI files always hold plain seeds, so they need --plain. HOTP tokens carry the
    next counter the verifier expects. Lost and revoked tokens are never exported. Every exported
    token is written to the audit log (who, which token, which format; never the seed).
    """
    from keyfob.formats import build_pskc, format_csv, format_uris
    from keyfob.formats._common import write_private

    if fmt != "pskc":
        if key_hex or psk_file or passphrase or passphrase_stdin:
            raise BadInput(f"{fmt.upper()} files cannot be encrypted: use --format pskc, or --plain")
        if not plain:
            raise BadInput(f"{fmt.upper()} files hold the seeds in the clear: add --plain to confirm")
        how = "plain"
    else:
        key, pw = _unlocking(key_hex, psk_file, passphrase, passphrase_stdin)
        if sum(x is not None for x in (key, pw)) + plain != 1:
            raise BadInput("PSKC: give a pre-shared key (--key/--psk-file), a passphrase, or --plain")
        how = "pre-shared key" if key is not None else "passphrase" if pw is not None else "plain"
    _check_out(out, force)

    def render(records):
        def build():
            if fmt == "pskc":
                return build_pskc(records, key=key, passphrase=pw, plain=plain, where=out)
            if fmt == "csv":
                return format_csv(records, out).encode("utf-8")
            return format_uris(records, issuer, out).encode("utf-8")

        return _formats_error(build), [r.serial for r in records]

    with open_verifier(db, key_file) as v:
        data, done = v.export_records(
            serials or None, actor=actor(), detail=f"{fmt} ({how}) to {Path(out).name}", render=render
        )
    _formats_error(lambda: write_private(out, data))
    if as_json:
        emit_json({"exported": done, "file": out, "format": fmt, "protection": how})
    else:
        click.echo(f"exported {len(done)} token(s) to {out} ({fmt}, {how}): {', '.join(done)}")


@token.command("twin")
@click.argument("serial")
@click.option("--png", "png", type=click.Path(dir_okay=False), default=None, help="Write the QR code as PNG.")
@click.option("--svg", "svg", type=click.Path(dir_okay=False), default=None, help="Write the QR code as SVG.")
@click.option("--terminal", is_flag=True, help="Draw the QR code in the terminal (the default).")
@click.option("--show-uri", is_flag=True, help="Also print the otpauth:// URI (it holds the seed).")
@click.option("--issuer", default="keyfob", show_default=True, help="Issuer shown by the authenticator app.")
@click.option(
    "--i-understand-this-copies-the-seed",
    "understood",
    is_flag=True,
    help="Required: the QR code is a full copy of the token's seed.",
)
@click.option("--force", is_flag=True, help="Replace the PNG/SVG file if it exists.")
@db_options
@json_option
@handle_errors
def twin(serial, png, svg, terminal, show_uri, issuer, understood, force, db, key_file, as_json) -> None:
    """Make a software twin of token SERIAL for an authenticator app: a QR code of its otpauth:// URI.

    Anyone who sees the QR code can make the token's codes for ever: the app becomes a second
    token with the same seed, and both are accepted. Audited.

    HOTP: the twin starts at the verifier's next counter and shares the counter space with the
    hardware token: every code one of them has accepted moves the verifier past the other's
    next codes, so the other has to catch up (presses within the look-ahead window, or a resync).
    TOTP: the twin runs on the phone's clock, while the verifier keeps one learned clock drift per
    token: if the hardware token's clock has drifted, the twin's codes may fall outside the window,
    and each accepted code moves the drift towards the device that sent it.

    With --json the result is one JSON object (the URI only with --show-uri), so the QR code must
    go to a file (--png/--svg) or be left out (--show-uri alone).
    """
    if not understood:
        raise BadInput("a twin copies the token's seed to another device: add --i-understand-this-copies-the-seed")
    targets = [x for x in (png, svg) if x is not None]
    if len(targets) + terminal > 1:
        raise BadInput("choose one of --png, --svg, --terminal")
    target = targets[0] if targets else None
    if as_json and (terminal or (target is None and not show_uri)):
        raise BadInput("with --json, write the QR code with --png/--svg or give --show-uri (no terminal drawing)")
    if target is not None:
        want = ".png" if png is not None else ".svg"
        if Path(target).suffix.lower() != want:
            raise BadInput(f"{target}: the file name must end in {want}")
        _check_out(target, force)
    from keyfob.formats import build_uri, terminal_qr, write_qr

    def render(records):
        return _formats_error(lambda: build_uri(records[0], issuer))

    kind = "png" if png is not None else "svg" if svg is not None else "none" if as_json else "terminal"
    detail = f"qr {kind}" + (", uri shown" if show_uri else "")
    with open_verifier(db, key_file) as v:
        uri = v.export_records([serial], actor=actor(), action="token-twin", detail=detail, render=render)
        info = v.token(serial)
    if target is not None:
        _formats_error(lambda: write_qr(target, uri))
    elif not as_json:
        click.echo(terminal_qr(uri), nl=False)
    if as_json:
        out = {
            "serial": info.serial,
            "mode": info.mode,
            "counter": info.counter if info.mode == "hotp" else None,
            "period": info.period if info.mode == "totp" else None,
            "file": target,
        }
        if show_uri:
            out["uri"] = uri
        emit_json(out)
        return
    if show_uri:
        click.echo(uri)
    where = "next counter " + str(info.counter) if info.mode == "hotp" else f"{info.period} s period"
    msg = f"twin of token {info.serial} ({info.mode}, {where})"
    click.echo(msg + (f" written to {target}" if target else ""), err=True)


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
@click.option("--state", type=click.Choice(["unassigned", "active", "disabled", "lost", "revoked"]), default=None)
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
@click.option(
    "--user",
    "user_name",
    default=None,
    help="Self-service: the token's owner, who gives their password (prompted, or --password-stdin).",
)
@click.option("--password-stdin", is_flag=True, help="With --user: read the password from one line of stdin.")
@click.option(
    "--wide",
    is_flag=True,
    help="Admin only: search the wide window (HOTP hotp_sync_window counters, TOTP ± totp_sync_seconds) "
    "for a token far off, e.g. one whose clock was reset.",
)
@db_options
@json_option
@handle_errors
def resync(serial, code1, code2, user_name, password_stdin, wide, db, key_file, as_json) -> None:
    """Find SERIAL again from two consecutive codes (press twice / wait for the next code).

    The search is near the token's expected position (HOTP: hotp_near_window counters; TOTP:
    ± totp_near_steps steps around now + its drift); --wide, an admin's option, searches a day
    (or 1,000 counters) instead. As admin (no --user) this also clears the token's lock. With
    --user it is the owner's self-service: the password must be right and the token theirs and not
    locked, and a failure counts like a wrong login."""
    if password_stdin and user_name is None:
        raise BadInput("--password-stdin is for self-service resync: add --user")
    if wide and user_name is not None:
        raise BadInput("--wide is an admin's search: not with --user")
    with open_verifier(db, key_file) as v:
        if user_name is None:
            r = v.resync(serial, code1, code2, wide=wide, actor=actor())
        else:
            info = v.token(serial)  # unknown token or user, or not theirs: refused before the password
            v.user(user_name)
            if info.user != user_name:
                raise TokenStateError(f"token {info.serial} does not belong to user {user_name!r}")
            password = read_secret("Password", from_stdin=password_stdin)
            r = v.resync(serial, code1, code2, user=user_name, password=password)
    _outcome(r, as_json, f"token {r.serial} resynchronised")


def _simple(name: str, method: str, done: str, help_text: str):
    @token.command(name, help=help_text)
    @click.argument("serial")
    @db_options
    @json_option
    @handle_errors
    def cmd(serial, db, key_file, as_json) -> None:
        with open_verifier(db, key_file) as v:
            getattr(v, method)(serial, actor=actor())
            info = v.token(serial)
        if as_json:
            emit_json({"serial": info.serial, "state": info.state, "user": info.user, "locked": info.locked})
        else:
            click.echo(f"token {info.serial} {done}")

    return cmd


_simple(
    "unlink",
    "unlink",
    "unlinked (back in the inventory)",
    "Remove SERIAL from its user (its learned drift is forgotten; its counter is kept).",
)
_simple("unlock", "unlock", "unlocked", "Clear the fail count and lock of SERIAL.")
_simple("revoke", "revoke", "revoked", "Refuse SERIAL's codes for good (cannot be linked again).")
_simple("disable", "disable", "disabled", "Refuse SERIAL's codes until enabled again.")
_simple("enable", "enable", "enabled", "Accept SERIAL's codes again after `disable`.")
_simple(
    "reset-drift",
    "reset_drift",
    "drift reset (window centred on now again)",
    "Forget the clock drift learned for TOTP token SERIAL.",
)


@token.command("lost")
@click.argument("serial")
@db_options
@json_option
@handle_errors
def lost(serial, db, key_file, as_json) -> None:
    """Mark SERIAL lost (its codes are refused at once) and print backup codes for its owner."""
    with open_verifier(db, key_file) as v:
        codes = v.mark_lost(serial, actor=actor())
        info = v.token(serial)
    if as_json:
        emit_json({"serial": info.serial, "user": info.user, "backup_codes": codes})
        return
    click.echo(f"token {info.serial} marked lost. Backup codes for {info.user} (each works once; shown only now):")
    for c in codes:
        click.echo(f"  {c}")


def register(main: click.Group) -> None:
    main.add_command(token)
