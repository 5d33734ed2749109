"""Token serial numbers: a short prefix, digits, and a Damm check digit.

A serial looks like ``KF00012345`` followed by one check digit: ``KF000123454``.
The Damm algorithm catches every single-digit error and every swap of two
adjacent digits (Luhn misses 09<->90), which is what matters when people type
serial numbers from the back of a token.
"""

from __future__ import annotations

import re

PREFIX = "KF"
BODY_DIGITS = 8

# Damm's totally anti-symmetric quasigroup of order 10 (H. M. Damm, 2004).
_DAMM = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)

_SERIAL_RE = re.compile(rf"^{PREFIX}(\d{{{BODY_DIGITS}}})(\d)$")


class SerialError(ValueError):
    """A serial number that is malformed or fails its check digit."""


def check_digit(digits: str) -> int:
    interim = 0
    for ch in digits:
        interim = _DAMM[interim][int(ch)]
    return interim


def make_serial(number: int) -> str:
    """The serial for sequence ``number`` (0 <= number < 10**8)."""
    if not 0 <= number < 10**BODY_DIGITS:
        raise SerialError(f"serial sequence number out of range: {number}")
    body = f"{number:0{BODY_DIGITS}d}"
    return f"{PREFIX}{body}{check_digit(body)}"


def normalize_serial(text: str) -> str:
    """Validate a typed serial (case, spaces and dashes forgiven) and return its canonical form."""
    cleaned = re.sub(r"[\s-]", "", text).upper()
    match = _SERIAL_RE.match(cleaned)
    if not match:
        raise SerialError(
            f"not a keyfob serial number: {text!r} (expected {PREFIX} followed by {BODY_DIGITS + 1} digits)"
        )
    body, check = match.groups()
    if check_digit(body) != int(check):
        raise SerialError(f"serial number {text!r} has a wrong check digit (mistyped?)")
    return cleaned


def is_valid_serial(text: str) -> bool:
    try:
        normalize_serial(text)
    except SerialError:
        return False
    return True
