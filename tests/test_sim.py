"""The virtual token: the sim board (emulated DS3231, bus, button, USB) and the host harness
(pty bridge, control socket, VirtualToken), end to end under the real MicroPython unix port.

The firmware here is a small stand-in main.py written by the test (not the token firmware):
it reports what it saw on the emulated OLED (GDDRAM page 0, bytes 0-3), so the test reads it
back through the control socket's ``screen?``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import serial
from keyfob.sim import SimError, VirtualToken
from keyfob.sim.token import wait_for
from mpy import SIM_BOARD, SIM_HW, run_mpy_json

pytestmark = pytest.mark.timeout(180)

# -- the DS3231 emulation, same cases under CPython and MicroPython ----------------------

DS3231_CASES = r"""
import ds3231_emu as E

class Clock:
    def __init__(self):
        self.ns = 1750000000 * 1000000000  # any host wall-clock time
    def __call__(self):
        return self.ns

def regs(d, n=7, start=0):
    d.write(bytes((start,)))
    b = bytearray(n)
    d.readinto(b)
    return list(b)

def run(state):
    ck = Clock()
    d = E.DS3231Emu(state, ck)
    out = {}
    out['fresh'] = regs(d, 19)
    # 2024-02-29 23:59:58, day register 4, one write transaction from register 0
    d.write(bytes((0, 0x58, 0x59, 0x23, 4, 0x29, 0x02, 0x24)))
    out['set'] = regs(d)
    out['osf_after_time_write'] = regs(d, 1, 0x0F)[0]
    ck.ns += 3 * 1000000000
    out['rolled'] = regs(d)
    d.write(bytes((0x0F, 0x88)))  # writing 1 to OSF does not clear it
    out['osf_w1'] = regs(d, 1, 0x0F)[0]
    d.write(bytes((0x0F, 0x08)))  # writing 0 clears it
    out['osf_w0'] = regs(d, 1, 0x0F)[0]
    # only minutes: hours, date... stay, the running seconds too
    d.write(bytes((0x01, 0x30)))
    out['minutes_only'] = regs(d)
    # drift: +40 ppm over 1,000,000.5 s of host time
    d.write(bytes((0, 0x00, 0x00, 0x12, 1, 0x01, 0x01, 0x24)))  # 2024-01-01 12:00:00
    d.set_ppm(40.0)
    ck.ns += 1000000500000000
    out['drift'] = regs(d)
    # 12-hour mode: 11 PM
    d.write(bytes((0x02, 0x40 | 0x20 | 0x11)))
    out['h12'] = regs(d, 1, 0x02)[0]
    d.write(bytes((0x02, 0x23)))
    # century: 2099-12-31 23:59:59 + 1 s
    d.set_ppm(0.0)
    d.write(bytes((0, 0x59, 0x59, 0x23, 4, 0x31, 0x12, 0x99)))
    ck.ns += 1000000000
    out['century'] = regs(d)
    # pointer auto-increment wraps after 0x12
    out['wrap'] = regs(d, 3, 0x11)
    # the battery-backed part survives: a new chip object on the same state file
    d.write(bytes((0x0E, 0x1C | 0x20)))  # CONV bit clears itself
    d.write(bytes((0x10, 0xF6)))  # aging -10
    d2 = E.DS3231Emu(state, ck)
    out['reload_same'] = regs(d2, 19) == regs(d, 19)
    out['ctrl_aging'] = regs(d2, 3, 0x0E)
    # host side set_clock (the control socket's `clock`)
    d2.set_clock(1700000000, 0.0, True)
    out['set_clock'] = regs(d2) + regs(d2, 1, 0x0F)
    return out
