"""Token benchmarks (issue 3, acceptance 7), each beside its target and against a baseline
measured in the same run. docs/bench.md says what each number measures and how.

- press -> code on screen (<= 50 ms), on the virtual token: host round trip of the ``press``
  request + (sim ticks of the last OLED transaction before the firmware is idle again - sim
  ticks when the press request was taken), median of several presses. Baseline: a stand-in
  main.py on the same virtual token that debounces with the firmware's button module and writes
  one full frame (no store, no HMAC, no UI).
- one HOTP under MicroPython (<= 1 ms): ``otp.Hotp(key).code(counter)`` from the deployed
  ``.mpy``, key set up once as the firmware does. Baseline: one ``hashlib.sha1`` digest of 64
  bytes in the same process.
- heap allocated during a press under ``-X heapsize=72K`` (<= 24 KB): gc off,
  ``gc.mem_alloc()`` before and after one whole press (debounce, store, HMAC, display, release)
  of a freshly built ``App``, in ``micropython -X heapsize=72K`` with the deployed ``.mpy`` files,
  the store on the port's own filesystem and null hardware (the sim's emulated parts are Python
  and do not fit beside the firmware in 72K). The same press in a running virtual token (emulated
  parts counted too) is printed beside it. Baseline: the free heap before the press (ratio < 1:
  the press fits without a collection).
- I2C bytes per countdown second (<= 300): TOTP mode, a press, then all bytes on the I2C bus
  (OLED and DS3231, address bytes included) over several seconds without a step change, per
  second of sim time. Baseline: the OLED bytes of the press's full code frame.
- boot -> ready with .mpy files (<= 300 ms): host time from ``power_on()`` (process spawn) to the
  first answer to ``idle?`` (the firmware reached its idle loop), median of several boots.
  Baseline: the stand-in main.py above.

``run()`` returns :class:`bench.Row` objects; ``python -m bench.bench_token`` prints them.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyotp
from keyfob import build
from keyfob.sim import VirtualToken
from keyfob.sim.token import micropython_exe

from bench import Row
from bench.power_cut import provision, ticks_diff

REPO = Path(__file__).resolve().parents[1]
SIM_HW = REPO / "boards" / "sim" / "hw"

PRESSES = 10
BOOTS = 7
COUNTDOWN_S = 8
HOTP_CALLS = 3000

# The baseline token's main.py: the board, the firmware's panel driver and button module, one
# full frame per debounced press. Everything the press path needs besides store, HMAC and UI.
STAND_IN_MAIN = """\
# bench stand-in: board + panel + button, one full frame per press (no store, no HMAC, no UI)
import board
import button
import ssd1306

b = board.make()
oled = ssd1306.SSD1306(b.i2c)
btn = button.Button(b.button, b.ticks_ms, b.sleep_ms)
while True:
    if b.idle(60000) == 'button' and btn.pressed():
        oled.fill(1)
        oled.show()
        btn.wait_release()
"""

# One whole press (debounce, store, HMAC, display, release) of a fresh App, measured with the
# collector off so that mem_alloc counts every byte allocated and none freed. PRESS_HEAP is
# shared by the two harnesses below.
PRESS_HEAP = """\
def press():
    b.button.press(80)
    if a.button.pressed():
        a.press()
        a.button.wait_release()
press()
res = []
for i in range(%d):
    c0 = a.store.counter
    gc.collect()
    free = gc.mem_free()
    gc.disable()
    m0 = gc.mem_alloc()
    try:
        press()
        m1 = gc.mem_alloc()
        err = ''
    except MemoryError:
        m1 = gc.mem_alloc()
        err = 'MemoryError'
    gc.enable()
    if a.store.counter != c0 + 1:
        err = 'no HOTP counter used'
    res.append([m1 - m0, free, err])
gc.collect()
print('HEAP', json.dumps([res, gc.mem_free() + gc.mem_alloc()]))
"""

# The firmware alone in a 72K heap (about the least it boots in: ~66K), as on a small chip:
# the deployed .mpy modules, the store on the port's own (C) filesystem, and null hardware (a
# board's machine.I2C and Pin are C code that allocate nothing; the sim's emulated parts are
# Python and do not fit next to the firmware in 72K).
HEAP_CHIP_SCRIPT = (
    """\
