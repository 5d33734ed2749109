"""The clients file: which address or network may ask, with which shared secret.

TOML (read with :mod:`tomllib`)::

    [[client]]
    address = "10.0.0.0/24"          # an address or a network; the most specific one wins
    secret = "at least 16 characters"
    # allow_missing_message_authenticator = true   # only for an old NAS (see the README)

The file holds secrets, so it is refused if others than its owner and group can read it.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from dataclasses import dataclass, field

from keyfob.errors import BadInput

#: shorter secrets make the offline guessing of User-Password (RFC 2865 5.2) cheap
SECRET_MIN = 16
#: RFC 2865 3 lets a secret be any length; 128 keeps the MD5 input small
SECRET_MAX = 128
_KEYS = {"address", "secret", "allow_missing_message_authenticator"}


class ClientsError(BadInput):
    """A clients file that cannot be used; the message never holds a secret."""


@dataclass(frozen=True)
class Client:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    secret: bytes = field(repr=False)
    allow_missing_message_authenticator: bool = False


class Clients:
    """Lookup of the client for a source address (longest prefix first)."""

    def __init__(self, clients: list[Client]):
        self._clients = sorted(clients, key=lambda c: c.network.prefixlen, reverse=True)

    def __len__(self) -> int:
        return len(self._clients)

    def find(self, address: str) -> Client | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 NAS this way
        for c in self._clients:
            if ip.version == c.network.version and ip in c.network:
                return c
        return None


def _client(n: int, entry) -> Client:
    where = f"client {n}"
    if not isinstance(entry, dict):
        raise ClientsError(f"{where}: expected a table")
    extra = set(entry) - _KEYS
    if extra:
        raise ClientsError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    address, secret = entry.get("address"), entry.get("secret")
    if not isinstance(address, str):
        raise ClientsError(f"{where}: `address` (an address or a network) is required")
    try:
        network = ipaddress.ip_network(address, strict=True)
    except ValueError:
        raise ClientsError(f"{where}: {address!r} is not an address or a network") from None
    if not isinstance(secret, str) or not SECRET_MIN <= len(secret.encode("utf-8")) <= SECRET_MAX:
        raise ClientsError(f"{where}: `secret` must be a text of {SECRET_MIN} to {SECRET_MAX} bytes")
    allow = entry.get("allow_missing_message_authenticator", False)
    if not isinstance(allow, bool):
        raise ClientsError(f"{where}: allow_missing_message_authenticator is true or false")
    return Client(network, secret.encode("utf-8"), allow)


def parse_clients(text: str) -> Clients:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message names a line and column, never the text there
        raise ClientsError(f"not valid TOML: {exc}") from None
    extra = set(data) - {"client"}
    if extra:
        raise ClientsError(f"unknown key(s) {', '.join(sorted(extra))} (expected [[client]] tables)")
    entries = data.get("client")
    if not isinstance(entries, list) or not entries:
        raise ClientsError("no [[client]] table")
    clients = [_client(n, e) for n, e in enumerate(entries, 1)]
    seen = set()
    for c in clients:
        if c.network in seen:
            raise ClientsError(f"{c.network} is listed twice")
        seen.add(c.network)
    return Clients(clients)


def load_clients(path) -> Clients:
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            raw = f.read(1 << 20)
    except OSError as exc:
        raise ClientsError(f"cannot read the clients file {path}: {exc.strerror}") from None
    if mode & stat.S_IROTH:
        raise ClientsError(f"the clients file {path} holds secrets and others can read it (chmod 600 or 640)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientsError(f"the clients file {path} is not UTF-8") from None
    try:
        return parse_clients(text)
    except ClientsError as exc:
        raise ClientsError(f"{path}: {exc}") from None
