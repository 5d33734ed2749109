"""One small rule object per kind of code: :data:`HOTP` and :data:`TOTP` (the token modes) and
:data:`BACKUP` (backup codes).

Logins, link and resync ask the token's mode (:func:`of`) instead of switching on ``mode``: the
position a code matches within the login window (``match``), whether it is a used one
(``replayed``), what resync searches (``resync``), and what the compare-and-set compares and sets
(a :class:`Move`). The arithmetic stays in :mod:`.rules`; a mode only picks the rule and its window
from the policy and the token row.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from . import rules


@dataclass(frozen=True, slots=True)
class Move:
    """Where a matched code moves a token: ``column`` (``counter`` or ``last_step``: compared with
    the value read, set to ``value``) and, for TOTP, the new ``drift``."""

    column: str
    value: int
    drift: int | None = None


class _Hotp:
    """RFC 4226: a counter, a look-ahead window after the next expected one."""

    name = "hotp"

    def match(self, key, tok, code: str, now: float, policy) -> Move | None:
        m = rules.hotp_check(key, tok.counter, code, policy.hotp_window)
        return None if m is None else Move("counter", m + 1)

    def replayed(self, key, tok, code: str, now: float, policy) -> bool:
        return rules.hotp_replayed(key, tok.counter, code, policy.hotp_window)

    def resync(self, key, tok, code1: str, code2: str, now: float, policy, wide: bool) -> Move | None:
        window = policy.hotp_sync_window if wide else policy.hotp_near_window
        n = rules.hotp_resync(key, tok.counter, code1, code2, window)
        return None if n is None else Move("counter", n)

    def synced(self, move: Move) -> dict:
        """What a link or resync stores besides the move (HOTP: nothing)."""
        return {}

    def detail(self, move: Move) -> str | None:
        """What a resync's audit row says about the move."""
        return None

    def exported_counter(self, tok) -> int:
        """The counter a seed file gets: the next one the verifier expects."""
        return tok.counter


class _Totp:
    """RFC 6238: the time step, a window around now + the token's drift, no step used twice."""

    name = "totp"

    def match(self, key, tok, code: str, now: float, policy) -> Move | None:
        r = rules.totp_check(
            key,
            now,
            tok.period,
            tok.drift,
            tok.last_step,
            code,
            policy.totp_window,
            sync_drift=tok.sync_drift,
            drift_max=policy.totp_drift_max,
        )
        return None if r is None else Move("last_step", r[0], r[1])

    def replayed(self, key, tok, code: str, now: float, policy) -> bool:
        return rules.totp_replayed(key, now, tok.period, tok.drift, tok.last_step, code, policy.totp_window)

    def resync(self, key, tok, code1: str, code2: str, now: float, policy, wide: bool) -> Move | None:
        if wide:
            r = rules.totp_resync(key, now, tok.period, tok.last_step, code1, code2, policy.totp_sync_seconds)
        else:
            r = rules.totp_resync(
                key,
                now,
                tok.period,
                tok.last_step,
                code1,
                code2,
                center_drift=tok.drift,
                span_steps=policy.totp_near_steps,
            )
        return None if r is None else Move("last_step", r[0], r[1])

    def synced(self, move: Move) -> dict:
        """A link or resync sets the drift logins may move from (``totp_drift_max``)."""
        return {"sync_drift": move.drift}

    def detail(self, move: Move) -> str | None:
        return f"drift {move.drift:+d} steps"

    def exported_counter(self, tok) -> int:
        return 0


class _Backup:
    """Single-use backup codes: typed with or without dashes, kept as keyed hashes."""

    name = "backup"

    def new(self) -> str:
        return rules.new_backup_code()

    def parse(self, text: str) -> str | None:
        """The canonical form of a typed backup code, or None if it is not one."""
        return rules.normalize_backup_code(text)

    def split(self, field: str) -> list[tuple[str, str]]:
        """Candidate ``(password, code)`` splits of password+backup code in one field."""
        return rules.split_backup_field(field)

    def find(self, rows, want: bytes):
        """The id of the unused code whose hash is ``want`` (``rows``: ``(id, code_hash)`` pairs, every
        one compared), else None."""
        hit = None
        for rid, code_hash in rows:
            if hmac.compare_digest(bytes(code_hash), want) and hit is None:
                hit = rid
        return hit


HOTP = _Hotp()
TOTP = _Totp()
BACKUP = _Backup()
#: the token modes by name (``tokens.mode``)
MODES = {m.name: m for m in (HOTP, TOTP)}


def of(tok):
    """The mode rule of a token row."""
    return MODES[tok.mode]
