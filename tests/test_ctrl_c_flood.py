"""Issue 10 point 1, the attacker's regression on the unix tier: Ctrl-C during boot must not open
a locked token.

The board is the unix tier's ESP32-like one (``sleep_resets``): deep sleep ends in a reset, so
every wake-up by the button is a boot (boot.py and main.py run again), each one a chance for a
Ctrl-C to land before the firmware has closed the console. The attacker floods Ctrl-C (with
mpremote's raw-REPL request behind it) from before the first power-on, through the cold boot and
50 wake-ups. Bytes on USB keep a token awake (garbage counts as activity), so between wake-ups the
attacker goes quiet until the token sleeps, as an attacker after the next boot would; every boot
runs under the flood. Nothing the token says may be a prompt, a raw REPL or a traceback, and each
wake-up press must show the right next HOTP code (read off the emulated OLED, expected codes from
tests/oracles.py).
"""

from __future__ import annotations

import threading
import time

import pytest
import serial
from keyfob.deploy import Repl
from keyfob.sim import SimError
from oracles import hotp
from test_usb_provisioning import new_record, open_client, tap

pytestmark = pytest.mark.timeout(240)

WAKES = 50
CONFIG = b"OPTIONS = {'off_after_ms': 150, 'sleep_after_ms': 100}\n"
OPEN_SIGNS = (b">>>", b"raw REPL", b"Traceback")


class Flood:
    """Ctrl-C bursts and raw-REPL requests on the token's port, about one a millisecond."""

    def __init__(self, port: str) -> None:
        self._port = port
        self._stop = threading.Event()
        self._on = threading.Event()
        self._on.set()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with serial.Serial(self._port, 115200, timeout=0, write_timeout=0) as ser:
            while not self._stop.is_set():
                if self._on.wait(0.05):
                    try:
                        ser.write(b"\x03\x03\r\x01")
                        self.sent += 1
                    except serial.SerialTimeoutException:
                        pass
                ser.read(4096)  # the recorder (tap) sees the output at the bridge anyway
                time.sleep(0.001)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def pause(self) -> None:
        self._on.clear()

    def resume(self) -> None:
        self._on.set()


def _closed(out: bytearray) -> None:
    said = bytes(out)
    found = [s for s in OPEN_SIGNS if s in said]
    if found:
        at = min(said.index(s) for s in found)
        raise AssertionError(f"the locked token opened: {found}: {said[max(0, at - 700) : at + 200]!r}")


def _idle(tok, out: bytearray) -> None:
    try:
        tok.wait_idle()
    except SimError:
        _closed(out)  # a token at its REPL serves no control requests: say why
        raise


def _wait_asleep(tok, out: bytearray, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while tok.request("asleep?") != "ok 1":
        _closed(out)
        assert time.monotonic() < deadline, "the token never went to sleep"
        time.sleep(0.02)


def _wait_reset(tok, out: bytearray, resets: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while tok.resets <= resets:
        _closed(out)
        assert time.monotonic() < deadline, "the press did not wake (reset) the token"
        time.sleep(0.005)


def test_ctrl_c_flood_through_50_wake_ups_never_opens_a_locked_token(make_token):
    tok = make_token("flood", sleep_resets=True)
    rec = new_record()
    tok.power_on()
    tok.wait_idle()
    with Repl(tok.port) as repl:
        repl.enter()
        repl.write_file("config.py", CONFIG)
    tok.soft_reset()  # main.py again, with config.py
    tok.wait_idle()
    with open_client(tok) as client:
        client.provision(rec)
        client.lock()
        assert client.info().locked
    tok.cut_power()

    out = tap(tok)
    with Flood(tok.port) as flood:
        time.sleep(0.2)  # the flood is on before the first byte of the first boot
        tok.power_on()
        _idle(tok, out)
        _closed(out)
        for wake in range(WAKES):
            flood.pause()
            _wait_asleep(tok, out)
            flood.resume()
            time.sleep(0.01)  # Ctrl-C is on its way before the press
            resets = tok.resets
            tok.press()  # wakes the chip: a reset, then boot.py and main.py under the flood
            _wait_reset(tok, out, resets)
            _idle(tok, out)
            _closed(out)
            shown = tok.screen().digits()
            assert shown == hotp(rec.secret, rec.counter + wake, rec.digits, rec.algorithm), f"wake-up {wake}"
        assert flood.sent > WAKES
    _closed(out)
    assert tok.resets == WAKES and tok.is_running
