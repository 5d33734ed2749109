"""``keyfob radius``: serve the verifier to a NAS (VPN, pam_radius_auth) over RADIUS."""

from __future__ import annotations

import logging
import signal

import click

from keyfob.errors import Unavailable

from ._common import emit_json, json_option
from .server import db_options, handle_errors, open_verifier


@click.command("radius")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=1812, show_default=True, help="0: any free port.")
@click.option(
    "--clients",
    "clients_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="TOML file of [[client]] address + secret (see the README); not readable by others.",
)
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Logins decided at once.")
@click.option("-v", "--verbose", is_flag=True, help="Log every dropped packet (never a secret).")
@db_options
@json_option(help='Print {"host", "port", "clients"} on stdout once ready (errors as JSON too).')
@handle_errors
def radius(host, port, clients_file, workers, verbose, db, key_file, as_json) -> None:
    """Answer RADIUS Access-Requests (PAP, password+code in User-Password) with Access-Accept or
    Access-Reject. Requests must carry a Message-Authenticator unless their client allows it.
    Prints `listening on HOST:PORT` once ready; stops on SIGTERM or Ctrl-C."""
    from keyfob.radius import RadiusServer, load_clients

    logging.basicConfig(level=logging.WARNING, format="keyfob radius: %(message)s")
    if verbose:  # ours only: what was dropped and why, and the verifier's refusals (no secrets)
        logging.getLogger("keyfob").setLevel(logging.INFO)
    clients = load_clients(clients_file)
    with open_verifier(db, key_file, serving=True) as v:
        try:
            server = RadiusServer(v, clients, host, port, workers=workers)
        except OSError as exc:
            raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: server.shutdown())
        h, p = server.address
        if as_json:
            emit_json({"host": h, "port": p, "clients": len(clients)})
            click.get_text_stream("stdout").flush()
        else:
            click.echo(f"listening on {h}:{p} ({len(clients)} client(s))", err=True)
        server.serve_forever()


def register(main: click.Group) -> None:
    main.add_command(radius)
