"""Issue 10 point 6: boards as people buy them, on both tiers of the virtual token (the RC clock is
the unix tier's ESP32-like board; a Pico's RTC runs from its crystal).

- an OLED module strapped to 0x3D is found and shows the codes;
- a board whose own clock is an RC oscillator (the sim's chip RTC stands for an ESP32's) and that
  has no DS3231 refuses to be provisioned as a TOTP token, with one clear message;
- a part that comes loose after boot (the OLED, the DS3231) leaves a token that still answers INFO
  over USB, says on its console and in INFO what failed, and keeps counting codes;
- SH1106 "1.3-inch" modules: not detected (their status byte is no reliable identifier, and clones
  differ); the boot console says which controller is assumed, at which address (README, Hardware).
"""

from __future__ import annotations

import pyotp
import pytest
from click.testing import CliRunner
from conftest import on_both_tiers
from keyfob.cli import main
from keyfob.device.client import Refused
from oracles import b32
from test_usb_provisioning import new_record, open_client, press_code, screen_text, tap

pytestmark = pytest.mark.timeout(120)


def _wait_for(out: bytearray, text: bytes, tok, tries: int = 50) -> bool:
    for _ in range(tries):
        if text in bytes(out):
            return True
        tok.wait_idle()
    return text in bytes(out)


@on_both_tiers
def test_an_oled_at_0x3d_is_found_and_shows_the_codes(make_token):
    tok = make_token("alt", oled_addr=0x3D)
    out = tap(tok)
    tok.power_on()
    tok.wait_idle()
    rec = new_record()
    with open_client(tok) as client:
        client.provision(rec)
        client.lock()
    assert screen_text(tok) == ["Locked"]
    assert press_code(tok) == pyotp.HOTP(b32(rec.secret)).at(0)
    # The console says what it drives, and that an SH1106 would not be driven right.
    assert b"SSD1306 128x64 at 0x3d (SH1106 not supported)" in bytes(out)


def test_no_ds3231_and_an_rc_clock_refuses_totp_with_one_clear_message(make_token, tmp_path):
    tok = make_token("nortc", env={"KEYFOB_SIM_ABSENT": "0x68"})
    tok.power_on()
    tok.wait_idle()
    out, key = tmp_path / "out", tmp_path / "transport.key"
    res = CliRunner().invoke(
        main, ["provision", "--port", tok.port, "--mode", "totp", "--out", str(out), "--key-file", str(key)]
    )
    assert res.exit_code == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "time mode needs a DS3231" in errors[0], res.stderr
    with open_client(tok) as client:
        assert not client.info().provisioned
        with pytest.raises(Refused) as exc:
            client.provision(new_record(mode="totp"))
        assert exc.value.reason == "rtc"
        client.provision(new_record(mode="hotp"))  # event mode needs no clock
        assert client.info().provisioned


@on_both_tiers
def test_a_loose_oled_leaves_a_token_that_answers_usb_and_says_what_failed(make_token, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFOB_SIM_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda *a, **k: [])
    tok = make_token("loose", register=True)
    tok.power_on()
    tok.wait_idle()
    rec = new_record()
    with open_client(tok) as client:
        client.provision(rec)
        client.lock()
    out = tap(tok)
    assert press_code(tok) == pyotp.HOTP(b32(rec.secret)).at(0)
    tok.unplug(0x3C)  # the wire comes loose: every OLED transaction fails now
    tok.press()
    tok.wait_idle()
    with open_client(tok) as client:
        info = client.info()  # still answering, still locked
        assert info.locked and info.faults == ("oled",)
        assert info.counter == 2  # that press used counter 1 (durable before drawing)
    assert _wait_for(out, b"fault: oled", tok)
    tok.press()  # and it goes on: the next press uses the next counter, no restart
    tok.wait_idle()
    with open_client(tok) as client:
        assert client.info().counter == 3
    table = CliRunner().invoke(main, ["devices"], env={"COLUMNS": "250"}).output
    assert "failed: oled" in table, table


@on_both_tiers
def test_a_loose_ds3231_shows_clock_lost_and_answers_usb(make_token):
    tok = make_token("loosertc")
    tok.power_on()
    tok.wait_idle()
    rec = new_record(mode="totp")
    with open_client(tok) as client:
        client.provision(rec)
        client.settime()
        client.lock()
    tok.unplug(0x68)
    tok.press()
    tok.wait_idle()
    assert screen_text(tok) == ["Clock lost", "set time"]
    with open_client(tok) as client:
        info = client.info()
        assert info.time is None and "ds3231" in info.faults and info.locked
