"""Pieces shared by the seed file formats: the error type, hash names, seed text, key files, private files."""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import tempfile
from pathlib import Path

from keyfob.errors import BadInput
from keyfob.params import SEED_LENGTHS
from keyfob.records import TokenRecord

# A seed file is a few kilobytes per thousand tokens; anything far larger is not one.
MAX_FILE_BYTES = 16 * 1024 * 1024

UNKNOWN = "unknown"
SHA512_SEED_LENGTH = 64


class FormatError(BadInput, ValueError):
    """A seed file that cannot be read or written as asked.

    The message names the file (and the line or key package) and says what is
    wrong; it never contains a seed.
    """


def hash_from_name(text: str) -> str | None:
    """``'sha1'``, ``'sha256'`` or ``'sha512'`` from names such as ``HMAC-SHA1``, ``SHA-256``, ``sha512``.

    Returns None for a hash keyfob does not support (MD5, SHA-384, ...).
    """
    name = re.sub(r"[\s_-]", "", text.strip().upper())
    name = name.removeprefix("HMAC")
    return {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}.get(name)


def hash_from_seed_length(length: int) -> str:
    """The hash a seed of ``length`` bytes was made for, when the file does not say.

    RFC 6238 (section 1.2 and appendix B) uses a seed as long as the hash
    output: 32 bytes for SHA-256, 64 for SHA-512. Every other length is taken
    as SHA-1, the RFC 4226 default.
    """
    if length == SEED_LENGTHS["sha256"]:
        return "sha256"
    if length == SHA512_SEED_LENGTH:
        return "sha512"
    return "sha1"


_HEX_RE = re.compile(r"[0-9a-fA-F]+")


def decode_seed_text(text: str) -> bytes:
    """A seed written as hex or as base32 (RFC 4648, padding optional, any case).

    Hex wins when the text is valid as both (the OATH CSV layout is hex).
    Raises ValueError with a message that never repeats the seed.
    """
    cleaned = re.sub(r"[\s-]", "", text)
    if not cleaned:
        raise ValueError("the seed is empty")
    if _HEX_RE.fullmatch(cleaned) and len(cleaned) % 2 == 0:
        return bytes.fromhex(cleaned)
    return decode_base32(cleaned)


def decode_base32(text: str) -> bytes:
    """Base32 with or without ``=`` padding, any case (Key URI format secrets)."""
    cleaned = re.sub(r"\s", "", text).upper().rstrip("=")
    if not cleaned:
        raise ValueError("the seed is empty")
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        return base64.b32decode(padded)
    except (binascii.Error, ValueError):
        raise ValueError("the seed is neither hex nor base32") from None


def encode_base32(secret: bytes) -> str:
    """Base32 without padding, as the Key URI format wants it."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def read_limited(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a seed file, refusing ones too large to be one."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FormatError(f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise FormatError(f"{os.fspath(path)}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, not a seed file")
    return data


AES_KEY_LENGTHS = (16, 24, 32)


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The pre-shared AES key (RFC 6030 section 6.1) in the file at ``path``: 16, 24 or 32 bytes in hex.

    The key unlocks seed files, so the file must be a regular file that only its owner can read
    or write (mode 0600 or stricter on POSIX). Messages never show the file's content.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise FormatError(f"the key file {p} does not exist") from None
    except OSError as exc:
        raise FormatError(f"cannot read the key file {p}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"the key file {p} is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise FormatError(f"the key file {p} can be read by others: chmod 600 it (or use a new one)")
    try:
        key = bytes.fromhex(p.read_text("ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError):
        key = b""
    if len(key) not in AES_KEY_LENGTHS:
        raise FormatError(f"the key file {p} does not hold a 128/192/256-bit AES key in hex")
    return key


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a file that holds seeds: mode 0600, all or nothing (temp file + rename)."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise FormatError(f"{os.fspath(path)}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise FormatError(f"{os.fspath(path)}: cannot write: {exc.strerror or exc}") from None
        raise


def check_records(records: object, where: str) -> list[TokenRecord]:
    """The records to write, as a list: TokenRecords, at least one, no serial twice."""
    items = list(records)  # type: ignore[call-overload]
    if not items:
        raise FormatError(f"{where}: no tokens to write")
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, TokenRecord):
            raise FormatError(f"{where}: expected TokenRecord, got {type(item).__name__}")
        if item.serial in seen:
            raise FormatError(f"{where}: serial {item.serial} appears more than once")
        seen.add(item.serial)
    return items
