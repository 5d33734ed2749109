"""OATH CSV seed files: ``serial, seed, type, digits, counter|period`` (one token per line).

This is the layout many OTP servers import and token vendors ship. The seed is
hex (or base32, RFC 4648), the type ``hotp`` or ``totp``, the last column the
HOTP counter or the TOTP period in seconds (empty: 0 or 30). An optional sixth
column names the hash (``sha1``/``sha256``/``sha512``); without it the hash follows
from the seed length (32 bytes: SHA-256, 64: SHA-512, RFC 6238 appendix B;
otherwise SHA-1).

A header line (first field ``serial...``), blank lines and ``#`` comments are
skipped. Any bad line fails the whole file with its line number. Messages never
quote field values: a shifted column could put a seed where a type belongs.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable

from keyfob.formats._common import (
    UNKNOWN,
    FormatError,
    check_records,
    decode_seed_text,
    hash_from_name,
    hash_from_seed_length,
    write_private,
)
from keyfob.params import DEFAULT_DIGITS, DEFAULT_PERIOD, RECORDS
from keyfob.records import RecordError, TokenRecord

HEADER = ("serial", "seed", "type", "digits", "counter/period", "algorithm")


def _is_header(row: list[str]) -> bool:
    return len(row) >= 3 and row[0].strip().lower().startswith("serial") and row[2].strip().lower() not in RECORDS.modes


def _int_field(text: str, name: str, default: int, where: str) -> int:
    text = text.strip()
    if not text:
        return default
    try:
        return int(text, 10)
    except ValueError:
        raise FormatError(f"{where}: {name} must be a whole number") from None


def _parse_row(row: list[str], where: str) -> TokenRecord:
    if len(row) not in (5, 6):
        raise FormatError(
            f"{where}: expected 5 fields (serial, seed, type, digits, counter|period) "
            f"and an optional algorithm, found {len(row)}"
        )
    serial = row[0].strip()
    if not serial:
        raise FormatError(f"{where}: the serial is empty")
    mode = row[2].strip().lower()
    if mode not in RECORDS.modes:
        raise FormatError(f"{where}: type (third field) must be hotp or totp")
    try:
        secret = decode_seed_text(row[1])
    except ValueError as exc:
        raise FormatError(f"{where}: {exc}") from None
    if len(row) == 6 and row[5].strip():
        algorithm = hash_from_name(row[5])
        if algorithm is None:
            raise FormatError(f"{where}: algorithm (sixth field) must be sha1, sha256 or sha512")
    else:
        algorithm = hash_from_seed_length(len(secret))
    digits = _int_field(row[3], "digits", DEFAULT_DIGITS, where)
    last = _int_field(row[4], "counter" if mode == "hotp" else "period", 0 if mode == "hotp" else DEFAULT_PERIOD, where)
    try:
        return TokenRecord(
            serial=serial,
            mode=mode,
            algorithm=algorithm,
            digits=digits,
            secret=secret,
            counter=last if mode == "hotp" else 0,
            period=last if mode == "totp" else DEFAULT_PERIOD,
            manufacturer=UNKNOWN,
            model=UNKNOWN,
        )
    except RecordError as exc:
        raise FormatError(f"{where}: {exc}") from None


def parse_csv(text: str, where: str) -> list[TokenRecord]:
    """The tokens in OATH CSV ``text`` (``where`` names the file in messages)."""
    records = []
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    first = True
    try:
        for row in reader:
            line = f"{where} line {reader.line_num}"
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if first and _is_header(row):
                first = False
                continue
            first = False
            records.append(_parse_row(row, line))
    except csv.Error as exc:
        raise FormatError(f"{where} line {reader.line_num}: not CSV: {exc}") from None
    if not records:
        raise FormatError(f"{where}: contains no tokens")
    return records


def format_csv(records: Iterable[TokenRecord], where: str = "CSV") -> str:
    """OATH CSV text for ``records``: a header, then hex seeds and the hash in the sixth column."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for record in check_records(records, where):
        last = record.counter if record.mode == "hotp" else record.period
        writer.writerow((record.serial, record.secret.hex(), record.mode, record.digits, last, record.algorithm))
    return out.getvalue()


def write_csv(path: str | os.PathLike[str], records: Iterable[TokenRecord]) -> None:
    """Write ``records`` as OATH CSV at ``path`` (mode 0600, replaced atomically). Seeds are in the clear."""
    write_private(path, format_csv(records, os.fspath(path)).encode("utf-8"))
