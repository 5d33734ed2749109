"""The one shape a token's secret record has on the host.

A ``TokenRecord`` is what provisioning produces, what seed files (PSKC, CSV,
otpauth) carry, and what the verifier imports. HOTP counters stay below 2**63
(RFC 4226 allows 8 bytes; the verifier stores them in a signed 64-bit column). Its ``repr`` never shows the
secret, so a record that lands in a log or a traceback leaks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keyfob.errors import BadInput
from keyfob.params import DEFAULT_PERIOD, RECORDS, SEED_MAX, SEED_MIN, either

#: the longest manufacturer or model the verifier keeps (its columns are VARCHAR(64))
TEXT_MAX = 64
#: a starting TOTP drift (RFC 6030 TimeDrift) is at most this many seconds' worth of steps, the
#: verifier's widest resync span: anything larger is a broken file, not a slow clock
MAX_DRIFT_SECONDS = 10 * 86400


class RecordError(BadInput, ValueError):
    """A token record with a field out of range."""


@dataclass(frozen=True)
class TokenRecord:
    """One token as the formats read and write it: serial, mode, algorithm, digits, seed and the rest."""

    serial: str
    mode: str
    algorithm: str
    digits: int
    secret: bytes = field(repr=False)
    counter: int = 0
    period: int = DEFAULT_PERIOD
    manufacturer: str = "keyfob"
    model: str = "keyfob-1"
    #: TOTP: the token's clock offset at import, in time steps (device step - server step; RFC 6030
    #: TimeDrift); always 0 for HOTP
    drift: int = 0
    #: Unix seconds between which the key may be used, inclusive (RFC 6030 StartDate/ExpiryDate),
    #: or None for no limit; the verifier imports a key outside them disabled
    valid_from: float | None = None
    valid_until: float | None = None

    def __post_init__(self) -> None:
        # Messages name neither the serial nor the offending value: a file with shifted columns can
        # put a seed in any field. Callers say which file, line or key package was wrong.
        p = RECORDS  # the table of what a record may carry (keyfob.params)
        if self.mode not in p.modes:
            raise RecordError(f"mode must be one of {', '.join(p.modes)}")
        if self.algorithm not in p.algorithms:
            raise RecordError(f"algorithm must be one of {', '.join(p.algorithms)}")
        if self.digits not in p.digits:
            raise RecordError(f"digits must be {either(p.digits)}")
        if self.mode == "totp" and self.period not in p.periods:
            raise RecordError(f"period must be {either(p.periods)} s")
        counter = self.counter
        if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter <= p.counter_max:
            raise RecordError(
                "counter must be in 0 .. 2**63-1 (RFC 4226 allows 2**64-1;"
                " a signed 64-bit database column holds one bit less)"
            )
        if not isinstance(self.secret, bytes | bytearray) or not SEED_MIN <= len(self.secret) <= SEED_MAX:
            raise RecordError(f"seed must be at least {SEED_MIN} bytes (128 bits, RFC 4226) and at most {SEED_MAX}")
        for name in ("manufacturer", "model"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > TEXT_MAX or not value.isprintable():
                raise RecordError(f"{name} must be at most {TEXT_MAX} characters of printable text")
        if isinstance(self.drift, bool) or not isinstance(self.drift, int):
            raise RecordError("the drift must be a whole number of time steps")
        if self.mode == "hotp" and self.drift:
            raise RecordError("a HOTP token has no clock drift")
        if self.mode == "totp" and abs(self.drift) * self.period > MAX_DRIFT_SECONDS:
            raise RecordError("the drift must be within 10 days (RFC 6030 TimeDrift counts time steps)")
        for name in ("valid_from", "valid_until"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise RecordError(f"{name} must be Unix seconds or None")
        if self.valid_from is not None and self.valid_until is not None and self.valid_from > self.valid_until:
            raise RecordError("the key's validity ends before it starts (ExpiryDate before StartDate)")
