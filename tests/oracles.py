"""Independent references the tests hold the code against: RFC 4226 written out here, pyotp,
and the key check value as docs/protocol.md defines it. Nothing here imports keyfob's OTP code."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pyotp
from keyfob.records import TokenRecord


def b32(seed: bytes) -> str:
    return base64.b32encode(seed).decode()


def hotp(secret: bytes, counter: int, digits: int, algorithm: str) -> str:
    """RFC 4226 section 5.3, written out here so the tests do not trust one implementation."""
    mac = hmac.new(secret, counter.to_bytes(8, "big"), algorithm).digest()
    offset = mac[-1] & 0x0F
    code = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def pyotp_code(record: TokenRecord, moment: int) -> str:
    """pyotp's code for ``record``: at counter ``moment`` (HOTP) or Unix time ``moment`` (TOTP)."""
    digest = getattr(hashlib, record.algorithm)
    key = b32(record.secret)
    if record.mode == "hotp":
        return pyotp.HOTP(key, digits=record.digits, digest=digest).at(moment)
    return pyotp.TOTP(key, digits=record.digits, digest=digest, interval=record.period).at(moment)


def kcv(seed: bytes, algorithm: str) -> str:
    """docs/protocol.md: the first 3 bytes of HMAC(seed, b"keyfob-kcv"), each nibble as a letter a..p."""
    mac = hmac.new(seed, b"keyfob-kcv", getattr(hashlib, algorithm)).digest()[:3]
    return "".join(chr(0x61 + (b >> 4)) + chr(0x61 + (b & 15)) for b in mac)
