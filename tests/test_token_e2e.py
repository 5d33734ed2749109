"""The token end to end on the virtual token: the real firmware files, deployed with mpremote,
running under the real MicroPython unix port and under the real rp2 port in an emulated RP2040;
codes read back from the emulated OLED pixels.
"""

from __future__ import annotations

import secrets
import time

import pyotp
import pytest
from conftest import b32, dev_provision, on_both_tiers
from keyfob.sim.textread import text_lines

pytestmark = [pytest.mark.timeout(240), on_both_tiers]

RFC4226_SEED = b"12345678901234567890"
# RFC 6238 appendix B seeds: the SHA1 key is 20 bytes, the SHA256 key 32 bytes.
RFC6238_SEEDS = {"sha1": b"12345678901234567890", "sha256": b"12345678901234567890123456789012"}
# RFC 6238 appendix B, the times a DS3231 can hold (its calendar runs 2000..2199; the table's
# 59 s and 20000000000 s lie outside it and are covered by the firmware otp tests).
RFC6238_TABLE = {
    1111111109: {"sha1": "07081804", "sha256": "68084774"},
    1111111111: {"sha1": "14050471", "sha256": "67062674"},
    1234567890: {"sha1": "89005924", "sha256": "91819424"},
    2000000000: {"sha1": "69279037", "sha256": "90698825"},
}


def test_twenty_presses_show_pyotp_hotp_codes(make_token):
    seed = secrets.token_bytes(20)
    with make_token() as tok:
        tok.power_on()
        dev_provision(tok, seed)
        want = pyotp.HOTP(b32(seed))
        counter_of = {want.at(c): c for c in range(40)}  # a failure says which counter it shows
        for counter in range(20):
            tok.press()
            tok.wait_idle()
            shown = tok.screen().digits()
            assert shown == want.at(counter), f"press {counter} shows counter {counter_of.get(shown)}"


def test_rfc4226_codes_on_screen_and_serial_on_long_press(make_token):
    with make_token() as tok:
        tok.power_on()
        dev_provision(tok, RFC4226_SEED, serial="KF000123459")
        tok.press()
        tok.wait_idle()
        assert tok.screen().digits() == "755224"
        tok.long_press()
        tok.wait_idle()
        screen = tok.screen()
        assert screen.digits() is None
        assert "KF000123459" in text_lines(screen)


def test_unprovisioned_token_says_so(make_token):
    with make_token() as tok:
        tok.power_on()
        tok.wait_idle()
        tok.press()
        tok.wait_idle()
        screen = tok.screen()
        assert screen.digits() is None
        assert text_lines(screen) == ["Not", "provisioned"]


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_totp_shows_rfc6238_codes_from_the_ds3231(make_token, algorithm):
    seed = RFC6238_SEEDS[algorithm]
    with make_token() as tok:
        tok.power_on()
        dev_provision(tok, seed, mode="totp", algorithm=algorithm, digits=8, period=30)
        for t, codes in RFC6238_TABLE.items():
            # The emulated DS3231 runs on from t in real time; a press that straddles a step
            # boundary (1111111109 is 1 s before one) is retried, with the step checked.
            for _attempt in range(3):
                tok.set_clock(t)
                tok.press()
                tok.wait_idle()
                shown = tok.screen()
                after = tok.clock()[0]
                if int(after) // 30 == t // 30:
                    break
            else:
                pytest.fail(f"could not press within the step of {t}")
            assert shown.digits() == codes[algorithm], f"t={t}"
            assert shown.bar() > 0  # the countdown bar is drawn


def test_totp_countdown_bar_shrinks_and_code_rolls_over(make_token):
    seed = secrets.token_bytes(20)
    with make_token() as tok:
        tok.power_on()
        dev_provision(tok, seed, mode="totp")
        t0 = (2_000_000_000 // 30 + 1) * 30 - 2.5  # 2.5 s before a step boundary
        tok.set_clock(t0)
        tok.press()
        tok.wait_idle()
        first = tok.screen()
        assert first.digits() == pyotp.TOTP(b32(seed)).at(int(t0))
        # Wait (on the host) until the token's clock is well into the next step.
        deadline = time.monotonic() + 10
        while tok.clock()[0] < t0 + 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        tok.wait_idle()
        later = tok.screen()
        assert later.digits() == pyotp.TOTP(b32(seed)).at(int(t0) + 4)
        assert later.bar() > first.bar()  # a fresh step: the bar starts full again


def test_stopped_clock_shows_clock_lost_never_a_code(make_token):
    seed = secrets.token_bytes(20)
    with make_token() as tok:
        tok.power_on()
        dev_provision(tok, seed, mode="totp")
        tok.set_clock(1_800_000_000, osf=True)
        tok.press()
        tok.wait_idle()
        screen = tok.screen()
        assert screen.digits() is None
        assert text_lines(screen) == ["Clock lost", "set time"]
