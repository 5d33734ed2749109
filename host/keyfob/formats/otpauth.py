"""otpauth:// URIs (the Key URI format of Google Authenticator, read by every authenticator app).

    otpauth://TYPE/ISSUER:ACCOUNT?secret=BASE32&issuer=ISSUER&algorithm=SHA1&digits=6&counter=N
    otpauth://totp/ISSUER:ACCOUNT?secret=BASE32&issuer=ISSUER&algorithm=SHA1&digits=6&period=30

``secret`` is base32 (RFC 4648) without padding; ``counter`` is required for
HOTP; ``period`` defaults to 30, ``digits`` to 6, ``algorithm`` to SHA1. The
label's issuer prefix and the ``issuer`` parameter must agree when both are
given. On import the account name is the token's serial and the issuer goes
into the record's ``manufacturer``.

A seed file of URIs is UTF-8 text with one URI per line; blank lines and
``#`` comments are skipped. Messages never quote a URI: it holds the seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from keyfob.errors import BadInput
from keyfob.formats._common import (
    UNKNOWN,
    FormatError,
    check_records,
    decode_base32,
    encode_base32,
    hash_from_name,
    write_private,
)
from keyfob.params import DEFAULT_ALGORITHM, DEFAULT_DIGITS, DEFAULT_PERIOD, RECORDS
from keyfob.records import RecordError, TokenRecord

DEFAULT_ISSUER = "keyfob"
MODEL = "otpauth"
URI_NAMES = {"sha1": "SHA1", "sha256": "SHA256", "sha512": "SHA512"}


class UriError(BadInput, ValueError):
    """A bad otpauth URI (the message says what, never the URI itself)."""


def _single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise UriError(f"parameter {name!r} is given more than once")
    return values[0]


def _int_param(query: dict[str, list[str]], name: str, default: int | None) -> int:
    text = _single(query, name)
    if text is None or text == "":
        if default is None:
            raise UriError(f"parameter {name!r} is required")
        return default
    if not text.isdigit():
        raise UriError(f"parameter {name!r} must be a whole number")
    return int(text)


def parse_uri(uri: str) -> TokenRecord:
    """The token in one otpauth URI. Raises FormatError (message without the URI or seed)."""
    try:
        return _parse(uri.strip())
    except (UriError, RecordError) as exc:
        raise FormatError(str(exc)) from None


def _parse(uri: str) -> TokenRecord:
    parts = urlsplit(uri)
    if parts.scheme.lower() != "otpauth":
        raise UriError("not an otpauth:// URI")
    mode = parts.netloc.lower()
    if mode not in RECORDS.modes:
        raise UriError("the type must be hotp or totp")
    label = unquote(parts.path.lstrip("/"))
    label_issuer, sep, account = label.partition(":")
    if not sep:
        label_issuer, account = "", label
    account = account.strip()
    label_issuer = label_issuer.strip()
    if not account:
        raise UriError("the label has no account name")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise UriError("the query string is malformed") from None
    secret_text = _single(query, "secret")
    if not secret_text:
        raise UriError("parameter 'secret' is required")
    try:
        secret = decode_base32(secret_text)
    except ValueError:
        raise UriError("the secret is not base32") from None
    issuer = _single(query, "issuer")
    if issuer is not None:
        issuer = issuer.strip()
    if issuer and label_issuer and issuer != label_issuer:
        raise UriError("the label's issuer and the 'issuer' parameter differ")
    algorithm_text = _single(query, "algorithm")
    algorithm = hash_from_name(algorithm_text) if algorithm_text else DEFAULT_ALGORITHM
    if algorithm is None:
        raise UriError("algorithm must be SHA1, SHA256 or SHA512")
    digits = _int_param(query, "digits", DEFAULT_DIGITS)
    if mode == "hotp":
        counter, period = _int_param(query, "counter", None), DEFAULT_PERIOD
    else:
        counter, period = 0, _int_param(query, "period", DEFAULT_PERIOD)
    return TokenRecord(
        serial=account,
        mode=mode,
        algorithm=algorithm,
        digits=digits,
        secret=secret,
        counter=counter,
        period=period,
        manufacturer=issuer or label_issuer or UNKNOWN,
        model=MODEL,
    )


def build_uri(record: TokenRecord, issuer: str = DEFAULT_ISSUER, account: str | None = None) -> str:
    """The otpauth URI of ``record``: label ``issuer:account`` (account defaults to the serial)."""
    account = record.serial if account is None else account
    if ":" in issuer:
        raise FormatError("the issuer must not contain ':'")
    if not account.strip():
        raise FormatError("the account name is empty")
    label = quote(account, safe="@") if not issuer else f"{quote(issuer, safe='')}:{quote(account, safe='@')}"
    params: list[tuple[str, str | int]] = [("secret", encode_base32(record.secret))]
    if issuer:
        params.append(("issuer", issuer))
    params += [("algorithm", URI_NAMES[record.algorithm]), ("digits", record.digits)]
    if record.mode == "hotp":
        params.append(("counter", record.counter))
    else:
        params.append(("period", record.period))
    return f"otpauth://{record.mode}/{label}?{urlencode(params, quote_via=quote)}"


def parse_uris(text: str, where: str) -> list[TokenRecord]:
    """The tokens in a text of otpauth URIs, one per line."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            records.append(parse_uri(line))
        except FormatError as exc:
            raise FormatError(f"{where} line {number}: {exc}") from None
    if not records:
        raise FormatError(f"{where}: contains no tokens")
    return records


def format_uris(records: Iterable[TokenRecord], issuer: str = DEFAULT_ISSUER, where: str = "URIs") -> str:
    """One otpauth URI per line for ``records``."""
    return "".join(build_uri(record, issuer) + "\n" for record in check_records(records, where))


def write_uris(path: str | os.PathLike[str], records: Iterable[TokenRecord], issuer: str = DEFAULT_ISSUER) -> None:
    """Write ``records`` as otpauth URIs at ``path`` (mode 0600, replaced atomically). Seeds in the clear."""
    write_private(path, format_uris(records, issuer, os.fspath(path)).encode("utf-8"))
