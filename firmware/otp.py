# otp.py: HMAC (RFC 2104), HOTP (RFC 4226) and TOTP (RFC 6238) for MicroPython.
#
# MicroPython has no hmac module and its hash objects have no copy(), so an
# Hotp object keeps the two padded key blocks (K xor ipad, K xor opad) and
# a press costs two hash objects and two digests. Codes are ints: the display
# draws their digits without making a string.
#
# Big ints: on 32-bit ports small ints are < 2**30. A Unix time (~1.8e9) is a
# big int there, a step number (time // 30) and a counter of a real token are
# small. Dynamic truncation keeps every intermediate < 2**30 (see _truncate).

import hashlib
import struct
from micropython import const

_BLOCK = const(64)  # SHA-1 and SHA-256 block size in bytes
_IPAD = const(0x36)
_OPAD = const(0x5C)

KCV_LABEL = b"keyfob-kcv"

_MOD = {6: 1000000, 7: 10000000, 8: 100000000}


def _hash(alg):
    if alg == "sha1":
        return hashlib.sha1
    if alg == "sha256":
        return hashlib.sha256
    raise ValueError("unsupported algorithm")


def totp_step(unix_time, period=30):
    # RFC 6238 section 4.2: T = floor((Current Unix time - T0) / X), T0 = 0.
    return unix_time // period


class Hotp:
    # One key, precomputed for HMAC (RFC 2104 section 2).

    def __init__(self, key, alg="sha1"):
        h = _hash(alg)
        if len(key) > _BLOCK:
            key = h(key).digest()
        self._h = h
        self._ipad = bytearray(_BLOCK)
        self._opad = bytearray(_BLOCK)
        for i in range(_BLOCK):
            k = key[i] if i < len(key) else 0
            self._ipad[i] = k ^ _IPAD
            self._opad[i] = k ^ _OPAD
        self._msg = bytearray(8)

    def hmac(self, msg):
        # HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m))
        inner = self._h(self._ipad)
        inner.update(msg)
        outer = self._h(self._opad)
        outer.update(inner.digest())
        return outer.digest()

    def code(self, counter, digits=6):
        # RFC 4226 section 5.3: HOTP(K, C) = Truncate(HMAC(K, C)) mod 10^Digit,
        # C an 8-byte big-endian counter.
        struct.pack_into(">Q", self._msg, 0, counter)
        return _truncate(self.hmac(self._msg), _MOD[digits])

    def totp(self, unix_time, period=30, digits=6):
        return self.code(unix_time // period, digits)

    def wipe(self):
        for i in range(_BLOCK):
            self._ipad[i] = 0
            self._opad[i] = 0


def _truncate(d, mod):
    # RFC 4226 section 5.4, dynamic truncation: 31 bits at offset d[-1] & 0xf.
    # The 31-bit value can reach 2**31 - 1, a big int on 32-bit ports, so take
    # it as 2 * h + b with h (its top 30 bits) < 2**30 and b its low bit.
    o = d[len(d) - 1] & 0xF
    h = (d[o] & 0x7F) << 23 | d[o + 1] << 15 | d[o + 2] << 7 | d[o + 3] >> 1
    return ((h % mod) * 2 + (d[o + 3] & 1)) % mod


def hmac_digest(key, msg, alg="sha1"):
    return Hotp(key, alg).hmac(msg)


def hotp(key, counter, digits=6, alg="sha1"):
    return Hotp(key, alg).code(counter, digits)


def totp(key, unix_time, period=30, digits=6, alg="sha1"):
    return Hotp(key, alg).code(unix_time // period, digits)


def key_check_value(key, alg="sha1"):
    # HMAC(K, "keyfob-kcv"), first 3 bytes, each nibble written as a letter
    # a..p: 6 letters. It proves the seed landed intact, and being letters it
    # can never be mistaken for (or equal to) a decimal code of any counter.
    h = Hotp(key, alg)
    d = h.hmac(KCV_LABEL)
    h.wipe()  # no padded copy of the key left in the heap
    s = ""
    for i in range(3):
        s += chr(0x61 + (d[i] >> 4)) + chr(0x61 + (d[i] & 0xF))
    return s
