"""``keyfob server``: create the verifier database and show or change its policy; plus the options
and error handling shared by the verifier's command groups (``user``, ``token``, ``validate``,
``backup-codes``, ``audit``).

Errors go to the one handler (``keyfob.cli.LazyGroup.invoke``); exit codes as in the README.
"""

from __future__ import annotations

import functools
import sqlite3
import sys
from datetime import UTC, datetime

import click

from keyfob.verifier import DatabaseError, Policy, Verifier
from keyfob.verifier.db import ENV_DB, default_db, display, driver_message
from keyfob.verifier.passwords import profile_from_env
from keyfob.verifier.rules import SHARED, parse_setting

from ._common import console, emit_json
from ._common import json_option as json_option  # re-exported: the verifier groups take it from here
from ._common import read_secret as read_secret  # re-exported: user.py takes it from here


def db_options(fn):
    """``--db`` and ``--key-file`` for every verifier command."""

    @click.option(
        "--db",
        "db",
        envvar=ENV_DB,
        default=None,
        metavar="PATH|URL",
        help=f"Verifier database: a SQLite file, or a URL such as postgresql://user@host/keyfob [env {ENV_DB}; "
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


def open_verifier(db: str | None, key_file: str | None, *, serving: bool = False) -> Verifier:
    """Open the database with the policy stored in it (the same on every node); ``serving`` for a
    server that runs for hours (see :meth:`Verifier.open`)."""
    # KEYFOB_ARGON2_PROFILE=fast is a test-only switch (cheap password hashes); see passwords.py.
    return Verifier.open(db or default_db(), key_file=key_file, password_profile=profile_from_env(), serving=serving)


def actor() -> str:
    import getpass

    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def handle_errors(fn):
    """Make a database driver's error (not expected once open) a DatabaseError saying briefly what
    the driver said, for the CLI's one handler: SQLAlchemy's (imported only if it was used) and
    the stdlib sqlite3's (a login on a SQLite file)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, sqlite3.Error) and not _is_sqlalchemy_error(exc):
                raise
            db = kwargs.get("db") or default_db()
            raise DatabaseError(f"database {display(db)}: {driver_message(exc, db)}") from None

    return wrapper


def _is_sqlalchemy_error(exc: BaseException) -> bool:
    if "sqlalchemy" not in sys.modules:
        return False
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError)


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.group("server")
def server() -> None:
    """The verifier database (users, tokens, audit)."""


_POLICY_HELP = {
    "hotp_window": "HOTP look-ahead: N counters tried, the expected counter and the N-1 after it",
    "hotp_sync_window": "HOTP wide resync (admin, --wide): counters searched for two consecutive codes",
    "hotp_near_window": "HOTP resync (self-service, and admin without --wide): counters searched",
    "totp_window": "TOTP window: steps accepted each side of now + the token's drift",
    "totp_sync_seconds": "TOTP wide resync (admin, --wide): seconds searched each side of now",
    "totp_near_steps": "TOTP resync (self-service, and admin without --wide): steps each side of now + drift",
    "totp_drift_max": "steps logins may move a TOTP token's drift from its last link/resync (1 per login)",
    "max_fail": "wrong codes in a row that lock a token",
    "lock_seconds": "how long a lock lasts ('never': until an admin unlocks)",
    "user_rate_limit": "failures per user (and per source) before the back-off starts (0: no throttling)",
    "user_rate_window": "seconds after the last failure when a user's or source's count is forgotten",
    "backoff_max": "longest back-off in seconds (it doubles per failure from 1 s)",
    "audit_days": "days an audit row is kept (0: for ever)",
}


def _policy_options(fn):
    defaults = Policy().shared()
    for name in reversed(SHARED):
        fn = click.option(
            "--" + name.replace("_", "-"),
            name,
            default=None,
            metavar="N" if name != "lock_seconds" else "S|never",
            help=f"{_POLICY_HELP[name]} [default {defaults[name]}].",
        )(fn)
    return fn


def _show(value) -> str:
    if value is None:
        return "never"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _print_policy(policy: Policy) -> None:
    from rich.table import Table

    t = Table("setting", "value", "meaning")
    for name, value in policy.shared().items():
        t.add_row(name, _show(value), _POLICY_HELP[name])
    console().print(t)


@server.command("init")
@_policy_options
@db_options
@json_option
@handle_errors
def init(db, key_file, as_json, **settings) -> None:
    """Create the database schema and the seed encryption key (mode 0600) if it does not exist.

    The policy options are stored in the database, so every node using it applies the same limits;
    change them later with `keyfob server config --set`."""
    target = db or default_db()
    given = {k: parse_setting(k, v) for k, v in settings.items() if v is not None}
    pol = Policy(password_profile=profile_from_env()).with_shared(given)
    v = Verifier.init(target, key_file=key_file, policy=pol, actor=actor())
    v.close()
    if as_json:
        emit_json({"database": display(target), "initialised": True, "policy": pol.shared()})
    else:
        click.echo(f"initialised {display(target)}")


@server.command("config")
@click.option(
    "--set",
    "changes",
    multiple=True,
    metavar="KEY=VALUE",
    help=f"Change a setting (repeatable; audited): {', '.join(SHARED)}.",
)
@db_options
@json_option
@handle_errors
def config(changes, db, key_file, as_json) -> None:
    """Show the verifier's policy (stored in the database, the same for every node), or change it
    with --set KEY=VALUE. Other running processes apply a change when they next open the database."""
    parsed = {}
    for item in changes:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise click.BadParameter(f"expected KEY=VALUE, not {item!r}", param_hint="--set")
        parsed[name] = parse_setting(name, value)
    with open_verifier(db, key_file) as v:
        pol = v.set_policy(parsed, actor=actor()) if parsed else v.policy
    if as_json:
        emit_json(pol.shared())
    else:
        _print_policy(pol)


def register(main: click.Group) -> None:
    # `server api-key` lives beside `serve`, the HTTP API its keys are for: it joins this group
    # when that module loads, so load it whenever the group is (the CLI imports areas lazily).
    from keyfob.cli import serve  # noqa: F401

    main.add_command(server)
