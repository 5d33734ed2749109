"""The verifier's rules as pure functions: windows, resync, lockout, rate limit, one-field split.

Nothing here touches the database or the clock; the service passes ``now`` in. Codes are computed
by :class:`keyfob.otp.HotpKey` (RFC 4226 HOTP; RFC 6238 TOTP is HOTP over the time step), and every
candidate is compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, replace

from keyfob.otp import HotpKey, totp_step
from keyfob.params import RECORDS

from .errors import BadInput

#: the largest stored HOTP counter (keyfob.params: the database column is a signed 64-bit integer)
MAX_COUNTER = RECORDS.counter_max


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
    #: the admin's wide resync (``resync(..., wide=True)``, ``keyfob token resync --wide``)
    hotp_sync_window: int = 1000
    totp_sync_seconds: int = 86400
    #: everyone's narrow resync, self-service included: counters after the expected one (HOTP),
    #: steps each side of now + the token's drift (TOTP)
    hotp_near_window: int = 50
    totp_near_steps: int = 10
    #: how far logins may move a TOTP token's drift from the one its last link or resync set (steps);
    #: each login moves it by one step at most
    totp_drift_max: int = 10
    max_fail: int = 10
    #: seconds a token stays locked after ``max_fail`` failures; ``None`` = until an admin unlocks it.
    lock_seconds: float | None = 900.0
    #: failures per user (and per source) before the back-off starts; 0 turns throttling off.
    #: See :mod:`keyfob.verifier.throttle` for the design.
    user_rate_limit: int = 10
    #: seconds after a key's last failure when its count is forgotten
    user_rate_window: float = 900.0
    #: the longest back-off, in seconds (it doubles per failure from 1 s)
    backoff_max: float = 300.0
    #: days the audit log keeps a row (pruned on write, or ``keyfob audit prune``); 0: for ever
    audit_days: int = 365
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
        for name in ("hotp_window", "hotp_sync_window", "hotp_near_window", "max_fail", "backup_codes"):
            if getattr(self, name) < 1:
                raise BadInput(f"policy: {name} must be at least 1")
        if min(self.totp_window, self.user_rate_limit, self.totp_sync_seconds, self.totp_near_steps) < 0:
            raise BadInput("policy: windows and limits must not be negative")
        if self.lock_seconds is not None and not 0 < self.lock_seconds < 1e12:
            raise BadInput("policy: lock_seconds must be positive (or never)")
        if not 0 < self.user_rate_window < 1e12:
            raise BadInput("policy: user_rate_window must be positive")
        if not 1 <= self.backoff_max <= 86400:
            raise BadInput("policy: backoff_max is 1 to 86400 seconds")
        if not 0 <= self.audit_days <= 36500:
            raise BadInput("policy: audit_days is 0 (keep for ever) to 36500")
        if self.hotp_window > 10**6 or self.hotp_sync_window > 10**6 or self.totp_window > 10**4:
            raise BadInput("policy: a window that wide is not a window")
        if self.hotp_near_window > 1000 or self.totp_near_steps > 100 or not 0 <= self.totp_drift_max <= 10**4:
            raise BadInput("policy: the narrow resync window is at most 1000 counters or 100 steps")
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
    "hotp_near_window",
    "totp_window",
    "totp_sync_seconds",
    "totp_near_steps",
    "totp_drift_max",
    "max_fail",
    "lock_seconds",
    "user_rate_limit",
    "user_rate_window",
    "backoff_max",
    "audit_days",
)
_SECONDS = ("lock_seconds", "user_rate_window", "backoff_max")


def parse_setting(name: str, text: str):
    """The typed value of policy setting ``name`` from its text (``lock_seconds``: ``never`` for an
    admin-only unlock). :class:`BadInput` for an unknown name or a malformed value."""
    if name not in SHARED:
        raise BadInput(f"unknown setting {name!r} (known: {', '.join(SHARED)})")
    t = text.strip().lower()
    if name == "lock_seconds" and t in ("never", "none", "admin"):
        return None
    try:
        # Python's int() and float() take any script's digits (int("५") == 5): only ASCII here
        if (_SECONDS_RE if name in _SECONDS else _INT_RE).match(t) is None:
            raise ValueError
        if name in _SECONDS:
            val = float(t)
            if val != val or val in (float("inf"), float("-inf")):
                raise ValueError
            return int(val) if val.is_integer() else val
        return int(t, 10)
    except ValueError:
        kind = "a number of seconds" if name in _SECONDS else "a whole number"
        raise BadInput(f"{name} must be {kind} (ASCII digits), not {text!r}") from None


_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_SECONDS_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([e][+-]?[0-9]+)?\Z")


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
    key: HotpKey,
    now: float,
    period: int,
    drift: int,
    last_step: int,
    code: str,
    window: int,
    *,
    sync_drift: int | None = None,
    drift_max: int | None = None,
) -> tuple[int, int] | None:
    """``(step, new_drift)`` if ``code`` is the code of a step within ``window`` steps of
    now + ``drift`` and later than ``last_step``; else None. The drift is in steps.

    The drift a login teaches moves one step towards the code's at most, and (with ``sync_drift``
    and ``drift_max``) stays within ``drift_max`` steps of ``sync_drift``, the drift the token's
    last link or resync set: so a run of logins with ever older (or newer) codes cannot walk the
    window away from the token's real clock."""
    now_step = totp_step(now, period)
    center = now_step + drift
    lo = max(center - window, last_step + 1, 0)
    hi = center + window
    if hi < lo:
        return None
    step = key.find(code, lo, hi - lo + 1)
    if step is None:
        return None
    seen = step - now_step
    new = drift + (seen > drift) - (seen < drift)
    if sync_drift is not None and drift_max is not None:
        new = max(sync_drift - drift_max, min(sync_drift + drift_max, new))
    return step, new


