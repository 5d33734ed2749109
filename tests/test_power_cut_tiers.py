"""Power cuts during a press on both tiers (issue 9, point 4): at every flash operation of a
press, and at random instants.

Every index: the same provisioned flash, the power set to go at flash operation ``i`` of the
power-on (unix tier: the i+1th block write stores part of its block; Pico tier: the op does not
happen, or for an erase, it finishes or not), a press, then power on again and press. A code
drawn by the cut press (the frame log sees it even if the power goes a moment later) must be
the counter's, and the next press shows the next counter; a cut press that drew nothing skips at
most one value; the store always loads. Indices run until a press goes through uncut: all of
them, not a sample.
"""

from __future__ import annotations

import random
import secrets
import shutil
import time

import pyotp
import pytest
from conftest import b32, dev_provision, on_both_tiers
from keyfob.sim import SimError
from keyfob.sim.textread import text_lines

pytestmark = [pytest.mark.timeout(600), on_both_tiers]


def _died(tok) -> bool:
    """After a failed request: the token is off (a dying process takes a moment to be reaped)."""
    deadline = time.monotonic() + 2
    while tok.is_running and time.monotonic() < deadline:
        time.sleep(0.01)
    return not tok.is_running


def _power_on(tok, cut_at: int | None = None) -> None:
    try:
        if cut_at is None:
            tok.power_on()
        elif tok.board == "pico":
            tok.power_on(cut_after_ops=cut_at, cut_erase_done=bool(cut_at % 2))
        else:
            tok.power_on(cut_after_writes=cut_at)
    except SimError:
        if not _died(tok):
            raise  # it did not die at the cut: a real failure


def _idle(tok) -> bool:
    """Wait until idle; False when the power went meanwhile."""
    try:
        tok.wait_idle(10 * tok.patience)
    except SimError:
        if not _died(tok):
            raise
        return False
    return True


def _codes(tok, log) -> tuple[list[str], list[list[str]], object]:
    frames = tok.frames(log.end, log.power_ons)
    codes, texts = [], []
    for f in frames.frames:
        screen = f.screen()
        d = screen.digits() if f.lit else None
        if d is not None and d not in codes:
            codes.append(d)
        elif f.lit and d is None:
            texts.append(text_lines(screen))
    return codes, texts, frames


def _press(tok) -> bool:
    """A press; False when the power went during it."""
    try:
        tok.press()
    except SimError:
        if not _died(tok):
            raise
        return False
    return _idle(tok)


def _provisioned(make_token, seed: bytes):
    tok = make_token()
    tok.enable_frame_log()
    tok.power_on()
    dev_provision(tok, seed)
    tok.wait_idle()
    tok.power_off()
    image = tok.workdir / "provisioned.bin"
    shutil.copyfile(tok.flash_path, image)
    return tok, image


def test_a_cut_at_every_flash_operation_of_a_press(make_token):
    seed = secrets.token_bytes(20)
    hotp = pyotp.HOTP(b32(seed))
    tok, image = _provisioned(make_token, seed)
    log = tok.frames()
    seen_cuts = 0
    for i in range(200):
        shutil.copyfile(image, tok.flash_path)  # counter 0 next, every time
        _power_on(tok, cut_at=i)
        uncut = tok.is_running and _idle(tok) and _press(tok)
        cut_codes, texts, log = _codes(tok, log)
        tok.cut_power()
        assert len(cut_codes) <= 1 and ["Not", "provisioned"] not in texts, (i, cut_codes, texts)
        if cut_codes:
            assert cut_codes == [hotp.at(0)], i
        if uncut:
            assert cut_codes == [hotp.at(0)], i
            break
        seen_cuts += 1
        _power_on(tok)
        assert _idle(tok) and _press(tok), i
        after, texts, log = _codes(tok, log)
        tok.cut_power()
        assert ["Not", "provisioned"] not in texts, i
        allowed = [hotp.at(1)] if cut_codes else [hotp.at(0), hotp.at(1)]
        assert len(after) == 1 and after[0] in allowed, (i, after)
    else:
        pytest.fail("the press never went through uncut")
    assert seen_cuts >= 2  # the press writes to flash: some indices cut it


def test_cuts_at_random_instants_of_presses(make_token):
    rng_seed = secrets.randbits(32)
    rng = random.Random(rng_seed)
    seed = secrets.token_bytes(20)
    hotp = pyotp.HOTP(b32(seed))
    tok, _ = _provisioned(make_token, seed)
    log = tok.frames()
    last = -1  # the last counter whose code was seen
    cuts_without_code = 0
    for n in range(8 if tok.board == "unix" else 4):  # the emulated chip boots slower
        _power_on(tok)
        assert _idle(tok), (rng_seed, n)
        _, _, log = _codes(tok, log)
        tok.press(80)
        time.sleep(rng.uniform(0, 0.3 * tok.patience))
        tok.cut_power()
        codes, texts, log = _codes(tok, log)
        assert len(codes) <= 1 and ["Not", "provisioned"] not in texts, (rng_seed, n, texts)
        for code in codes:
            window = range(last + 1, last + 2 + cuts_without_code)
            counters = [c for c in window if hotp.at(c) == code]
            assert counters, (rng_seed, n, "a reused or skipped counter")
            last, cuts_without_code = counters[0], 0
        if not codes:
            cuts_without_code += 1
    _power_on(tok)
    assert _idle(tok) and _press(tok)
    codes, _, log = _codes(tok, log)
    window = range(last + 1, last + 2 + cuts_without_code)
    assert len(codes) == 1 and any(hotp.at(c) == codes[0] for c in window), rng_seed
