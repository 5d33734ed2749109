"""``keyfob server``: create the verifier database; plus the options and error handling shared by the
verifier's command groups (``user``, ``token``, ``validate``, ``backup-codes``, ``audit``).

Exit codes: 0 success (for ``validate``: only an accepted code), 1 refused, 2 bad input or error.
"""

from __future__ import annotations

import functools
import getpass
import json
import sys
from datetime import UTC, datetime

import click

from keyfob.verifier import Policy, Verifier, VerifierError
from keyfob.verifier.db import ENV_DB, default_db, to_url
from keyfob.verifier.passwords import profile_from_env

EXIT_REFUSED = 1
EXIT_ERROR = 2


def db_options(fn):
    """``--db`` and ``--key-file`` for every verifier command."""

    @click.option(
        "--db",
        "db",
        envvar=ENV_DB,
        default=None,
        metavar="PATH|URL",
        help=f"Verifier database: a SQLite file or a SQLAlchemy URL [env {ENV_DB}; "
        "default ~/.local/share/keyfob/verifier.db].",
    )
    @click.option(
        "--key-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Seed encryption key file [env KEYFOB_KEY_FILE, or the key itself in KEYFOB_KEY; "
        "default ~/.config/keyfob/verifier.key].",
    )
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)


def policy() -> Policy:
    # KEYFOB_ARGON2_PROFILE=fast is a test-only switch (cheap password hashes); see passwords.py.
    return Policy(password_profile=profile_from_env())


def open_verifier(db: str | None, key_file: str | None) -> Verifier:
    return Verifier.open(db or default_db(), key_file=key_file, policy=policy())


def actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def fail(message: str, code: int = EXIT_ERROR):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn):
    """Turn a :class:`VerifierError` into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VerifierError as exc:
            fail(str(exc))

    return wrapper


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def console():
    from rich.console import Console

    c = Console(highlight=False)
    if not c.is_terminal:  # piped: do not squeeze tables into 80 columns
        c.width = 200
    return c


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def read_secret(prompt: str, *, from_stdin: bool, confirm: bool = False) -> str:
    """A password from one stdin line (for scripts) or a hidden prompt; never from the command line."""
    if from_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            fail("expected a line on standard input")
        return line.rstrip("\r\n")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


@click.group("server")
def server() -> None:
    """The verifier database (users, tokens, audit)."""


@server.command("init")
@db_options
@json_option
@handle_errors
def init(db, key_file, as_json) -> None:
    """Create the database schema and the seed encryption key (mode 0600) if it does not exist."""
    target = db or default_db()
    v = Verifier.init(target, key_file=key_file, policy=policy(), actor=actor())
    v.close()
    if as_json:
        emit_json({"database": to_url(target), "initialised": True})
    else:
        click.echo(f"initialised {to_url(target)}")


def register(main: click.Group) -> None:
    main.add_command(server)