def totp_replayed(key: HotpKey, now: float, period: int, drift: int, last_step: int, code: str, window: int) -> bool:
    """True if ``code`` is the code of an already used step (at or before ``last_step``) within
    ``window`` steps of now + ``drift``: a replay, not a guess."""
    center = totp_step(now, period) + drift
    lo = max(center - window, 0)
    hi = min(center + window, last_step)
    return hi >= lo and key.find(code, lo, hi - lo + 1) is not None


def hotp_replayed(key: HotpKey, counter: int, code: str, window: int) -> bool:
    """True if ``code`` is the code of one of the ``window`` counters just before ``counter`` (the
    next expected one): a code already accepted, sent again."""
    lo = max(counter - window, 0)
    return counter > lo and key.find(code, lo, counter - lo) is not None


def totp_resync(
    key: HotpKey,
    now: float,
    period: int,
    last_step: int,
    code1: str,
    code2: str,
    span_seconds: int | None = None,
    *,
    center_drift: int = 0,
    span_steps: int | None = None,
) -> tuple[int, int] | None:
    """``(step_of_code2, new_drift)`` for two consecutive codes within ±``span_seconds`` of now (the
    wide search), or within ±``span_steps`` of now + ``center_drift`` (the narrow one). Never a step
    at or before ``last_step``."""
    now_step = totp_step(now, period)
    if span_steps is None:
        span, center = span_seconds // period, now_step
    else:
        span, center = span_steps, now_step + center_drift
    lo = max(center - span, last_step + 1, 0)
    hi = center + span
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


# --- Throttling: back-off per failure (the design is in keyfob.verifier.throttle) ------------------


def backoff(fails: int, policy: Policy) -> float:
    """Seconds a key waits after its ``fails``-th failure: none for the first ``user_rate_limit`` - 1,
    then 1, 2, 4, ... up to ``backoff_max``."""
    if policy.user_rate_limit == 0 or fails < policy.user_rate_limit:
        return 0
    n = fails - policy.user_rate_limit
    return policy.backoff_max if n >= 40 else min(2**n, policy.backoff_max)


def throttle_reserve(state: tuple[int, float, float], now: float, policy: Policy) -> tuple[int, float, float] | None:
    """A throttle key's ``(fails, last_fail, next_ok)`` after one more reserved failure at ``now``,
    or None if the key is in back-off (nothing changes). Failures are forgotten ``user_rate_window``
    seconds after the last one. A new key starts as ``(0, now, 0)``. Until a back-off is earned,
    ``next_ok`` never moves later than it was (nor than now), so attempts whose clocks were read a
    moment apart, in any order, all pass. The rule :func:`keyfob.verifier.throttle.reserve`'s
    UPDATE implements."""
    fails, last, next_ok = state
    forgotten = last <= now - policy.user_rate_window
    if next_ok > now and not forgotten:
        return None
    n = 1 if forgotten else fails + 1
    wait = backoff(n, policy)
    return n, now, (now + wait) if wait else min(next_ok, now)


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
    import secrets

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
