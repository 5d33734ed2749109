"""HOTP (RFC 4226) and TOTP (RFC 6238) on the host, over the standard library's HMAC (RFC 2104).

:class:`HotpKey` is what the verifier runs: it keeps the inner and outer hash states of one key
so a look-ahead window costs two state copies per counter instead of a full HMAC set-up.
:func:`hotp` and :func:`totp` compute one code from a seed, plainly (a reference for tools and tests);
:func:`key_check_value` is what provisioning compares with the token's answer.

Codes are strings (leading zeros matter); compare them with :func:`hmac.compare_digest`.
The firmware's ``otp.py`` implements the same definitions in MicroPython (codes as ints there).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from keyfob.errors import BadInput
from keyfob.params import CODE_DIGITS, DEFAULT_ALGORITHM, DEFAULT_DIGITS, DEFAULT_PERIOD, RECORDS, either

#: SHA-512 only for imported tokens: keyfob tokens (and the firmware) use SHA-1 or SHA-256
ALGORITHMS = RECORDS.algorithms
DIGITS = CODE_DIGITS

#: The fixed message of the key check value (see :func:`key_check_value`).
KCV_LABEL = b"keyfob-kcv"

_COUNTER = struct.Struct(">Q").pack
_WORD = struct.Struct(">I").unpack_from
_MOD = {d: 10**d for d in DIGITS}
_FMT = {d: f"%0{d}d" for d in DIGITS}
_BLOCK = {"sha1": 64, "sha256": 64, "sha512": 128}  # the hash's block size (RFC 2104 "B")
_TRANS_IPAD = bytes(x ^ 0x36 for x in range(256))
_TRANS_OPAD = bytes(x ^ 0x5C for x in range(256))


class OtpError(BadInput, ValueError):
    """A parameter out of range (algorithm, digits, counter, period, time)."""


def _check(digits: int, algorithm: str) -> None:
    if digits not in _MOD:
        raise OtpError(f"digits must be {either(DIGITS)}, not {digits!r}")
    if algorithm not in ALGORITHMS:
        raise OtpError(f"algorithm must be one of {ALGORITHMS}, not {algorithm!r}")


def _counter(counter: int) -> bytes:
    """C as 8 bytes big-endian (RFC 4226 section 5.2)."""
    try:
        return _COUNTER(counter)
    except struct.error:
        raise OtpError("counter must be in 0 .. 2**64 - 1") from None


def _truncate(mac: bytes, digits: int) -> str:
    """Dynamic truncation (RFC 4226 section 5.3): the low nibble of the last byte is an offset;
    the 31 bits there, mod 10^digits, written with leading zeros."""
    return _FMT[digits] % ((_WORD(mac, mac[-1] & 0x0F)[0] & 0x7FFFFFFF) % _MOD[digits])


def hotp(secret: bytes, counter: int, digits: int = DEFAULT_DIGITS, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """HOTP(K, C) = Truncate(HMAC(K, C)) mod 10^Digit (RFC 4226 section 5.3).

    ``counter`` is packed as 8 bytes big-endian. ``algorithm`` is ``sha1`` (RFC 4226), ``sha256`` or
    ``sha512`` (allowed for TOTP by RFC 6238 and used the same way here for HOTP).
    """
    _check(digits, algorithm)
    return _truncate(hmac.digest(secret, _counter(counter), algorithm), digits)


def totp_step(unix_time: float, period: int = DEFAULT_PERIOD) -> int:
    """T = floor((unix_time - T0) / X) with T0 = 0 and X = ``period`` (RFC 6238 section 4.2)."""
    if period <= 0:
        raise OtpError("period must be positive")
    if unix_time < 0:
        raise OtpError("unix time must not be negative")
    return int(unix_time // period)


def totp(
    secret: bytes,
    unix_time: float,
    period: int = DEFAULT_PERIOD,
    digits: int = DEFAULT_DIGITS,
    algorithm: str = DEFAULT_ALGORITHM,
) -> str:
    """TOTP = HOTP(K, T) with T = :func:`totp_step` of ``unix_time`` (RFC 6238 section 4)."""
    return hotp(secret, totp_step(unix_time, period), digits, algorithm)


_KCV_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


def key_check_value(secret: bytes, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """Six letters a..p: the nibbles of the first 3 bytes of HMAC(K, ``b'keyfob-kcv'``).

    Provisioning compares it with what the token answers to prove the seed landed intact. The
    message is 10 bytes long, never an 8-byte HOTP counter, so it tells nothing about any code, and
    being letters it can never equal a decimal code.
    """
    _check(6, algorithm)
    return hmac.digest(secret, KCV_LABEL, algorithm)[:3].hex().translate(_KCV_LETTERS)


class HotpKey:
    """One key with its HMAC inner and outer states precomputed (RFC 2104 section 4, "precomputed").

    >>> k = HotpKey(b"12345678901234567890")
    >>> k.codes(0, 3)
    ['755224', '287082', '359152']
    """

    __slots__ = ("_inner", "_outer", "algorithm", "digits")

    def __init__(self, secret: bytes, digits: int = DEFAULT_DIGITS, algorithm: str = DEFAULT_ALGORITHM):
        _check(digits, algorithm)
        self.digits = digits
        self.algorithm = algorithm
        key, block = bytes(secret), _BLOCK[algorithm]
        if len(key) > block:
            key = hashlib.new(algorithm, key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.new(algorithm, key.translate(_TRANS_IPAD))
        self._outer = hashlib.new(algorithm, key.translate(_TRANS_OPAD))

    def __repr__(self) -> str:
        return f"HotpKey(digits={self.digits}, algorithm={self.algorithm!r})"

    def mac(self, msg: bytes) -> bytes:
        """HMAC(K, msg)."""
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def code(self, counter: int) -> str:
        """HOTP value at ``counter``."""
        return _truncate(self.mac(_counter(counter)), self.digits)

    def codes(self, start: int, count: int) -> list[str]:
        """HOTP values for counters ``start`` .. ``start + count - 1`` (a verifier's look-ahead window)."""
        if start < 0 or count < 0 or start + count > 2**64:
            raise OtpError("counter must be in 0 .. 2**64 - 1")
        inner0, outer0, digits = self._inner, self._outer, self.digits
        out = []
        for c in range(start, start + count):
            inner = inner0.copy()
            inner.update(_COUNTER(c))
            outer = outer0.copy()
            outer.update(inner.digest())
            out.append(_truncate(outer.digest(), digits))
        return out

    def warm(self) -> WarmKey:
        """This key with a memory of the code windows it computes (see :class:`WarmKey`)."""
        return WarmKey(self)

    def find(self, code: str, start: int, count: int) -> int | None:
        """The first counter in ``start .. start + count - 1`` whose code equals ``code``, else None.

        Every candidate is compared with :func:`hmac.compare_digest`, and the scan does not stop early,
        so the time taken does not tell where (or whether) a match was.
        """
        found = None
        want = code.encode("ascii", "replace")
        for i, cand in enumerate(self.codes(start, count)):
            if hmac.compare_digest(cand.encode("ascii"), want) and found is None:
                found = start + i
        return found


class WarmKey(HotpKey):
    """A :class:`HotpKey` that keeps the windows :meth:`codes` computed, for one check: a verifier
    computes a login's window from where it expects the token to be before it takes the database's
    write lock, and inside the lock the same window costs nothing (another window, e.g. the token
    had moved, is computed as usual). :meth:`find` still compares every candidate. Short-lived: it
    holds codes, so it is dropped with the check."""

    __slots__ = ("_windows",)

    def __init__(self, key: HotpKey):  # shares the key's precomputed states (copied before each use)
        self._inner, self._outer = key._inner, key._outer
        self.digits, self.algorithm = key.digits, key.algorithm
        self._windows: dict[tuple[int, int], list[str]] = {}

    def codes(self, start: int, count: int) -> list[str]:
        hit = self._windows.get((start, count))
        if hit is None:
            hit = self._windows[(start, count)] = super().codes(start, count)
        return hit
