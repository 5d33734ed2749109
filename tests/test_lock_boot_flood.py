"""Issue 10, point 1, on the real rp2 port: no Ctrl-C timing reaches a REPL on a locked token.

The port turns Ctrl-C on before boot.py and again before main.py, and opens the REPL when
boot.py ends in an exception (KeyboardInterrupt included). A thief with a USB cable floods the
port with Ctrl-C and raw-REPL requests from the first byte the chip can take, through 50 boots.
Nothing may answer but the token's protocol: no prompt, no ``raw REPL``, no traceback; and the
token then shows the right next code.
"""

from __future__ import annotations

import threading
import time

import pyotp
import pytest
import serial
from test_lock_failsafe import _locked_token
from test_lock_security import REPL_SIGNS
from test_usb_provisioning import b32

pytestmark = pytest.mark.timeout(600)

BOOTS = 50
BANNER = b" on rp2040 found: "  # what app.run prints first (firmware/app.py)


def _flood(port: str, stop: threading.Event, heard: bytearray) -> None:
    with serial.Serial(port, 115200, timeout=0) as ser:
        while not stop.is_set():
            ser.write(b"\x03\x03\r\x01\x03")
            heard.extend(ser.read(4096))
            # A burst every 2 ms: every window a chip leaves open gets a Ctrl-C, and the
            # chip is not buried under bytes it must read (a slow emulated boot)
            time.sleep(0.002)
        heard.extend(ser.read(65536))


@pytest.mark.parametrize("tier", ["pico"], indirect=True)
def test_ctrl_c_flood_through_fifty_boots_finds_no_repl(make_token, tier):
    tok, rec = _locked_token(make_token, "flood")
    tok.wait_idle()
    tok.cut_power()
    stop = threading.Event()
    heard = bytearray()
    worker = threading.Thread(target=_flood, args=(tok.port, stop, heard), daemon=True)
    worker.start()
    opened = []
    try:
        for boot in range(BOOTS):
            start = len(heard)
            tok.power_on()
            # boot.py, then main.py, up to the app's start (its banner: past both files' first
            # statements nothing turns Ctrl-C on again on a locked token), all under the flood
            deadline = time.monotonic() + 60
            while BANNER not in heard[start:] and time.monotonic() < deadline and tok.is_running:
                time.sleep(0.02)
            assert BANNER in heard[start:] or any(sign in bytes(heard[start:]) for sign in REPL_SIGNS), boot
            tok.cut_power()
            if any(sign in bytes(heard[start:]) for sign in REPL_SIGNS):
                opened.append(boot)
                break  # one open boot is enough to fail; do not spend 49 more
    finally:
        stop.set()
        worker.join(5)
    assert opened == [], f"boots {opened} answered like a REPL: {bytes(heard)[-200:]!r}"
    tok.power_on()
    tok.wait_idle()
    tok.press()
    tok.wait_idle()
    assert tok.screen().digits() == pyotp.HOTP(b32(rec.secret)).at(0)
