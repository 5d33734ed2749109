"""``keyfob serve`` (the HTTP API under uvicorn) and ``keyfob server api-key add|list|revoke``."""

from __future__ import annotations

import os
from dataclasses import asdict

import click

from keyfob.errors import Unavailable

from ._common import console, emit_json
from .server import actor, db_options, handle_errors, json_option, open_verifier, server, when


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Worker processes.")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), default=None, help="TLS certificate.")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), default=None, help="TLS private key.")
@click.option(
    "--forwarded-allow-ips",
    default=None,
    metavar="IPS",
    help="Behind a proxy: the proxy addresses whose X-Forwarded-For names the client (the source "
    "that logins are throttled by). Without it the header is ignored.",
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="A line per HTTP request on stderr (every login and admin call is in the audit log either way).",
)
@db_options
@json_option(help="Errors as JSON (the server's own log stays text, on stderr).")
@handle_errors
def serve(
    host, port, workers, ssl_certfile, ssl_keyfile, forwarded_allow_ips, access_log, db, key_file, as_json
) -> None:
    """Serve the verifier over HTTP: POST /validate/check and /admin/... (API keys: `keyfob server
    api-key add`); the OpenAPI description at /openapi.json (no Swagger UI:
    its page would run a third-party script on the security center's origin); the security center's pages at /web/."""
    import uvicorn

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise click.UsageError("TLS needs both --ssl-certfile and --ssl-keyfile")
    open_verifier(db, key_file).close()  # one clear line now rather than a failure in each worker
    if db:
        os.environ["KEYFOB_DB"] = db
    if key_file:
        os.environ["KEYFOB_KEY_FILE"] = key_file
    options = dict(
        app="keyfob.server.app:from_env",
        factory=True,
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips,
        server_header=False,
        access_log=access_log,
    )
    if workers == 1:
        uvicorn.run(**options)
        return
    from keyfob.server.workers import STARTUP_FAILURE, Workers, port_is_free

    taken = port_is_free(host, port)  # by anything: another program, or another keyfob serve
    if taken is not None:
        raise Unavailable(f"cannot listen on {host}:{port}: {taken}")
    scheme = "https" if ssl_certfile else "http"
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    listening = lambda: say(f"keyfob serve: {workers} workers on {scheme}://{host}:{port}")  # noqa: E731
    if Workers(workers, options, say=say).run(on_listening=listening) == STARTUP_FAILURE:
        raise Unavailable("the server's workers could not start (see the lines above)")


@server.group("api-key")
def api_key() -> None:
    """Keys for the HTTP API: a relying party's (validate) or an admin tool's (admin)."""


@api_key.command("add")
@click.option("--name", required=True, help="Shown in the audit log for every call made with the key.")
@click.option("--scope", type=click.Choice(["validate", "admin"]), required=True)
@click.option(
    "--code-only",
    is_flag=True,
    help="Validate keys only: /validate/check takes the code alone, with no password check (for a "
    "relying party that checked the password itself).",
)
@db_options
@json_option
@handle_errors
def add(name, scope, code_only, db, key_file, as_json) -> None:
    """Make a key. It is shown only now: only its hash is stored."""
    from keyfob.verifier.apikeys import ApiKeys

    with open_verifier(db, key_file) as v:
        info, key = ApiKeys(v).add(name, scope, code_only=code_only, actor=actor())
    if as_json:
        emit_json({"name": info.name, "scope": info.scope, "code_only": info.code_only, "key": key})
        return
    click.echo(f"API key {info.name} ({info.scope}); send it as `Authorization: Bearer <key>`. Shown only now:")
    click.echo(key)


@api_key.command("list")
@db_options
@json_option
@handle_errors
def list_keys(db, key_file, as_json) -> None:
    """The keys (never the keys themselves: they are not stored)."""
    from keyfob.verifier.apikeys import ApiKeys

    with open_verifier(db, key_file) as v:
        rows = ApiKeys(v).list()
    if as_json:
        emit_json([{**asdict(r), "active": r.active} for r in rows])
        return
    from rich.table import Table

    t = Table("name", "scope", "code only", "created (UTC)", "revoked (UTC)")
    for r in rows:
        t.add_row(r.name, r.scope, "yes" if r.code_only else "", when(r.created), when(r.revoked_at))
    console().print(t)


@api_key.command("revoke")
@click.argument("name")
@db_options
@json_option
@handle_errors
def revoke(name, db, key_file, as_json) -> None:
    """Stop a key working, at once and on every node."""
    from keyfob.verifier.apikeys import ApiKeys

    with open_verifier(db, key_file) as v:
        ApiKeys(v).revoke(name, actor=actor())
    if as_json:
        emit_json({"name": name, "revoked": True})
    else:
        click.echo(f"API key {name} revoked")


def register(main: click.Group) -> None:
    main.add_command(serve)
