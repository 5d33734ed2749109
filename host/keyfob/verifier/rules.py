"""The verifier's rules as pure functions: windows, resync, lockout, rate limit, one-field split.

Nothing here touches the database or the clock; the service passes ``now`` in. Codes are computed
by :class:`keyfob.otp.HotpKey` (RFC 4226 HOTP; RFC 6238 TOTP is HOTP over the time step), and every
candidate is compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass, replace

from keyfob.otp import HotpKey, totp_step

from .errors import BadInput

#: the largest stored HOTP counter: the database column is a signed 64-bit integer, so counters stay
#: below 2**63 (RFC 4226 allows 8 bytes, but no token presses its button 2**63 times)
MAX_COUNTER = 2**63 - 1


@dataclass(frozen=True)
class Policy:
    """Tunable limits. Defaults follow privacyIDEA where it has one (look-ahead 10, sync window 1000,
    max fail 10); the TOTP window is one step each side of now + the token's drift (RFC 6238 section 5.2
    recommends at most one step of network delay).

    The fields in :data:`SHARED` are kept in the database (``settings``) so that every node using one
    database applies the same limits: :meth:`Verifier.init` stores them, :meth:`Verifier.open` reads
    them, :meth:`Verifier.set_policy` changes them. ``backup_codes`` and ``password_profile`` are local.
    """

    hotp_window: int = 10
    totp_window: int = 1
    hotp_sync_window: int = 1000
    totp_sync_seconds: int = 86400
    max_fail: int = 10
    #: seconds a token stays locked after ``max_fail`` failures; ``None`` = until an admin unlocks it.
    lock_seconds: float | None = 900.0
    #: failed attempts per user per ``user_rate_window`` seconds before further attempts are refused
    #: unchecked; 0 turns the limit off. See :func:`throttled` for the trade-off.
    user_rate_limit: int = 20
    user_rate_window: float = 60.0
    backup_codes: int = 10
    password_profile: str = "default"

    def __post_init__(self) -> None:
        for name in SHARED:
            val = getattr(self, name)
            if name == "lock_seconds" and val is None:
                continue
            kind = (int, float) if name in _SECONDS else int
            if isinstance(val, bool) or not isinstance(val, kind):
                raise BadInput(f"policy: {name} must be a number")
        if not isinstance(self.backup_codes, int) or isinstance(self.backup_codes, bool):
            raise BadInput("policy: backup_codes must be a whole number")
        for name in ("hotp_window", "hotp_sync_window", "max_fail", "backup_codes"):
            if getattr(self, name) < 1:
                raise BadInput(f"policy: {name} must be at least 1")
        if self.totp_window < 0 or self.user_rate_limit < 0 or self.totp_sync_seconds < 0:
            raise BadInput("policy: windows and limits must not be negative")
        if self.lock_seconds is not None and not 0 < self.lock_seconds < 1e12:
            raise BadInput("policy: lock_seconds must be positive (or never)")
        if not 0 < self.user_rate_window < 1e12:
            raise BadInput("policy: user_rate_window must be positive")
        if self.hotp_window > 10**6 or self.hotp_sync_window > 10**6 or self.totp_window > 10**4:
            raise BadInput("policy: a window that wide is not a window")
        if self.totp_sync_seconds > 10 * 86400:
            raise BadInput("policy: totp_sync_seconds is at most 10 days")

    def shared(self) -> dict:
        """The fields every node must agree on, as a JSON-able dict."""
        return {name: getattr(self, name) for name in SHARED}

    def with_shared(self, values: dict) -> Policy:
        """This policy with the shared fields taken from ``values`` (unknown names refused)."""
        unknown = sorted(set(values) - set(SHARED))
        if unknown:
            raise BadInput(f"policy: unknown setting {unknown[0]!r} (known: {', '.join(SHARED)})")
        return replace(self, **values)


#: the policy fields kept in the database, in display order
SHARED = (
    "hotp_window",
    "hotp_sync_window",
    "totp_window",
    "totp_sync_seconds",
    "max_fail",
    "lock_seconds",
    "user_rate_limit",
    "user_rate_window",
)
_SECONDS = ("lock_seconds", "user_rate_window")


def parse_setting(name: str, text: str):
    """The typed value of policy setting ``name`` from its text (``lock_seconds``: ``never`` for an
    admin-only unlock). :class:`BadInput` for an unknown name or a malformed value."""
    if name not in SHARED:
        raise BadInput(f"unknown setting {name!r} (known: {', '.join(SHARED)})")
    t = text.strip().lower()
    if name == "lock_seconds" and t in ("never", "none", "admin"):
        return None
    try:
        if name in _SECONDS:
            val = float(t)
            if val != val or val in (float("inf"), float("-inf")):
                raise ValueError
            return int(val) if val.is_integer() else val
        return int(t, 10)
    except ValueError:
        kind = "a number of seconds" if name in _SECONDS else "a whole number"
        raise BadInput(f"{name} must be {kind}, not {text!r}") from None


_DIGITS_RE = re.compile(r"[0-9]+\Z")


def is_code(text: str, digits: int) -> bool:
    """True if ``text`` is exactly ``digits`` ASCII digits."""
    return isinstance(text, str) and len(text) == digits and _DIGITS_RE.match(text) is not None


def check_code_format(code: str, allowed_digits) -> str:
    """Return ``code`` if it is all ASCII digits of an allowed length, else raise :class:`BadInput`.

    The message says what was wrong without repeating the code.
    """
    allowed = sorted(set(allowed_digits))
    lengths = " or ".join(str(d) for d in allowed)
    if not isinstance(code, str) or not code or _DIGITS_RE.match(code) is None:
        raise BadInput(f"a code must be {lengths} digits (0-9 only)")
    if len(code) not in allowed:
        raise BadInput(f"a code must be {lengths} digits, not {len(code)}")
    return code


# --- HOTP (RFC 4226 section 7.4: look-ahead window and resynchronisation) -------------------------


def hotp_check(key: HotpKey, counter: int, code: str, window: int) -> int | None:
    """The counter in ``counter .. counter + window - 1`` whose code is ``code``, else None.

    On success the stored counter must become the result + 1, so the window never reaches past
    :data:`MAX_COUNTER` - 1.
    """
    window = min(window, MAX_COUNTER - counter)
    if counter < 0 or window < 1:
        return None
    return key.find(code, counter, window)


def _consecutive(codes: list[str], code1: str, code2: str) -> int | None:
    """Index i of the first pair codes[i] == code1 and codes[i+1] == code2 (scanning all of them)."""
    a, b = code1.encode("ascii"), code2.encode("ascii")
    enc = [c.encode("ascii") for c in codes]
    found = None
    for i in range(len(enc) - 1):
        if hmac.compare_digest(enc[i], a) & hmac.compare_digest(enc[i + 1], b) and found is None:
            found = i
    return found


def hotp_resync(key: HotpKey, counter: int, code1: str, code2: str, window: int) -> int | None:
    """New stored counter after two consecutive codes found within ``window`` counters, else None.

    The new counter is at most :data:`MAX_COUNTER`."""
    window = min(window, MAX_COUNTER - 1 - counter)
    if counter < 0 or window < 1:
        return None
    i = _consecutive(key.codes(counter, window + 1), code1, code2)
    return None if i is None else counter + i + 2


# --- TOTP (RFC 6238 section 5.2: validation window, no reuse, drift) --------------------------------


def totp_check(
    key: HotpKey, now: float, period: int, drift: int, last_step: int, code: str, window: int
) -> tuple[int, int] | None:
    """``(step, new_drift)`` if ``code`` is the code of a step within ``window`` steps of
    now + ``drift`` and later than ``last_step``; else None. The drift is in steps."""
    now_step = totp_step(now, period)
    center = now_step + drift
    lo = max(center - window, last_step + 1, 0)
    hi = center + window
    if hi < lo:
        return None
    step = key.find(code, lo, hi - lo + 1)
    return None if step is None else (step, step - now_step)


def totp_resync(
    key: HotpKey, now: float, period: int, last_step: int, code1: str, code2: str, span_seconds: int
) -> tuple[int, int] | None:
    """``(step_of_code2, new_drift)`` for two consecutive codes within ±``span_seconds`` of now."""
    now_step = totp_step(now, period)
    span = span_seconds // period
    lo = max(now_step - span, last_step + 1, 0)
    hi = now_step + span
    if hi <= lo:
        return None
    i = _consecutive(key.codes(lo, hi - lo + 1), code1, code2)
    if i is None:
        return None
    step = lo + i + 1
    return step, step - now_step


# --- Fail counter and lockout ---------------------------------------------------------------------


def is_locked(fail_count: int, locked_until: float | None, now: float, policy: Policy) -> bool:
    """A token is locked once it has ``max_fail`` failures, until an admin unlock or ``locked_until``."""
    if fail_count < policy.max_fail:
        return False
    return locked_until is None or now < locked_until


def after_failure(fail_count: int, locked_until: float | None, now: float, policy: Policy) -> tuple[int, float | None]:
    """``(fail_count, locked_until)`` after one more wrong code. An expired lock starts counting anew."""
    if fail_count >= policy.max_fail and locked_until is not None and now >= locked_until:
        fail_count = 0
    fail_count += 1
    if fail_count >= policy.max_fail:
        locked_until = None if policy.lock_seconds is None else now + policy.lock_seconds
    else:
        locked_until = None
    return fail_count, locked_until


# --- Per-user rate limit --------------------------------------------------------------------------
#
# Trade-off. The token lock alone stops guessing codes, but it is also a weapon: anyone who can submit
# attempts could lock a user's token again and again. So:
#   * on the login paths that check the password (``Verifier.verify``, self-service resync) a wrong
#     *password* never counts against a token: without the password an attacker cannot lock the token
#     there; password guessing is slowed by this per-user limit instead. The code-only path
#     (``Verifier.check_code``, ``keyfob validate --code-only``) checks no password and does count wrong
#     codes against the token: it is meant for a stack where the password has already been checked
#     earlier (e.g. pam_unix before the keyfob PAM module), and must only be reachable after that check;
#   * the per-user limit is a short fixed window (default 20 failures per 60 s, above the token limit
#     so it never pre-empts the token lock in normal use). Past it, attempts
#     are refused *without being checked* and without touching the token's fail count, and the window
#     ends on its own: no admin is needed and nothing is locked for good.
# The price: while an attacker keeps sending wrong attempts for a user, that user's own logins are
# refused too (for at most the rest of each window after the attacker stops). We accept that because
# the alternatives are worse: no limit lets passwords be guessed at full speed, and a lock that only an
# admin lifts lets one attacker shut a user out for ever. Limiting per source address belongs in the
# front end (web server, RADIUS), which sees addresses; this library does not.
#
# Both counters are *reserved* before anything is checked (see ``Verifier._reserve``): one atomic
# ``UPDATE ... SET count = count + 1 WHERE ... count < limit`` per attempt, so parallel attempts can
# never get more checks than the limit allows. A successful attempt gives its reservations back.
# :func:`after_failure` and :func:`after_user_failure` are the rules those UPDATEs implement.


def new_window(rl_start: float | None, now: float, policy: Policy) -> bool:
    """True if an attempt at ``now`` starts a new rate-limit window. A start slightly after ``now``
    (another node's or thread's clock read a moment later) is the same window; only a clock that
    went back by more than a whole window starts a new one."""
    if rl_start is None:
        return True
    return now - rl_start >= policy.user_rate_window or rl_start - now > policy.user_rate_window


def throttled(rl_start: float | None, rl_count: int, now: float, policy: Policy) -> bool:
    """True if the user has used up the failed attempts of the current window."""
    if policy.user_rate_limit == 0 or new_window(rl_start, now, policy):
        return False
    return rl_count >= policy.user_rate_limit


def after_user_failure(rl_start: float | None, rl_count: int, now: float, policy: Policy) -> tuple[float, int]:
    """``(rl_start, rl_count)`` after one more failed attempt by the user."""
    if new_window(rl_start, now, policy):
        return now, 1
    return rl_start, rl_count + 1


# --- One field: password followed by the code -----------------------------------------------------


def split_field(field: str, digit_lengths) -> list[tuple[str, str]]:
    """Candidate ``(password, code)`` splits of password+code typed in one box.

    The code is the last ``d`` characters for each ``d`` in ``digit_lengths`` (the user's tokens'
    lengths), if they are all ASCII digits. A password that itself ends in digits is fine: only the
    split whose password verifies is used, and two splits give passwords of different lengths.
    """
    out = []
    for d in sorted(set(digit_lengths)):
        if len(field) > d and is_code(field[-d:], d):
            out.append((field[:-d], field[-d:]))
    return out


# --- Backup codes ---------------------------------------------------------------------------------

BACKUP_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i
_BACKUP_LEN = 12
_BACKUP_RE = re.compile(r"[%s]{4}-?[%s]{4}-?[%s]{4}\Z" % ((BACKUP_ALPHABET,) * 3))


def new_backup_code() -> str:
    """A random single-use code like ``k3m9-x2qf-7hzt`` (12 symbols of 31: 59 bits)."""
    raw = "".join(secrets.choice(BACKUP_ALPHABET) for _ in range(_BACKUP_LEN))
    return f"{raw[0:4]}-{raw[4:8]}-{raw[8:12]}"


def normalize_backup_code(text: str) -> str | None:
    """The canonical form (12 symbols, no dashes) of a typed backup code, or None if it is not one."""
    if not isinstance(text, str):
        return None
    t = text.strip().lower()
    if _BACKUP_RE.match(t) is None:
        return None
    return t.replace("-", "")


def split_backup_field(field: str) -> list[tuple[str, str]]:
    """Candidate ``(password, backup_code)`` splits of password+backup code typed in one box."""
    out = []
    for n in (14, 12):  # with or without the two dashes
        if len(field) > n:
            code = normalize_backup_code(field[-n:])
            if code is not None:
                out.append((field[:-n], code))
    return out