"""


def _bcd(v: int) -> int:
    return (v // 10) << 4 | v % 10


def _regs_for(t: datetime, dow: int) -> list[int]:
    return [
        _bcd(t.second),
        _bcd(t.minute),
        _bcd(t.hour),
        dow,
        _bcd(t.day),
        _bcd(t.month) | (0x80 if t.year >= 2100 else 0),
        _bcd(t.year % 100),
    ]


def _load_hw(name: str):
    spec = importlib.util.spec_from_file_location(name, SIM_HW / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ds3231_emu_registers_cpython_and_micropython(tmp_path):
    sys.modules["ds3231_emu"] = _load_hw("ds3231_emu")
    try:
        ns: dict = {}
        exec(DS3231_CASES, ns)
        cpy = ns["run"](str(tmp_path / "cpy.json"))
    finally:
        del sys.modules["ds3231_emu"]
    mpy = run_mpy_json(DS3231_CASES + "\nemit(run(DATA))\n", str(tmp_path / "mpy.json"), paths=[SIM_HW])
    assert mpy == json.loads(json.dumps(cpy))

    r = cpy
    fresh = r["fresh"]
    assert fresh[:7] == [0, 0, 0, 1, 1, 1, 0]  # 00:00:00 day 1, 01/01/00
    assert fresh[0x0E] == 0x1C and fresh[0x0F] & 0x80  # control POR, OSF set
    assert fresh[0x11:0x13] == [25, 0]  # 25.00 C
    set_t = datetime(2024, 2, 29, 23, 59, 58)
    assert r["set"] == _regs_for(set_t, 4)
    assert r["osf_after_time_write"] & 0x80  # writing the time does not clear OSF
    assert r["rolled"] == _regs_for(set_t + timedelta(seconds=3), 5)  # leap day -> March 1, day 5
    assert r["osf_w1"] & 0x80
    assert not r["osf_w0"] & 0x80 and r["osf_w0"] & 0x08  # EN32kHz kept
    assert r["minutes_only"] == _regs_for(datetime(2024, 3, 1, 0, 30, 1), 5)
    drifted = datetime(2024, 1, 1, 12) + timedelta(seconds=1_000_000 + 40)
    day = 1 + (drifted.date() - datetime(2024, 1, 1).date()).days % 7
    assert r["drift"] == _regs_for(drifted, day)
    assert r["h12"] == 0x40 | 0x20 | 0x11
    assert r["century"] == _regs_for(datetime(2100, 1, 1), 5)
    assert r["century"][5] == 0x81 and r["century"][6] == 0
    assert r["wrap"] == [25, 0, 0x00]  # 0x11, 0x12, then seconds of 2100-01-01 00:00:00
    assert r["reload_same"] is True
    assert r["ctrl_aging"] == [0x1C, 0x08, 0xF6]
    t = datetime.fromtimestamp(1700000000, timezone.utc)
    assert r["set_clock"] == _regs_for(t, t.isoweekday()) + [0x88]


def test_sim_i2c_errors_and_pin_in_cpython():
    bus = _load_hw("bus")
    ds = _load_hw("ds3231_emu").DS3231Emu()
    i2c = bus.SimI2C({0x68: ds})
    assert i2c.scan() == [0x68]
    for call in (lambda: i2c.writeto(0x3C, b"\x00"), lambda: i2c.readfrom_mem(0x50, 0, 1)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.args[0] == 19  # ENODEV, as machine.I2C for an address nobody acks
    i2c.writeto_mem(0x68, 0x07, b"\x12\x34")
    assert i2c.readfrom_mem(0x68, 0x07, 2) == b"\x12\x34"
    i2c.writevto(0x68, [b"\x09", b"\x56"])
    buf = bytearray(3)
    i2c.readfrom_mem_into(0x68, 0x07, buf)
    assert bytes(buf) == b"\x12\x34\x56"
    pin = bus.SimPin(held=True)
    assert pin.value() == 0
    pin.release()
    assert pin.value() == 1
    pin.press(60_000)
    assert pin.value() == 0 and pin.timed_left() > 0


# -- the whole virtual token --------------------------------------------------------------

STANDIN_MAIN = r"""
import board
b = board.make()
STANDIN = True
st = bytearray(4)  # presses seen, level after handling, held at boot, USB bytes read
st[2] = 1 if b.button.value() == 0 else 0
try:
    open('listen.flag').close()
    b.usb_listen(True)
