"""Seed files: how keyfob meets the rest of the OTP world.

- PSKC (RFC 6030) XML, encrypted with a pre-shared AES key or a passphrase
  (PBKDF2): the provisioning format, read and written (``pskc``);
- OATH CSV ``serial, seed, type, digits, counter|period`` (``csvfile``);
- otpauth:// URIs, the Key URI format of authenticator apps (``otpauth``),
  and their QR codes (``qr``).

``read_seed_file`` tells the formats apart by content. Reading is all or
nothing: any problem in any token raises ``FormatError`` naming the file (and
line or key package) and nothing is returned. Serials are kept as the file
gives them (whitespace stripped): other vendors' serials have no keyfob check
digit, and deciding what to accept is the verifier's job.
"""

from __future__ import annotations

import os

from keyfob.formats._common import FormatError, read_limited
from keyfob.formats.csvfile import format_csv, parse_csv, write_csv
from keyfob.formats.otpauth import build_uri, format_uris, parse_uri, parse_uris, write_uris
from keyfob.formats.pskc import build_pskc, parse_pskc, write_pskc
from keyfob.formats.qr import terminal_qr, write_qr
from keyfob.records import TokenRecord

__all__ = [
    "FormatError",
    "build_pskc",
    "build_uri",
    "detect_format",
    "format_csv",
    "format_uris",
    "parse_uri",
    "read_seed_file",
    "terminal_qr",
    "write_csv",
    "write_pskc",
    "write_qr",
    "write_uris",
]

_BOM = b"\xef\xbb\xbf"


def detect_format(data: bytes) -> str:
    """``'pskc'``, ``'otpauth'`` or ``'csv'`` from the content of a seed file."""
    text = data.removeprefix(_BOM)
    if text.lstrip().startswith(b"<"):
        return "pskc"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        return "otpauth" if line.lower().startswith(b"otpauth:") else "csv"
    return "csv"


def read_seed_file(
    path: str | os.PathLike[str],
    key: bytes | str | None = None,
    passphrase: str | None = None,
    psk_file: str | os.PathLike[str] | None = None,
) -> list[TokenRecord]:
    """All the tokens in the seed file at ``path``, or FormatError and none.

    ``key`` (bytes or hex) or ``passphrase`` unlocks an encrypted PSKC file;
    CSV and URI files are never encrypted, so giving either with one is refused
    (the caller meant another file, or the file is not what it thinks).
    ``psk_file`` is where to look for a pre-shared key when neither is given and
    a PSKC file needs one (a plain file, or a CSV, never reads it).
    """
    where = os.fspath(path)
    data = read_limited(path)
    if not data.removeprefix(_BOM).strip():
        # Before sniffing: with no content there is no format to name.
        raise FormatError(f"{where}: empty file")
    kind = detect_format(data)
    if kind != "pskc" and (key is not None or passphrase is not None):
        what = "an OATH CSV file" if kind == "csv" else "an otpauth URI file"
        raise FormatError(f"{where}: {what} is never encrypted, but a key or passphrase was given")
    if kind == "pskc":
        records = parse_pskc(data, where, key=key, passphrase=passphrase, psk_file=psk_file)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise FormatError(f"{where}: neither PSKC XML nor UTF-8 text") from None
        records = parse_uris(text, where) if kind == "otpauth" else parse_csv(text, where)
    seen: set[str] = set()
    for record in records:
        if record.serial in seen:
            raise FormatError(f"{where}: serial {record.serial} appears more than once")
        seen.add(record.serial)
    return records
