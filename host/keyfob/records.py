"""The one shape a token's secret record has on the host.

A ``TokenRecord`` is what provisioning produces, what seed files (PSKC, CSV,
otpauth) carry, and what the verifier imports. HOTP counters stay below 2**63
(RFC 4226 allows 8 bytes; the verifier stores them in a signed 64-bit column). Its ``repr`` never shows the
secret, so a record that lands in a log or a traceback leaks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("hotp", "totp")
ALGORITHMS = ("sha1", "sha256")
DIGITS = (6, 8)
PERIODS = (30, 60)
SEED_LENGTHS = {"sha1": 20, "sha256": 32}
#: seed sizes any record may have: RFC 4226 asks for at least 128 bits; 64 bytes is a hash block,
#: beyond which HMAC hashes the key first (a 62,500-byte "seed" is a mistake, not a key)
SEED_MIN, SEED_MAX = 16, 64


class RecordError(ValueError):
    """A token record with a field out of range."""


@dataclass(frozen=True)
class TokenRecord:
    serial: str
    mode: str
    algorithm: str
    digits: int
    secret: bytes = field(repr=False)
    counter: int = 0
    period: int = 30
    manufacturer: str = "keyfob"
    model: str = "keyfob-1"

    def __post_init__(self) -> None:
        # Messages name neither the serial nor the offending value: a file with shifted columns can
        # put a seed in any field. Callers say which file, line or key package was wrong.
        if self.mode not in MODES:
            raise RecordError(f"mode must be one of {', '.join(MODES)}")
        if self.algorithm not in ALGORITHMS:
            raise RecordError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        if self.digits not in DIGITS:
            raise RecordError("digits must be 6 or 8")
        if self.mode == "totp" and self.period not in PERIODS:
            raise RecordError("period must be 30 or 60 s")
        if isinstance(self.counter, bool) or not isinstance(self.counter, int) or not 0 <= self.counter < 2**63:
            raise RecordError(
                "counter must be in 0 .. 2**63-1 (RFC 4226 allows 2**64-1;"
                " a signed 64-bit database column holds one bit less)"
            )
        if not isinstance(self.secret, bytes | bytearray) or not SEED_MIN <= len(self.secret) <= SEED_MAX:
            raise RecordError(f"seed must be at least {SEED_MIN} bytes (128 bits, RFC 4226) and at most {SEED_MAX}")
