"""A locked token stays closed when things go wrong: a crash of the firmware (an unexpected error)
and Ctrl-C / raw-REPL bytes arriving from the very first instant of power-up.

The sim boots like a port (boards/sim/hw/rom.py): Ctrl-C is on when boot.py starts and again
when main.py starts, and a Ctrl-C reaches the firmware wherever it is (boards/sim/hw/console.py);
so a firmware that closed its console only once the app had started is caught here at boot.
"""

from __future__ import annotations

import threading
import time

import pyotp
import pytest
import serial
from keyfob.device.client import ProtocolError
from test_lock_security import REPL_SIGNS
from test_usb_provisioning import b32, mpremote, new_record, open_client, tap

pytestmark = pytest.mark.timeout(120)


def _locked_token(make_token, name: str):
    tok = make_token(name)
    tok.power_on()
    tok.wait_idle()
    rec = new_record()
    with open_client(tok) as client:
        client.provision(rec)
        client.lock()
        assert client.info().locked
    return tok, rec


def test_crash_of_a_locked_token_does_not_open_the_repl(make_token):
    tok, rec = _locked_token(make_token, "crash")
    with tok:
        out = tap(tok)
        # A bug met while drawing (a loose OLED is no crash any more: test_boards_as_bought.py).
        tok.request("break 0x3c")
        tok.press()
        tok.wait_idle()  # the firmware is down, the board sits closed in fail()
        with open_client(tok, timeout=2.0) as client:  # fail() was reached: nothing answers USB
            with pytest.raises(ProtocolError):
                client.info()
        done = mpremote(tok.port, "exec", "print(12345)", timeout=4.0)
        assert done is None or "12345" not in done.stdout
        with serial.Serial(tok.port, 115200, timeout=0.2) as ser:
            ser.write(b"\r\x03\x03\r\x01")
            time.sleep(0.5)
            ser.read(4096)
        assert not any(sign in bytes(out) for sign in REPL_SIGNS), bytes(out)[-300:]
        assert tok.is_running
        # Power cycled (the new process has the OLED back), it works again, locked as before.
        tok.cut_power()
        tok.power_on()
        tok.wait_idle()
        tok.press()
        tok.wait_idle()
        # The crashed press had made counter 0 durable before drawing: the next code is counter 1.
        assert tok.screen().digits() == pyotp.HOTP(b32(rec.secret)).at(1)
        with open_client(tok) as client:
            assert client.info().locked


def test_ctrl_c_from_the_first_instant_of_power_up_finds_no_repl(make_token):
    tok, rec = _locked_token(make_token, "boot")
    with tok:
        tok.cut_power()
        stop = threading.Event()
        heard = bytearray()

        def hammer():
            # From before power-on: Ctrl-C bursts and raw-REPL requests, as fast as the port takes.
            with serial.Serial(tok.port, 115200, timeout=0) as ser:
                while not stop.is_set():
                    ser.write(b"\x03\x03\r\x01")
                    heard.extend(ser.read(4096))
                    time.sleep(0.001)

        worker = threading.Thread(target=hammer, daemon=True)
        worker.start()
        try:
            time.sleep(0.2)
            tok.power_on()
            tok.wait_idle()
            time.sleep(0.5)
        finally:
            stop.set()
            worker.join(5)
        assert not any(sign in bytes(heard) for sign in REPL_SIGNS), bytes(heard)[-300:]
        tok.press()
        tok.wait_idle()
        assert tok.screen().digits() == pyotp.HOTP(b32(rec.secret)).at(0)
