"""Power cuts at random points of a press on the virtual token (issue 3, acceptance 4).

The core of both the 50-cut test (tests/test_power_cut.py) and the 1,000-cut soak
(``python -m bench.soak``): :func:`run_cuts`.

What a cut is. Two kinds, mixed at random:

- ``kill``: the host sends a press, waits a random time and pulls the battery (SIGKILL of the
  micropython process, :meth:`VirtualToken.cut_power`). Half of the delays are spread over the
  whole press (debounce, store, HMAC, display, release), half are aimed at the few ms before the
  code frame, where the firmware writes the counter to the flash.
- ``flash``: the token is powered on with ``cut_after_writes=N`` (N random): its flash chip dies
  in the middle of block write N+1 (a prefix of the block is programmed, then the process dies on
  the spot), an exact point of a LittleFS commit. Presses are made until that happens; the ones
  that complete before are observed like any other.

What is checked, from what a user sees (codes decoded from the emulated OLED pixels):

- every press that completes shows a code, never "Not provisioned" or any other screen: the
  store is never unreadable after a cut;
- each observed code is mapped to its HOTP counter with pyotp; observed counters strictly
  increase: no code is ever shown twice;
- between two observed codes, the counter advances by at most 1 + (cuts in between): each cut may
  use up (skip) at most one counter value — the one whose code the cut press was about to show,
  or showed just before the battery went.

The token is provisioned with 8-digit codes so that mapping a code to a counter is unambiguous
(a chance match in the search range is about 1e-6 per code, against 1e-4 with 6 digits).
"""

from __future__ import annotations

import base64
import time

import pyotp
from keyfob.sim import SimError, SimTimeout, VirtualToken
from keyfob.sim.devtools import dev_provision
from keyfob.sim.textread import text_lines

PRESS_MS = 80
DIGITS = 8
SERIAL = "KF000123459"
#: cut_after_writes is drawn from 0 .. FLASH_WRITES_SPAN-1 (each press commits a few blocks).
FLASH_WRITES_SPAN = 12
#: How far back and ahead of the expected counter an observed code is looked up.
SEARCH_BACK = 64
SEARCH_AHEAD = 64


def provision(tok: VirtualToken, seed: bytes, **fields) -> None:
    """The development path (keyfob.sim.devtools); USB provisioning has its own tests."""
    dev_provision(tok, seed, **fields)

def ticks_diff(a: int, b: int, period: int = 1 << 30) -> int:
    """MicroPython's time.ticks_diff for two ticks_ms values read from the sim (unix port: 2**30)."""
    half = period // 2
    return (a - b + half) % period - half


def _stopped(tok: VirtualToken, err: SimError, wait: float = 2.0) -> bool:
    """After a failed request: True if the process is gone (its control link dropped as it died;
    the exit may take a moment to be reaped), False if it is alive but did not answer."""
    if isinstance(err, SimTimeout):
        return not tok.is_running
    deadline = time.monotonic() + wait
    while tok.is_running and time.monotonic() < deadline:
        time.sleep(0.005)
    return not tok.is_running


def _exit_code(tok: VirtualToken, wait: float = 2.0) -> int | None:
    """The dead process's exit status (the bridge records it a moment after the death)."""
    deadline = time.monotonic() + wait
    while tok.exit_code is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return tok.exit_code


