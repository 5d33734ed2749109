"""The token parameters of the whole host side, in one table: modes, algorithms, digit counts,
time steps and the counter bound.

Where the parts really differ, the table says so rather than the callers: :data:`KEYFOB` is what
keyfob's own firmware is provisioned with and shows (tests/test_params_firmware.py runs the
firmware's constants under MicroPython and holds them to it); :data:`RECORDS` is what any token
record on the host may carry (other vendors' seed files, the verifier's database);
:data:`CODE_DIGITS` is what the HOTP arithmetic computes, here and on the token.
"""

from __future__ import annotations


class TokenParams:
    """One column of the table (a plain class: this module is on the login's fast path, where
    dataclasses would cost an import of inspect)."""

    __slots__ = ("modes", "algorithms", "digits", "periods", "counter_max")

    def __init__(self, *, modes, algorithms, digits, periods, counter_max):
        self.modes: tuple[str, ...] = modes
        self.algorithms: tuple[str, ...] = algorithms
        self.digits: tuple[int, ...] = digits
        #: TOTP time steps, in seconds
        self.periods: tuple[int, ...] = periods
        #: the largest HOTP counter kept (the next counter to use)
        self.counter_max: int = counter_max

    def __repr__(self) -> str:
        return "TokenParams(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


#: keyfob's firmware: provisioning (proto.py) takes these; its store keeps an 8-byte counter
#: (RFC 4226), whose last value is never used for a code
KEYFOB = TokenParams(
    modes=("hotp", "totp"),
    algorithms=("sha1", "sha256"),
    digits=(6, 8),
    periods=(30, 60),
    counter_max=2**64 - 1,
)

#: any token record on the host: SHA-512 comes only with other vendors' tokens (RFC 6238 allows it
#: for TOTP, and HOTP servers such as multiOTP use it for both); counters stay below 2**63, since the
#: verifier stores them in a signed 64-bit column (no token presses its button 2**63 times)
RECORDS = TokenParams(
    modes=KEYFOB.modes,
    algorithms=("sha1", "sha256", "sha512"),
    digits=(6, 8),
    periods=(30, 60),
    counter_max=2**63 - 1,
)

#: what the HOTP/TOTP arithmetic computes (keyfob.otp and the firmware's otp.py): 6 to 8 digits
CODE_DIGITS = (6, 7, 8)

#: the seed keyfob provisioning makes per algorithm: the hash's output size (RFC 4226 section 4
#: recommends 160 bits)
SEED_LENGTHS = {"sha1": 20, "sha256": 32}
#: seed sizes any record may have: RFC 4226 asks for at least 128 bits; 64 bytes is a hash block,
#: beyond which HMAC hashes the key first (a 62,500-byte "seed" is a mistake, not a key)
SEED_MIN, SEED_MAX = 16, 64

#: what a seed file or a command that says nothing means (RFC 6238's X, the otpauth defaults)
DEFAULT_ALGORITHM = "sha1"
DEFAULT_DIGITS = 6
DEFAULT_PERIOD = 30


def either(values) -> str:
    """``(6, 8)`` as ``6 or 8``, ``(6, 7, 8)`` as ``6, 7 or 8``: for messages."""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