import gc, json, time, store
store.Store().provision(b'12345678901234567890', 'KF000123459', 'hotp', 'sha1', 6, 30, 0)
import app

class I2C:
    def scan(self):
        return [0x3C]
    def writeto(self, addr, buf, stop=True):
        return len(buf)
    def writevto(self, addr, vector, stop=True):
        return 0
    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        pass
    def writeto_mem(self, addr, reg, buf, addrsize=8):
        pass

class Pin:
    def __init__(self):
        self.until = None
    def value(self, v=None):
        if self.until is not None and time.ticks_diff(self.until, time.ticks_ms()) > 0:
            return 0
        self.until = None
        return 1
    def press(self, ms):
        self.until = time.ticks_add(time.ticks_ms(), ms)

class RTC:
    def datetime(self, t=None):
        return (2025, 1, 1, 2, 0, 0, 0, 0)

class Board:
    name = 'bench'
    def __init__(self):
        self.i2c = I2C()
        self.button = Pin()
        self.rtc = RTC()
        self.found = {'oled': True, 'ds3231': False}
    def ticks_ms(self):
        return time.ticks_ms()
    def sleep_ms(self, ms):
        time.sleep_ms(ms)
    def idle(self, ms):
        time.sleep_ms(ms)
        return 'timeout'

b = Board()
a = app.App(b)
"""
    + PRESS_HEAP
)

# The same press in a running virtual token, over its raw REPL (main.py interrupted): the sim's
# emulated parts (Python) are counted too.
HEAP_SIM_SCRIPT = (
    """\
import gc, json, board, app
b = board.make()
a = app.App(b)
"""
    + PRESS_HEAP
)

HOTP_SCRIPT = """\
import hashlib, time, otp
N = %d
k = otp.Hotp(b'12345678901234567890', 'sha1')
assert k.code(0, 6) == 755224 and k.code(1, 6) == 287082  # RFC 4226 appendix D
msg = bytes(64)
best_h = best_s = 1 << 30
for r in range(3):
    t0 = time.ticks_us()
    for c in range(N):
        k.code(c, 6)
    best_h = min(best_h, time.ticks_diff(time.ticks_us(), t0))
    t0 = time.ticks_us()
    for c in range(N):
        hashlib.sha1(msg).digest()
    best_s = min(best_s, time.ticks_diff(time.ticks_us(), t0))
print('HOTP', best_h / N, best_s / N)
"""


def _b32(seed: bytes) -> str:
    return base64.b32encode(seed).decode()


class Rig:
    """The firmware built once and deployed onto a golden virtual flash (and a stand-in one)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.build_dir = self.workdir / "build"
        self.files = build.build("sim", self.build_dir)
        self.golden = self._flash("golden", self.files)
        self._stand_in: Path | None = None
        self._n = 0

    @property
    def stand_in(self) -> Path:
        """A flash with the firmware and STAND_IN_MAIN as main.py (made on first use)."""
        if self._stand_in is None:
            main = self.workdir / "stand_in_main.py"
            main.write_text(STAND_IN_MAIN)
            self._stand_in = self._flash("stand-in", [(main, "main.py")], image=self.golden, keyfob=False)
        return self._stand_in

    def _flash(self, name: str, files, image: Path | None = None, keyfob: bool = True) -> Path:
        wd = self.workdir / name
        with VirtualToken(wd, image=image) as tok:
            tok.power_on()
            tok.deploy(files, keyfob=keyfob)
            tok.wait_idle()
            tok.power_off()
        return wd / "flash.img"

    def token(self, image: Path | None = None, **kw) -> VirtualToken:
        """A new virtual token on a copy of ``image`` (default: the golden flash), not powered on."""
        self._n += 1
        return VirtualToken(self.workdir / f"tok{self._n}", image=image or self.golden, **kw)


def _stats(tok: VirtualToken) -> tuple[int, int, int, int, int, int]:
    """(i2c bytes, transactions, oled bytes, sim ticks now, ticks of the press, ticks of the last OLED write)."""
    parts = tok.request("stats?").split()[1:]
    if len(parts) < 6:
        raise RuntimeError("the sim's stats? reply has no timestamps (boards/sim/hw/bus.py too old)")
    return tuple(int(p) for p in parts[:6])  # type: ignore[return-value]


