"""Small pieces every ``keyfob`` command group shares: the rich console, ``--json`` and JSON output,
the one error handler, and secrets read from standard input or a hidden prompt.

Errors: a command raises a :class:`keyfob.errors.KeyfobError` (the library's, or one of its kinds
for a check of its own); :func:`report` alone turns it into one line on stderr, the JSON error shape
on stdout with ``--json``, and the kind's exit code (README, "Exit codes")."""

from __future__ import annotations

import json
import sys

import click

from keyfob.errors import BadInput, KeyfobError, Refused, Unavailable, kind_of

EXIT_REFUSED = Refused.exit_code
#: where a command's ``--json`` flag is noted for the handler (``ctx.meta`` is shared by the
#: contexts of one invocation)
JSON_META = "keyfob.json"


def console(stderr: bool = False):
    """A rich console on stdout (or stderr, for progress bars); piped output is not squeezed into
    80 columns."""
    from rich.console import Console

    c = Console(highlight=False, stderr=stderr)
    if not c.is_terminal:
        c.width = 200
    return c


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _note_json(ctx: click.Context, param, value: bool) -> bool:
    if value:
        ctx.meta[JSON_META] = True
    return value


def json_option(fn=None, *, help: str = 'Machine-readable output (errors too: README, "JSON errors").'):
    """``--json`` (the ``as_json`` parameter), which every command has."""
    option = click.option("--json", "as_json", is_flag=True, callback=_note_json, help=help)
    return option(fn) if fn is not None else option


def error_shape(kind: str, message: str, exit_code: int) -> dict:
    """The one JSON shape of an error, for every command."""
    return {"error": {"kind": kind, "message": message}, "exit": exit_code}


def as_keyfob_error(exc: BaseException) -> KeyfobError | None:
    """``exc`` as a KeyfobError: an OSError (a port, file or socket not there or busy) becomes
    Unavailable; anything else that is not one is None (a bug: let its traceback show)."""
    if isinstance(exc, KeyfobError):
        return exc
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return Unavailable(f"{where}{exc.strerror}" if exc.strerror else str(exc) or type(exc).__name__)
    return None


def report(exc: KeyfobError, as_json: bool) -> int:
    """One line on stderr (and the JSON shape on stdout for ``--json``); the exit code to use."""
    kind = kind_of(exc)
    message = str(exc) or kind.kind
    if as_json:
        emit_json(error_shape(kind.kind, message, kind.exit_code))
    click.echo(f"error: {message}", err=True)
    return kind.exit_code


def read_secret(prompt: str, *, from_stdin: bool, confirm: bool = False) -> str:
    """A password or passphrase from one stdin line (for scripts) or a hidden prompt; never from
    the command line. No line on standard input: BadInput."""
    if from_stdin or not sys.stdin.isatty():
        raw = getattr(sys.stdin, "buffer", None)
        # bytes that are not UTF-8 come through as lone surrogates (as in sys.argv): the library
        # refuses them with one clear line instead of a decoding traceback here
        line = raw.readline().decode("utf-8", "surrogateescape") if raw is not None else sys.stdin.readline()
        if not line:
            raise BadInput("expected a line on standard input")
        return line.rstrip("\r\n")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
