"""Deep sleep between presses: a locked token sleeps a while after its last press or USB request
(its USB console no longer answers, as a sleeping chip's), and the press that wakes it shows the
next code. An open token (being set up on a laptop) never sleeps. The delays come from the
optional config.py on the flash."""

from __future__ import annotations

import secrets
import time

import pyotp
import pytest
from keyfob.deploy import Repl
from keyfob.device.client import ProtocolError
from keyfob.sim.devtools import dev_provision
from test_usb_provisioning import b32, open_client

pytestmark = pytest.mark.timeout(120)

CONFIG = b"OPTIONS = {'off_after_ms': 300, 'sleep_after_ms': 300}\n"


def _token(make_token, name: str, lock: bool):
    tok = make_token(name)
    tok.power_on()
    tok.wait_idle()
    with Repl(tok.port) as repl:
        repl.enter()
        repl.write_file("config.py", CONFIG)
    seed = secrets.token_bytes(20)
    dev_provision(tok, seed, wait=False)  # at the REPL already; soft reset: main.py starts with config.py
    if lock:
        with open_client(tok) as client:
            client.lock()
    return tok, seed


def _answers(tok) -> bool:
    try:
        with open_client(tok, timeout=1.0) as client:
            client.info()
        return True
    except ProtocolError:
        return False


def test_locked_token_sleeps_and_the_waking_press_shows_the_next_code(make_token):
    tok, seed = _token(make_token, "sleepy", lock=True)
    with tok:
        hotp = pyotp.HOTP(b32(seed))
        tok.press()
        tok.wait_idle()
        assert tok.screen().digits() == hotp.at(0)
        # No USB traffic now (a request would keep it awake): the screen goes off after
        # 300 ms, the chip sleeps 300 ms later; the wait is generous, not a timing check.
        deadline = time.monotonic() + 20
        while tok.screen().kind() != "off":
            assert time.monotonic() < deadline, "the screen never went off"
            time.sleep(0.1)
        time.sleep(2.0)
        assert not _answers(tok), "a locked, idle token should be asleep"
        assert tok.screen().kind() == "off"
        tok.press()  # the press that wakes it counts
        tok.wait_idle()
        assert tok.screen().digits() == hotp.at(1)
        assert _answers(tok)  # awake again, USB answers


def test_open_token_never_sleeps(make_token):
    tok, seed = _token(make_token, "awake", lock=False)
    with tok:
        tok.press()
        tok.wait_idle()
        time.sleep(2.0)  # well past off_after_ms + sleep_after_ms
        assert _answers(tok)
        tok.press()
        tok.wait_idle()
        assert tok.screen().digits() == pyotp.HOTP(b32(seed)).at(1)