def press_to_screen_ms(tok: VirtualToken, n: int = PRESSES, check=None) -> float:
    """Median ms from sending a press to the last panel write of the press path (see module doc)."""
    times = []
    for i in range(n):
        tok.wait_idle()
        t0 = time.perf_counter()
        tok.press()
        rtt_ms = (time.perf_counter() - t0) * 1000
        tok.wait_idle()
        *_, press_at, oled_at = _stats(tok)
        sim_ms = ticks_diff(oled_at, press_at)
        if sim_ms < 0:
            raise RuntimeError("no panel write after the press")
        if check is not None:
            check(i, tok.screen())
        times.append(rtt_ms + sim_ms)
    return statistics.median(times)


def boot_ms(tok: VirtualToken, n: int = BOOTS) -> float:
    """Median ms from power_on() to the first idle? answer, over n cold boots."""
    times = []
    for _ in range(n):
        if tok.is_running:
            tok.power_off()
        t0 = time.perf_counter()
        tok.power_on()
        tok.wait_idle()
        times.append((time.perf_counter() - t0) * 1000)
    tok.power_off()
    return statistics.median(times)


def hotp_us(rig: Rig) -> tuple[float, float]:
    """(µs per Hotp.code, µs per sha1 of 64 bytes) under MicroPython, from the deployed .mpy."""
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(rig.build_dir), ".frozen"]))
    with tempfile.TemporaryDirectory(prefix="bench-hotp-") as tmp:
        script = Path(tmp) / "hotp.py"
        script.write_text(HOTP_SCRIPT % HOTP_CALLS)
        out = subprocess.run(
            [micropython_exe(), str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("HOTP ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"HOTP bench failed under micropython: {out.stdout[-400:]}")
    _, h, s = line.split()
    return float(h), float(s)


def _heap_result(stdout: str, what: str) -> dict:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("HEAP ")), None)
    if line is None:
        raise RuntimeError(f"heap bench ({what}) failed: {stdout[-600:]}")
    res, heap = json.loads(line[len("HEAP ") :])
    return {
        "alloc": max(r[0] for r in res),
        "free": min(r[1] for r in res),
        "errors": sorted({r[2] for r in res if r[2]}),
        "heap": heap,
    }


def heap_chip(rig: Rig, heapsize: str = "72K", rounds: int = 5) -> dict:
    """Bytes allocated by one press of the firmware alone under ``-X heapsize``: the most of
    ``rounds`` presses, the least free heap before one, the heap size, errors."""
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(rig.build_dir), ".frozen"]))
    with tempfile.TemporaryDirectory(prefix="bench-heap-") as tmp:
        script = Path(tmp) / "heap.py"
        script.write_text(HEAP_CHIP_SCRIPT % rounds)
        out = subprocess.run(
            [micropython_exe(), "-X", f"heapsize={heapsize}", str(script)],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    return _heap_result(out.stdout, "firmware under " + heapsize)


def heap_sim(tok: VirtualToken, rounds: int = 3) -> dict:
    """The same press in the running virtual token (emulated parts included), over mpremote."""
    out = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", tok.port, "exec", HEAP_SIM_SCRIPT % rounds],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return _heap_result(out.stdout, "virtual token")


def countdown_bytes(tok: VirtualToken, seed: bytes, seconds: float = COUNTDOWN_S) -> dict:
    """TOTP: I2C bytes per second of countdown, and the OLED bytes of the code frame."""
    provision(tok, seed, mode="totp", digits=6, period=30)
    t = 1_750_000_020 + 1  # one second into a 30 s step: 29 s of countdown ahead
    tok.set_clock(t)
    before = _stats(tok)
    tok.press()
    tok.wait_idle()
    after = _stats(tok)
    want = pyotp.TOTP(_b32(seed)).at(t)
    shown = tok.screen().digits()
    if shown != want:
        raise RuntimeError("TOTP bench: the screen does not show the expected code")
    time.sleep(seconds)
    end = _stats(tok)
    now, _, _ = tok.clock()
    if int(now) // 30 != t // 30:
        raise RuntimeError("TOTP bench: the step changed during the measurement")
    sim_s = ticks_diff(end[3], after[3]) / 1000
    return {
        "per_s": (end[0] - after[0]) / sim_s,
        "oled_per_s": (end[2] - after[2]) / sim_s,
        "frame_oled": after[2] - before[2],
        "frame_bus": after[0] - before[0],
        "seconds": sim_s,
    }


def run(log=None) -> list[Row]:
    def say(msg):
        if log is not None:
            log(msg)

    rows: list[Row] = []
    seed = secrets.token_bytes(20)
    with tempfile.TemporaryDirectory(prefix="bench-token-") as tmp:
        say("token: building the firmware and the virtual flashes")
        rig = Rig(Path(tmp))
        tokens: list[VirtualToken] = []
        try:
            # press -> code, firmware vs stand-in
            say("token: press -> code on screen")
            fw = rig.token()
            tokens.append(fw)
            fw.power_on()
            provision(fw, seed)
            ref = pyotp.HOTP(_b32(seed))

            def check(i, screen):
                if screen.digits() != ref.at(i):
                    raise RuntimeError(f"press bench: press {i} did not show HOTP({i})")

            press_fw = press_to_screen_ms(fw, check=check)
            si = rig.token(rig.stand_in)
            tokens.append(si)
            si.power_on()
            press_si = press_to_screen_ms(si)
            rows.append(
                Row(
                    "token: press -> code on screen (virtual token)",
                    press_fw,
                    "ms",
                    "<= 50 ms",
                    press_fw <= 50,
                    press_fw / press_si,
                    f"stand-in press (debounce + 1 full frame): {press_si:.1f} ms",
                )
            )

            say("token: one HOTP under MicroPython")
            h_us, s_us = hotp_us(rig)
            rows.append(
                Row(
                    "token: one HOTP on MicroPython (Hotp.code)",
                    h_us / 1000,
                    "ms",
                    "<= 1 ms",
                    h_us <= 1000,
                    h_us / s_us,
                    f"one sha1 of 64 bytes: {s_us:.2f} µs (HOTP: {h_us:.2f} µs)",
                )
            )

            say("token: heap of a press under -X heapsize=72K")
            heap = heap_chip(rig)
            on_sim = heap_sim(fw)
            alloc_kb = heap["alloc"] / 1024
            note = (
                f"free heap before the press: {heap['free'] / 1024:.1f} KB of {heap['heap'] / 1024:.0f} KB;"
                f" on the virtual token (emulated parts too): {on_sim['alloc'] / 1024:.2f} KB"
            )
            errors = heap["errors"] + on_sim["errors"]
            if errors:
                note += " (" + ", ".join(errors) + ")"
            rows.append(
                Row(
                    "token: heap allocated during a press (72K heap)",
                    alloc_kb,
                    "KB",
                    "<= 24 KB",
                    alloc_kb <= 24 and not errors,
                    heap["alloc"] / heap["free"],
                    note,
                )
            )

            say(f"token: I2C bytes per countdown second ({COUNTDOWN_S} s)")
            cd = countdown_bytes(fw, seed)
            rows.append(
                Row(
                    "token: I2C bytes per countdown second (TOTP)",
                    cd["per_s"],
                    "bytes/s",
                    "<= 300",
                    cd["per_s"] <= 300,
                    cd["per_s"] / cd["frame_oled"],
                    f"one full code frame: {cd['frame_oled']} OLED bytes (OLED alone {cd['oled_per_s']:.0f} bytes/s)",
                )
            )

            say("token: boot -> ready")
            boot_fw = boot_ms(fw)
            boot_si = boot_ms(si)
            rows.append(
                Row(
                    "token: boot -> ready with .mpy files",
                    boot_fw,
                    "ms",
                    "<= 300 ms",
                    boot_fw <= 300,
                    boot_fw / boot_si,
                    f"stand-in main.py (board, panel init, idle): {boot_si:.1f} ms",
                )
            )
        finally:
            for tok in tokens:
                tok.close()
    unix = {
        "hotp_us": h_us,
        "press_ms": press_fw,
        "heap_free": heap["free"],
        "heap_alloc": heap["alloc"],
        "boot_ms": boot_fw,
    }
    from keyfob.sim import SimError, pico

    try:
        pico.find_inputs()
        pico.check_runner()
    except SimError as exc:
        say(f"pico: rows skipped: {exc}")
        return rows
    from bench import bench_pico

    return rows + bench_pico.run(unix, log=log)


def main() -> int:
    from bench.__main__ import print_table

    print_table(run(log=lambda m: print(m, file=sys.stderr)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