class _Observer:
    """Maps codes to counters and keeps the rules."""

    def __init__(self, seed: bytes, digits: int) -> None:
        self.hotp = pyotp.HOTP(base64.b32encode(seed).decode(), digits=digits)
        self.last: int | None = None  # counter of the last observed code
        self.cuts_since = 0  # cuts since the last observed code
        self.observed = 0
        self.skipped = 0
        self.max_gap = 0
        self.violations: list[str] = []

    def counter_of(self, code: str) -> int | None:
        expect = 0 if self.last is None else self.last + 1
        # The allowed range first, so that a chance match elsewhere cannot shadow the real one.
        allowed = range(expect, expect + self.cuts_since + 1)
        wide = range(max(0, expect - SEARCH_BACK), expect + self.cuts_since + SEARCH_AHEAD)
        for c in list(allowed) + [c for c in wide if c not in allowed]:
            if self.hotp.at(c) == code:
                return c
        return None

    def code(self, where: str, code: str) -> None:
        c = self.counter_of(code)
        if c is None:
            self.violations.append(f"{where}: code on screen is no HOTP code near the expected counter")
            return
        if self.last is not None:
            gap = c - self.last - 1
            if c <= self.last:
                self.violations.append(f"{where}: counter {c} shown again (last shown {self.last})")
            elif gap > self.cuts_since:
                self.violations.append(
                    f"{where}: counter went from {self.last} to {c}: {gap} values skipped over {self.cuts_since} cut(s)"
                )
            if gap > 0:
                self.skipped += gap
                self.max_gap = max(self.max_gap, gap)
        elif c > self.cuts_since:
            self.violations.append(f"{where}: first code has counter {c}, after {self.cuts_since} cut(s)")
        self.last = c if self.last is None else max(c, self.last)
        self.cuts_since = 0
        self.observed += 1


def _observe_press(tok: VirtualToken, obs: _Observer, where: str, stats: dict) -> bool:
    """One complete press on a running token; False if the token died during it (a flash cut)."""
    try:
        tok.press(PRESS_MS, timeout=5)
        tok.wait_idle(timeout=5)
        screen = tok.screen(timeout=5)
    except SimError as e:
        if _stopped(tok, e):
            return False
        obs.violations.append(f"{where}: token alive but not answering after a press")
        tok.cut_power()
        return False
    digits = screen.digits()
    if digits is None:
        lines = text_lines(screen)
        if [s.lower() for s in lines] == ["not", "provisioned"]:
            stats["not_provisioned"] += 1
            obs.violations.append(f"{where}: 'Not provisioned' after a cut (store unreadable)")
        else:
            obs.violations.append(f"{where}: no code on screen after a press: {lines!r}")
        return True
    obs.code(where, digits)
    return True


def _calibrate(tok: VirtualToken, obs: _Observer, stats: dict) -> float:
    """A first, uncut press: observe it and return ms from the press to the code frame."""
    tok.wait_idle()
    tok.press(PRESS_MS)
    tok.wait_idle()
    parts = tok.request("stats?").split()
    frame_ms = ticks_diff(int(parts[6]), int(parts[5])) if len(parts) >= 7 else 40
    screen = tok.screen()
    if screen.digits() is None:
        raise SimError("the freshly provisioned token showed no code")
    obs.code("calibration", screen.digits())
    stats["calibration_frame_ms"] = frame_ms
    return float(frame_ms)


def _kill_cut(tok: VirtualToken, obs: _Observer, where: str, stats: dict, rng, frame_ms: float) -> None:
    """Power on, usually one observed press, then a press and SIGKILL after a random delay."""
    try:
        tok.power_on(timeout=5)
        tok.wait_idle(timeout=5)
    except SimError:
        obs.violations.append(f"{where}: token did not reach idle after power-on")
        tok.cut_power()
        return
    if rng.random() < 0.7 and not _observe_press(tok, obs, f"{where} (kill, before)", stats):
        obs.violations.append(f"{where}: token died without a cut (exit {_exit_code(tok)})")
        return
    if rng.random() < 0.5:
        delay = rng.uniform(0, frame_ms + PRESS_MS)  # anywhere in the press, release included
    else:
        delay = rng.uniform(max(0.0, frame_ms - 12), frame_ms + 2)  # at the counter's flash write
    try:
        tok.press(PRESS_MS, timeout=5)  # returns as the firmware's idle() takes the press
    except SimError:
        obs.violations.append(f"{where}: the token did not take the press")
    time.sleep(delay / 1000)
    tok.cut_power()


