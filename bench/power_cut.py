"""Power cuts at random points of a press on the virtual token (issue 3, acceptance 4).

The core of both the 50-cut test (tests/test_power_cut.py) and the 1,000-cut soak
(``python -m bench.soak``): :func:`run_cuts`.

What a cut is. Two kinds, mixed at random:

- ``kill``: the host sends a press, waits a random time and pulls the battery (SIGKILL of the
  micropython process, :meth:`VirtualToken.cut_power`). Half of the delays are spread over the
  whole press (debounce, store, HMAC, display, release), half are aimed at the few ms around the
  code frame, where the counter is written to the flash just before (or, in a wrong firmware,
  just after) the code is drawn.
- ``flash``: the token is powered on with ``cut_after_writes=N`` (N random): its flash chip dies
  in the middle of block write N+1 (a prefix of the block is programmed, then the process dies on
  the spot), an exact point of a LittleFS commit. Presses are made until that happens; the ones
  that complete before are observed like any other.

What is seen. The sim's frame log (``VirtualToken.enable_frame_log``): the emulated SSD1306
appends every picture it shows to a file with one unbuffered write the moment the I2C
transaction that drew it ends, so a code drawn by a press that is cut a moment later is seen as
well as the codes of completed presses. Every logged frame is decoded
(``keyfob.sim.screen.Screen.digits``) and given to the press it belongs to (the frames logged
between sending the press and the next press or power-on). After each completed press the
``screen?`` reply must equal the last logged frame: the log is checked against the panel.

What is checked, over the whole run:

- every press that completes shows a code, never "Not provisioned" or any other screen: the
  store is never unreadable after a cut; no code appears outside a press, and one press shows
  at most one code (the same code over several frames of one press counts once);
- each code is mapped to its HOTP counter with pyotp; the counters of successive presses
  strictly increase: no counter's code is ever shown by two presses, cut ones included;
- between two shown codes, the counter advances by at most 1 + (cuts in between whose press
  showed no code): a cut may use up (skip) at most one value - the one whose code the cut press
  was about to show - and a cut after its press showed its code skips nothing.

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
from keyfob.sim.token import LoggedFrame

PRESS_MS = 80
DIGITS = 8
SERIAL = "KF000123459"
#: cut_after_writes is drawn from 0 .. FLASH_WRITES_SPAN-1 (each press commits a few blocks).
FLASH_WRITES_SPAN = 12
#: How far back and ahead of the expected counter an observed code is looked up.
SEARCH_BACK = 64
SEARCH_AHEAD = 64
#: Aimed kills fall in frame_ms - AIM_BEFORE_MS .. frame_ms + AIM_AFTER_MS after the press (frame_ms:
#: press to the code frame, measured on an uncut press): the counter's flash write is right before
#: the frame in the firmware, right after it in a firmware that shows first.
AIM_BEFORE_MS = 12
AIM_AFTER_MS = 12


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


class _Frames:
    """The token's frame log, read on as the run goes; decodes each picture once."""

    def __init__(self, tok: VirtualToken) -> None:
        self.tok = tok
        self.pos = 0
        self.power_ons = 0
        self.frames = 0
        self.torn = 0
        self.last: LoggedFrame | None = None  # the last picture of the running process
        self._digits: dict[bytes, str | None] = {}

    def take(self) -> list[LoggedFrame]:
        """The frames logged since the last call (the process is idle or dead)."""
        log = self.tok.frames(self.pos, self.power_ons)
        if log.power_ons != self.power_ons:
            self.last = None  # a new process: its panel starts dark
        self.pos, self.power_ons = log.end, log.power_ons
        self.torn += log.torn
        self.frames += len(log.frames)
        if log.frames:
            self.last = log.frames[-1]
        return log.frames

    def digits(self, frame: LoggedFrame) -> str | None:
        key = frame.pixels if frame.lit else b""
        if key not in self._digits:
            self._digits[key] = frame.screen().digits() if frame.lit else None
        return self._digits[key]

    def codes(self, frames: list[LoggedFrame]) -> list[str]:
        """The distinct codes among ``frames``, in the order they first appeared."""
        out: list[str] = []
        for f in frames:
            d = self.digits(f)
            if d is not None and d not in out:
                out.append(d)
        return out


