"""Token serial numbers: a short prefix, digits, and a Damm check digit; and the rule for which
serials an inventory accepts.

A keyfob serial looks like ``KF00012345`` followed by one check digit: ``KF000123454``.
The Damm algorithm catches every single-digit error and every swap of two adjacent digits (Luhn
misses 09<->90), which is what matters when people type serial numbers from the back of a token.

Tokens from other vendors (Feitian, Yubico, multiOTP, the RFC 6030 examples' ``987654321``...)
carry their own serials with no check digit we could know; :func:`accept_serial` takes those as
given within plain limits, and holds anything that looks like a keyfob serial to its check digit.

Error messages never repeat the text they refuse: people paste the wrong thing into a serial box
(a seed, a password), and an error message may end up in a log.
"""

from __future__ import annotations

import re
import unicodedata

from keyfob.errors import BadInput

PREFIX = "KF"
BODY_DIGITS = 8
#: the longest serial an inventory keeps (the width of the database's serial columns)
SERIAL_MAX = 64

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

# ASCII digits only: Python's \d would also take e.g. Arabic-Indic digits, and then one token
# could be stored under two different spellings.
_SERIAL_RE = re.compile(rf"{PREFIX}([0-9]{{{BODY_DIGITS}}})([0-9])\Z")
_FORGIVEN_RE = re.compile(r"[\s-]")


class SerialError(BadInput, ValueError):
    """A serial number that is malformed or fails its check digit."""


def check_digit(digits: str) -> int:
    """The Damm check digit of a string of ASCII digits."""
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


def _forgiven(text: str) -> str:
    """``text`` as a person may have meant it: compatibility forms folded (full-width letters and
    digits), spaces and dashes dropped, upper case."""
    return _FORGIVEN_RE.sub("", unicodedata.normalize("NFKC", text)).upper()


def normalize_serial(text: str) -> str:
    """Validate a typed keyfob serial (case, spaces and dashes forgiven) and return its canonical
    form, or raise :class:`SerialError`."""
    if not isinstance(text, str):
        raise SerialError("a serial number is text")
    match = _SERIAL_RE.match(_forgiven(text))
    if not match:
        raise SerialError(f"not a keyfob serial number (expected {PREFIX} followed by {BODY_DIGITS + 1} digits)")
    body, check = match.groups()
    if check_digit(body) != int(check):
        raise SerialError("the keyfob serial number has a wrong check digit (mistyped?)")
    return match.group(0)


def is_valid_serial(text: str) -> bool:
    """True for a keyfob serial with the right check digit."""
    try:
        normalize_serial(text)
    except SerialError:
        return False
    return True


def accept_serial(text: str) -> str:
    """The serial as an inventory keeps it, or :class:`SerialError`.

    Anything that reads ``KF...`` once case, spaces and dashes are forgiven is a keyfob serial: it
    must pass its Damm check digit and is returned in canonical form (``KF`` + 9 digits). So a
    mistyped keyfob serial is refused rather than taken in as some other vendor's serial.

    Anything else is another vendor's serial: taken as given (surrounding whitespace stripped, case
    and punctuation kept) if it has 1 to :data:`SERIAL_MAX` printable ASCII characters and no
    whitespace. ASCII only, so that a lookalike (``КF000000013`` with a Cyrillic К) cannot pass for
    a keyfob serial without its check digit, nor list like one.
    """
    if not isinstance(text, str):
        raise SerialError("a serial number is text")
    stripped = text.strip()
    if not stripped:
        raise SerialError("the serial number is empty")
    if _forgiven(stripped).startswith(PREFIX):
        return normalize_serial(stripped)
    if len(stripped) > SERIAL_MAX:
        raise SerialError(f"a serial number has at most {SERIAL_MAX} characters")
    if not stripped.isascii():
        raise SerialError("a serial number must be ASCII letters, digits and punctuation (no lookalike letters)")
    if not all(c.isprintable() and not c.isspace() for c in stripped):
        raise SerialError("a serial number must not contain whitespace or control characters")
    return stripped