def run_cuts(make_token, seed: bytes, n: int, rng, flash_share: float = 0.5, log=None) -> dict:
    """Cut the power ``n`` times at random points of a press; return a summary.

    ``make_token()`` returns a :class:`VirtualToken`, not powered on, whose flash holds the
    deployed firmware (tests/conftest.py's ``make_token`` fixture does). It is provisioned here
    in HOTP mode with ``seed`` and 8-digit codes. ``rng`` is a ``random.Random``; ``flash_share``
    is the share of exact flash-write cuts (the rest are random-time kills). ``log(str)`` gets a
    progress line now and then.

    The summary: ``ok`` (no violation), ``violations`` (first 20 messages) and
    ``violation_count``, ``cuts`` / ``kill_cuts`` / ``flash_cuts``, ``codes_observed``,
    ``counters_skipped`` (values never shown, at most one per cut), ``max_skip`` (largest
    gap between two observed counters), ``not_provisioned`` (times the store looked empty),
    ``first_counter`` / ``last_counter``, ``seconds``.
    """
    start = time.perf_counter()
    stats = {"not_provisioned": 0, "kill_cuts": 0, "flash_cuts": 0, "boot_deaths": 0}
    obs = _Observer(seed, DIGITS)
    tok = make_token()
    tok.power_on()
    provision(tok, seed, digits=DIGITS)
    frame_ms = _calibrate(tok, obs, stats)
    first = obs.last
    tok.cut_power()  # at rest, after a finished press: not one of the n cuts
    cuts = 0
    while cuts < n:
        where = f"cut {cuts + 1}"
        if rng.random() < flash_share:
            kind = "flash"
            try:
                tok.power_on(cut_after_writes=rng.randrange(FLASH_WRITES_SPAN), timeout=5)
                tok.wait_idle(timeout=5)
            except SimError as e:
                if _stopped(tok, e):
                    stats["boot_deaths"] += 1
                else:
                    obs.violations.append(f"{where}: token did not reach idle after power-on")
                    tok.cut_power()
            presses = 0
            while tok.is_running and presses < 4 * FLASH_WRITES_SPAN:
                if not _observe_press(tok, obs, f"{where} (flash, press {presses + 1})", stats):
                    break
                presses += 1
            if tok.is_running:  # never reached the write limit: no cut happened
                tok.cut_power()
                obs.violations.append(f"{where}: flash cut never happened in {presses} presses")
            elif _exit_code(tok) not in (-9, 137):
                obs.violations.append(f"{where}: token died with exit {tok.exit_code}, not a power cut")
        else:
            kind = "kill"
            _kill_cut(tok, obs, where, stats, rng, frame_ms)
        stats[kind + "_cuts"] += 1
        obs.cuts_since += 1
        cuts += 1
        if log is not None and cuts % 50 == 0:
            log(f"{cuts}/{n} cuts, {obs.observed} codes, {len(obs.violations)} violations")
    # The last cut must not lose the token either.
    try:
        tok.power_on(timeout=5)
        tok.wait_idle(timeout=5)
        if not _observe_press(tok, obs, "final check", stats):
            obs.violations.append("final check: token died without a cut")
    except SimError as e:
        obs.violations.append(f"final check: {e}")
    finally:
        tok.cut_power()
    return {
        "ok": not obs.violations,
        "cuts": cuts,
        "kill_cuts": stats["kill_cuts"],
        "flash_cuts": stats["flash_cuts"],
        "flash_cuts_at_boot": stats["boot_deaths"],
        "codes_observed": obs.observed,
        "first_counter": first,
        "last_counter": obs.last,
        "counters_skipped": obs.skipped,
        "max_skip": obs.max_gap,
        "not_provisioned": stats["not_provisioned"],
        "press_to_frame_ms": stats.get("calibration_frame_ms"),
        "violation_count": len(obs.violations),
        "violations": obs.violations[:20],
        "seconds": round(time.perf_counter() - start, 1),
    }
