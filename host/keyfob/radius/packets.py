"""One Access-Request in, one answer (or none) out.

The rules, from the RFCs:

* RFC 2865 3: a packet whose Length is below 20 or above what arrived is silently discarded; octets
  past Length are padding. Attributes must fill the packet exactly (a truncated one: discarded).
* RFC 3579 3.2: a Message-Authenticator (HMAC-MD5 keyed with the shared secret, over the packet with
  its value zeroed) that does not match: silently discarded. Blast-RADIUS (CVE-2024-3596;
  draft-ietf-radext-deprecating-radius): a server requires it in every Access-Request and discards
  those without, unless the client is known to be too old to send it; every answer carries one,
  first among the attributes.
* RFC 2865 5.2: User-Password is 16 to 128 octets, a multiple of 16, hidden with MD5(secret +
  Request Authenticator); an Access-Request has exactly one User-Name and, for PAP, one
  User-Password.

A wrong shared secret shows as a wrong Message-Authenticator, so it gets no answer. pyrad does the
decoding, the HMAC comparison (:func:`hmac.compare_digest`), the password unhiding and the reply's
authenticators; this module adds the structural checks it leaves out.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass

from pyrad import packet as rp

from .clients import Client

log = logging.getLogger("keyfob.radius")

USER_NAME, USER_PASSWORD, CALLING_STATION_ID, MESSAGE_AUTHENTICATOR = 1, 2, 31, 80
ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT = 1, 2, 3
#: RFC 2865 3: the largest packet
MAX_LENGTH = 4096


@dataclass(frozen=True)
class Request:
    """A checked Access-Request: who, the typed field, and where the NAS says it came from."""

    user: bytes
    password: bytes  # password+code as typed (NUL padding removed)
    calling_station: bytes | None
    packet: rp.AuthPacket


def _attributes(raw: bytes) -> list[tuple[int, bytes]] | None:
    """The attributes of a packet whose header was checked, or None if one is truncated."""
    out, pos = [], 20
    while pos < len(raw):
        if pos + 2 > len(raw):
            return None
        code, alen = raw[pos], raw[pos + 1]
        if alen < 2 or pos + alen > len(raw):
            return None
        out.append((code, raw[pos + 2 : pos + alen]))
        pos += alen
    return out


def _drop(why: str, addr) -> None:
    log.info("dropped a packet from %s: %s", addr[0], why)
    return None


def parse(data: bytes, client: Client, addr) -> Request | None:
    """The Access-Request in ``data`` from ``client``, or None (logged) when it gets no answer."""
    if len(data) < 20:
        return _drop("shorter than a header", addr)
    code, _ident, length = struct.unpack("!BBH", data[:4])
    if not 20 <= length <= min(len(data), MAX_LENGTH):
        return _drop("bad length", addr)
    raw = data[:length]  # past Length: padding (RFC 2865 3)
    if code != ACCESS_REQUEST:
        return _drop(f"code {code} is not served", addr)
    attrs = _attributes(raw)
    if attrs is None:
        return _drop("truncated attribute", addr)
    by = {}
    for c, v in attrs:
        by.setdefault(c, []).append(v)
    mas = by.get(MESSAGE_AUTHENTICATOR, [])
    if len(mas) > 1 or (mas and len(mas[0]) != 16):
        return _drop("malformed Message-Authenticator", addr)
    if not mas and not client.allow_missing_message_authenticator:
        return _drop("no Message-Authenticator (Blast-RADIUS; see allow_missing_message_authenticator)", addr)
    try:
        pkt = rp.AuthPacket(packet=raw, secret=client.secret)
    except (rp.PacketError, ValueError, struct.error, KeyError, IndexError, TypeError):
        return _drop("not decodable", addr)
    if mas and not pkt.verify_message_authenticator():
        return _drop("wrong Message-Authenticator (or a wrong shared secret)", addr)
    names, pws = by.get(USER_NAME, []), by.get(USER_PASSWORD, [])
    if len(names) != 1 or len(pws) != 1 or not 16 <= len(pws[0]) <= 128 or len(pws[0]) % 16:
        return _drop("not a PAP request with one User-Name and one User-Password", addr)
    # pyrad's PwDecrypt decodes to text leniently; unhiding as bytes keeps bad UTF-8 visible
    password = _unhide(pws[0], client.secret, pkt.authenticator)
    stations = by.get(CALLING_STATION_ID, [])
    return Request(names[0], password, stations[0] if len(stations) == 1 else None, pkt)


def _unhide(hidden: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """RFC 2865 5.2: p_i = c_i xor MD5(S + c_(i-1)), c_0 = the Request Authenticator."""
    out, last = bytearray(), authenticator
    for i in range(0, len(hidden), 16):
        block = hidden[i : i + 16]
        pad = hashlib.md5(secret + last).digest()
        out += bytes(a ^ b for a, b in zip(block, pad))
        last = block
    return bytes(out).rstrip(b"\0")


def answer(req: Request, accepted: bool) -> bytes:
    """Access-Accept or Access-Reject, with a Message-Authenticator first (pyrad puts it there)."""
    reply = req.packet.CreateReply()  # copies Proxy-State, signs: message_authenticator=True
    reply.code = ACCESS_ACCEPT if accepted else ACCESS_REJECT
    return reply.ReplyPacket()


def text(value: bytes) -> str:
    """Bytes as the verifier takes text: what is not UTF-8 becomes lone surrogates, which the
    verifier refuses (and audits) itself, so no rule about text is written here."""
    return value.decode("utf-8", "surrogateescape")