class _Observer:
    """Maps codes to counters and keeps the rules."""

    def __init__(self, seed: bytes, digits: int) -> None:
        self.hotp = pyotp.HOTP(base64.b32encode(seed).decode(), digits=digits)
        self.last: int | None = None  # counter of the last observed code
        self.cuts_since = 0  # cuts since the last observed code whose press showed no code
        self.observed = 0
        self.not_provisioned = 0  # completed presses that said "Not provisioned"
        self.skipped = 0
        self.max_gap = 0
        self.violations: list[str] = []
        self.last_cut = "none"  # kind of the latest cut, to tell what found a violation
        self.found_after = {"kill": 0, "flash": 0, "none": 0}

    def violation(self, msg: str) -> None:
        self.violations.append(msg)
        self.found_after[self.last_cut] += 1

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
            self.violation(f"{where}: code on screen is no HOTP code near the expected counter")
            return
        if self.last is not None:
            gap = c - self.last - 1
            if c <= self.last:
                self.violation(f"{where}: counter {c} shown again (last shown {self.last})")
            elif gap > self.cuts_since:
                self.violation(
                    f"{where}: counter went from {self.last} to {c}: {gap} values skipped over "
                    f"{self.cuts_since} cut(s) that showed no code"
                )
            if gap > 0:
                self.skipped += gap
                self.max_gap = max(self.max_gap, gap)
        elif c > self.cuts_since:
            self.violation(f"{where}: first code has counter {c}, after {self.cuts_since} cut(s)")
        self.last = c if self.last is None else max(c, self.last)
        self.cuts_since = 0
        self.observed += 1

    def cut(self, kind: str, showed_code: bool) -> None:
        """A cut happened; ``showed_code``: its press had drawn a code (then nothing may be lost)."""
        self.last_cut = kind
        if not showed_code:
            self.cuts_since += 1


def _between(fr: _Frames, obs: _Observer, where: str) -> None:
    """Frames logged while no press was going on (boot report, display off): never a code."""
    codes = fr.codes(fr.take())
    if codes:
        obs.violation(f"{where}: code(s) {codes} shown without a press")


def _press_frames(fr: _Frames, obs: _Observer, where: str, completed: bool) -> bool:
    """The frames of one press (logged since it was sent): at most one code, exactly one if
    the press completed; the code goes to the observer. True if the press showed a code."""
    frames = fr.take()
    codes = fr.codes(frames)
    if len(codes) > 1:
        obs.violation(f"{where}: one press showed {len(codes)} different codes")
    for code in codes:
        obs.code(where, code)
    if completed and not codes:
        last = fr.last
        if last is None:
            obs.violation(f"{where}: nothing on the panel after a press")
        else:
            lines = text_lines(last.screen())
            if [s.lower() for s in lines] == ["not", "provisioned"]:
                obs.not_provisioned += 1
                obs.violation(f"{where}: 'Not provisioned' after a cut (store unreadable)")
            else:
                obs.violation(f"{where}: no code on screen after a press: {lines!r}")
    return bool(codes)


def _observe_press(tok: VirtualToken, fr: _Frames, obs: _Observer, where: str, stats: dict) -> bool:
    """One complete press on a running token; False if the token died during it (a flash cut,
    whose frames are then taken as the cut press's, see :func:`_flash_cut`)."""
    _between(fr, obs, where)
    try:
        tok.press(PRESS_MS, timeout=5)
        tok.wait_idle(timeout=5)
        screen = tok.screen(timeout=5)
    except SimError as e:
        if _stopped(tok, e):
            return False
        obs.violation(f"{where}: token alive but not answering after a press")
        tok.cut_power()
        _press_frames(fr, obs, where, completed=False)
        return False
    _press_frames(fr, obs, where, completed=True)
    if fr.last is None or screen.pixels != fr.last.pixels:
        obs.violation(f"{where}: the panel (screen?) differs from the last frame in the frame log")
    return True


def _calibrate(tok: VirtualToken, fr: _Frames, obs: _Observer, stats: dict) -> float:
    """A first, uncut press: observe it and return ms from the press to the code frame."""
    tok.wait_idle()
    if not _observe_press(tok, fr, obs, "calibration", stats) or obs.violations or obs.last is None:
        raise SimError(f"the freshly provisioned token showed no code: {obs.violations[:3]}")
    parts = tok.request("stats?").split()
    frame_ms = ticks_diff(int(parts[6]), int(parts[5])) if len(parts) >= 7 else 40
    stats["calibration_frame_ms"] = frame_ms
    return float(frame_ms)


def _kill_cut(tok: VirtualToken, fr: _Frames, obs: _Observer, where: str, stats: dict, rng, frame_ms: float) -> None:
    """Power on, usually one observed press, then a press and SIGKILL after a random delay."""
    try:
        tok.power_on(timeout=5)
        tok.wait_idle(timeout=5)
    except SimError:
        obs.violation(f"{where}: token did not reach idle after power-on")
        tok.cut_power()
        obs.cut("kill", _press_frames(fr, obs, where, completed=False))
        return
    if rng.random() < 0.7 and not _observe_press(tok, fr, obs, f"{where} (kill, before)", stats):
        obs.violation(f"{where}: token died without a cut (exit {_exit_code(tok)})")
        obs.cut("kill", _press_frames(fr, obs, where, completed=False))
        return
    if rng.random() < 0.5:
        delay = rng.uniform(0, frame_ms + PRESS_MS)  # anywhere in the press, release included
    else:
        delay = rng.uniform(max(0.0, frame_ms - AIM_BEFORE_MS), frame_ms + AIM_AFTER_MS)
    _between(fr, obs, where)
    try:
        tok.press(PRESS_MS, timeout=5)  # returns as the firmware's idle() takes the press
    except SimError:
        obs.violation(f"{where}: the token did not take the press")
    time.sleep(delay / 1000)
    tok.cut_power()
    showed = _press_frames(fr, obs, f"{where} (kill at {delay:.1f} ms)", completed=False)
    stats["cut_presses_seen"] += showed
    obs.cut("kill", showed)


