"""Small pieces every ``keyfob`` command group shares: the rich console, JSON output, one-line
errors with an exit code, and secrets read from standard input or a hidden prompt."""

from __future__ import annotations

import json
import sys

import click

EXIT_REFUSED = 1
EXIT_ERROR = 2


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


def fail(message: str, code: int = EXIT_ERROR, *, as_json: bool = False):
    """One line on stderr (and ``{"error": ...}`` on stdout for ``--json``), then exit ``code``."""
    if as_json:
        emit_json({"error": message})
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def read_secret(prompt: str, *, from_stdin: bool, confirm: bool = False) -> str:
    """A password or passphrase from one stdin line (for scripts) or a hidden prompt; never from
    the command line. No line on standard input: :func:`fail`."""
    if from_stdin or not sys.stdin.isatty():
        raw = getattr(sys.stdin, "buffer", None)
        # bytes that are not UTF-8 come through as lone surrogates (as in sys.argv): the library
        # refuses them with one clear line instead of a decoding traceback here
        line = raw.readline().decode("utf-8", "surrogateescape") if raw is not None else sys.stdin.readline()
        if not line:
            fail("expected a line on standard input")
        return line.rstrip("\r\n")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