except OSError:
    pass
try:
    open('locked.flag').close()
    b.set_kbd_intr(False)
except OSError:
    pass

def show():
    b.i2c.writeto(0x3C, b'\x00\x8d\x14\xa1\xc8\xaf\xb0\x00\x10')
    b.i2c.writeto(0x3C, b'\x40' + st)

show()
while True:
    ev = b.idle(1000)
    if ev == 'button':
        if b.button.value() == 0:
            b.sleep_ms(150)  # slow work: wait_idle() must wait for it
            st[0] += 1
            st[1] = b.button.value()
            show()
    elif ev == 'usb':
        st[3] += len(b.usb_read(64))
        show()
"""


def mpremote(port: str, *args: str, timeout: float = 60) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", port, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"mpremote {args}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def read_until(s: serial.Serial, end: bytes, timeout: float = 10) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(end) and time.monotonic() < deadline:
        data += s.read(1)
    return data


def panel(tok: VirtualToken) -> list[int]:
    return list(tok.screen().pixels[:4])


def test_virtual_token_end_to_end(tmp_path):
    main_py = tmp_path / "main.py"
    main_py.write_text(STANDIN_MAIN)
    flag = tmp_path / "listen.flag"
    flag.write_text("")
    with VirtualToken(tmp_path / "tok") as tok:
        # A blank flash: the sim formats it and boots to the REPL (no main.py yet).
        tok.power_on()
        assert tok.is_running and tok.port.startswith("/dev/")
        assert mpremote(tok.port, "resume", "exec", "print(1+1)").strip() == "2"
        out = mpremote(
            tok.port,
            "resume",
            "fs",
            "cp",
            str(main_py),
            ":main.py",
            "+",
            "fs",
            "cp",
            str(SIM_BOARD / "board.py"),
            ":board.py",
            "+",
            "fs",
            "ls",
        )
        assert "main.py" in out and "board.py" in out

        # Ctrl-D at the friendly REPL: soft reboot, main.py runs, idle() serves the socket.
        restarts = tok._bridge.restarts
        tok.soft_reset()
        assert tok._bridge.restarts == restarts + 1
        tok.wait_idle(10)
        assert panel(tok) == [0, 0, 0, 0]
        tok.press(80)
        tok.wait_idle(10)  # the stand-in sleeps 150 ms after the edge: this must wait
        assert panel(tok) == [1, 1, 0, 0]
        tok.long_press(400)
        tok.wait_idle(10)
        assert panel(tok) == [2, 0, 0, 0]  # still down 150 ms into a 400 ms press
        # boot scan (one address byte for each of 0x08-0x77) + 3 x (10 + 6 bytes) to the panel
        assert tok.i2c_bytes() == 112 + 3 * 16

        # mpremote interrupts main.py (Ctrl-C in idle) and runs code in its globals ...
        assert mpremote(tok.port, "resume", "exec", "print(STANDIN, st[0])").split() == ["True", "2"]
        # ... and without `resume` it soft-resets from the raw REPL: back without main.py.
        restarts = tok._bridge.restarts
        out = mpremote(tok.port, "exec", "print('STANDIN' in globals())")
        assert out.split() == ["False"]
        assert tok._bridge.restarts == restarts + 1 and tok.is_running

        # Files persist across power off/on; main.py starts again.
        tok.power_off()
        assert not tok.is_running
        tok.power_on()
        tok.wait_idle(10)
        tok.press()
        tok.wait_idle(10)
        assert panel(tok)[:3] == [1, 1, 0]

        # ... and across a power cut; the button held at power-up reads pressed at boot.
        tok.cut_power()
        assert not tok.is_running and tok.exit_code == -9
        tok.power_on(hold=True)
        tok.wait_idle(10)
        assert panel(tok)[2] == 1
        tok.release()
        tok.wait_idle(10)
        assert panel(tok)[:3] == [0, 0, 1]  # the release edge is not a press

        # The battery-backed DS3231: set while on, read over the sim's own I2C bus.
        t0 = 1767225599  # 2025-12-31 23:59:59 UTC
        start = time.monotonic()
        tok.set_clock(t0, ppm=0.0, osf=False)
        out = mpremote(
            tok.port,
            "resume",
            "exec",
            "import board; print(board.make().i2c.readfrom_mem(0x68, 0, 7).hex(), "
            "board.make().i2c.readfrom_mem(0x68, 0x0F, 1).hex())",
        )
        elapsed = time.monotonic() - start
        regs, status = out.split()
        b = bytes.fromhex(regs)
        dec = lambda v: (v >> 4) * 10 + (v & 15)  # noqa: E731
        shown = datetime(
            2000 + dec(b[6]), dec(b[5] & 0x1F), dec(b[4]), dec(b[2]), dec(b[1]), dec(b[0]), tzinfo=timezone.utc
        ).timestamp()
        assert t0 <= shown <= t0 + elapsed + 1
        assert int(status, 16) & 0x80 == 0

        # A power cut in the middle of a flash write: the process dies, no reboot follows.
        tok.cut_power()
        tok.set_clock(t0, ppm=5.0, osf=True)  # off: straight into the coin-cell state
        t, ppm, osf = tok.clock()
        assert ppm == 5.0 and osf is True and t >= t0
        tok.power_on(nomain=True, cut_after_writes=0)
        with serial.Serial(tok.port, timeout=1) as s:
            s.reset_input_buffer()
            s.write(b"\r\x01")
            assert read_until(s, b"raw REPL; CTRL-B to exit\r\n>").endswith(b">")
            s.write(b"f = open('x.txt', 'w')\nf.write('y' * 5000)\nf.close()\n\x04")
            assert wait_for(lambda: not tok.is_running, 10)
        assert tok.exit_code == -9
        time.sleep(0.2)  # a (wrong) soft reboot would have started by now
        assert not tok.is_running

        # Firmware that reads USB itself (usb_listen): bytes reach it; Ctrl-C still interrupts.
        tok.power_on()
        tok.wait_idle(10)
        mpremote(tok.port, "resume", "fs", "cp", str(flag), ":listen.flag")
        tok.soft_reset()
        tok.wait_idle(10)
        with serial.Serial(tok.port, timeout=1) as s:
            s.write(b"hello")
            s.flush()
            # the bytes may arrive in more than one idle() wake-up
            for _ in range(50):
                tok.wait_idle(10)
                if panel(tok)[3] == 5:
                    break
                time.sleep(0.02)
        assert panel(tok)[3] == 5
        assert mpremote(tok.port, "resume", "exec", "print(st[3])").strip() == "5"

        # A locked token (kbd_intr off): Ctrl-C and Ctrl-A are plain data to the firmware.
        mpremote(tok.port, "resume", "fs", "cp", str(flag), ":locked.flag")
        tok.soft_reset()
        tok.wait_idle(10)
        with serial.Serial(tok.port, timeout=1) as s:
            s.write(b"\r\x03\x03\r\x01")
            s.flush()
            for _ in range(50):
                tok.wait_idle(10)
                if panel(tok)[3] == 5:
                    break
                time.sleep(0.02)
        tok.press()
        tok.wait_idle(10)
        assert panel(tok) == [1, 1, 0, 5]  # still running main.py, it read all five bytes


def test_wait_idle_times_out_when_firmware_is_not_idle(tmp_path):
    with VirtualToken(tmp_path / "tok") as tok:
        tok.power_on(nomain=True)  # at the REPL: nobody serves the control socket
        with pytest.raises(SimError):
            tok.wait_idle(0.3)
        tok.cut_power()
        assert not tok.is_running
    assert not Path(tok._tmp).exists()