def _flash_cut(tok: VirtualToken, fr: _Frames, obs: _Observer, where: str, stats: dict, rng) -> None:
    """Power on with the flash set to die at a random block write, press until it does."""
    try:
        tok.power_on(cut_after_writes=rng.randrange(FLASH_WRITES_SPAN), timeout=5)
        tok.wait_idle(timeout=5)
    except SimError as e:
        if _stopped(tok, e):
            stats["boot_deaths"] += 1
        else:
            obs.violation(f"{where}: token did not reach idle after power-on")
            tok.cut_power()
    presses = 0
    while tok.is_running and presses < 4 * FLASH_WRITES_SPAN:
        if not _observe_press(tok, fr, obs, f"{where} (flash, press {presses + 1})", stats):
            break
        presses += 1
    if tok.is_running:  # never reached the write limit: no cut happened
        tok.cut_power()
        obs.violation(f"{where}: flash cut never happened in {presses} presses")
    elif _exit_code(tok) not in (-9, 137):
        obs.violation(f"{where}: token died with exit {tok.exit_code}, not a power cut")
    # The frames of the press the flash died in (or of the boot it died in).
    showed = _press_frames(fr, obs, f"{where} (flash, press {presses + 1}, died)", completed=False)
    stats["cut_presses_seen"] += showed
    obs.cut("flash", showed)


def run_cuts(make_token, seed: bytes, n: int, rng, flash_share: float = 0.5, log=None) -> dict:
    """Cut the power ``n`` times at random points of a press; return a summary.

    ``make_token()`` returns a :class:`VirtualToken`, not powered on, whose flash holds the
    deployed firmware (tests/conftest.py's ``make_token`` fixture does); its frame log is switched
    on here. It is provisioned here in HOTP mode with ``seed`` and 8-digit codes. ``rng`` is a
    ``random.Random``; ``flash_share`` is the share of exact flash-write cuts (the rest are
    random-time kills). ``log(str)`` gets a progress line now and then.

    The summary: ``ok`` (no violation), ``violations`` (first 20 messages) and
    ``violation_count``, ``violations_after`` (how many followed a ``kill`` / ``flash`` cut),
    ``cuts`` / ``kill_cuts`` / ``flash_cuts``, ``codes_observed`` (presses that showed a code,
    cut ones included), ``codes_seen_in_cut_presses``, ``frames_logged`` / ``torn_frames``,
    ``counters_skipped`` (values never shown, at most one per cut), ``max_skip`` (largest gap
    between two observed counters), ``not_provisioned`` (times the store looked empty),
    ``first_counter`` / ``last_counter``, ``seconds``.
    """
    start = time.perf_counter()
    stats = {"kill_cuts": 0, "flash_cuts": 0, "boot_deaths": 0, "cut_presses_seen": 0}
    obs = _Observer(seed, DIGITS)
    tok = make_token()
    tok.enable_frame_log()
    fr = _Frames(tok)
    tok.power_on()
    provision(tok, seed, digits=DIGITS)
    frame_ms = _calibrate(tok, fr, obs, stats)
    first = obs.last
    tok.cut_power()  # at rest, after a finished press: not one of the n cuts
    _between(fr, obs, "calibration")
    cuts = 0
    while cuts < n:
        where = f"cut {cuts + 1}"
        if rng.random() < flash_share:
            kind = "flash"
            _flash_cut(tok, fr, obs, where, stats, rng)
        else:
            kind = "kill"
            _kill_cut(tok, fr, obs, where, stats, rng, frame_ms)
        stats[kind + "_cuts"] += 1
        cuts += 1
        if log is not None and cuts % 50 == 0:
            log(f"{cuts}/{n} cuts, {obs.observed} codes, {len(obs.violations)} violations")
    # The last cut must not lose the token either.
    try:
        tok.power_on(timeout=5)
        tok.wait_idle(timeout=5)
        if not _observe_press(tok, fr, obs, "final check", stats):
            obs.violation("final check: token died without a cut")
    except SimError as e:
        obs.violation(f"final check: {e}")
    finally:
        tok.cut_power()
    _between(fr, obs, "final check")
    return {
        "ok": not obs.violations,
        "cuts": cuts,
        "kill_cuts": stats["kill_cuts"],
        "flash_cuts": stats["flash_cuts"],
        "flash_cuts_at_boot": stats["boot_deaths"],
        "codes_observed": obs.observed,
        "codes_seen_in_cut_presses": stats["cut_presses_seen"],
        "frames_logged": fr.frames,
        "torn_frames": fr.torn,
        "first_counter": first,
        "last_counter": obs.last,
        "counters_skipped": obs.skipped,
        "max_skip": obs.max_gap,
        "not_provisioned": obs.not_provisioned,
        "press_to_frame_ms": stats.get("calibration_frame_ms"),
        "violation_count": len(obs.violations),
        "violations_after": {k: v for k, v in obs.found_after.items() if k != "none" or v},
        "violations": obs.violations[:20],
        "seconds": round(time.perf_counter() - start, 1),
    }
