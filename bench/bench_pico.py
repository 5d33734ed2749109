"""Token benchmarks on the real rp2 port in the emulated RP2040 (issue 9, point 7), each printed
beside the same figure measured on the unix tier in this run (docs/bench.md, "Pico tier").

rp2040js counts *estimated* cycles of a 125 MHz Cortex-M0+ (per-instruction counts, no flash
wait states, no bus contention, flash erase/program instantaneous), so emulated times are an
estimate of a real Pico's, not a measurement of one; wall-clock times of the emulator say
nothing about a chip and are not reported.

- one HOTP (SHA-1, 6 digits), emulated µs: ``otp.Hotp(key).code(c, 6)`` from the deployed
  ``.mpy``, timed with ``time.ticks_us`` on the chip, best of 3 rounds.
- press -> code drawn, emulated ms: from the button going down (the runner stamps it) to the last
  OLED write of the press (stamped by the runner as each transaction ends); median of 5 presses,
  each checked against pyotp.
- ``gc.mem_free()`` after boot and at the lowest point of a press: on the chip, the firmware's
  ``App`` built as main.py builds it (board, store, key, panel), ``gc.collect()``, then one press
  with the collector off (free before minus bytes allocated = the lowest point).
- boot -> ready, emulated ms: from the chip's start to the firmware idle (the runner's idle
  reports; the quiet window that proves idleness is not counted).
"""

from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pyotp

from bench import Row

PRESSES = 5
BOOTS = 3
HOTP_CALLS = 300

HOTP_CHIP = """\
import otp, time
h = otp.Hotp(b'12345678901234567890')
assert h.code(0, 6) == 755224 and h.code(1, 6) == 287082
best = None
for r in range(3):
    t0 = time.ticks_us()
    for c in range(%d):
        h.code(c, 6)
    dt = time.ticks_diff(time.ticks_us(), t0) / %d
    best = dt if best is None else min(best, dt)
print('HOTP', best)
""" % (HOTP_CALLS, HOTP_CALLS)

HEAP_CHIP = """\
import gc, json, board, app
b = board.make()
a = app.App(b)
gc.collect()
boot_free = gc.mem_free()
c0 = a.store.counter
gc.collect()
free = gc.mem_free()
gc.disable()
m0 = gc.mem_alloc()
a.press()
m1 = gc.mem_alloc()
gc.enable()
print('HEAP', json.dumps([boot_free, free - (m1 - m0), m1 - m0, a.store.counter - c0]))
"""


def _b32(seed: bytes) -> str:
    import base64

    return base64.b32encode(seed).decode()


def _mpremote(port: str, code: str) -> str:
    out = subprocess.run(
        [str(Path(sys.executable).with_name("mpremote")), "connect", port, "exec", code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"mpremote on the emulated Pico failed: {out.stderr[-300:]}")
    return out.stdout


def _line(stdout: str, tag: str) -> str:
    line = next((ln for ln in stdout.splitlines() if ln.startswith(tag + " ")), None)
    if line is None:
        raise RuntimeError(f"no {tag} line from the chip: {stdout[-300:]}")
    return line[len(tag) + 1 :]


def run(unix: dict, log=None) -> list[Row]:
    """``unix``: the unix tier's figures of this run (``hotp_us``, ``press_ms``, ``heap_free``,
    ``heap_alloc``, ``boot_ms``), printed beside each Pico row."""
    from keyfob import build
    from keyfob.sim.devtools import dev_provision
    from keyfob.sim.pico import QUIET_WINDOWS, PicoToken

    def say(msg):
        if log is not None:
            log(msg)

    rows: list[Row] = []
    seed = secrets.token_bytes(20)
    with tempfile.TemporaryDirectory(prefix="bench-pico-") as tmp:
        files = build.build("rp2040", Path(tmp) / "build")
        with PicoToken(Path(tmp) / "pico") as tok:
            say("pico: deploying the firmware onto the emulated Pico")
            tok.power_on()
            tok.deploy(files)
            tok.wait_idle()

            say("pico: one HOTP")
            h_us = float(_line(_mpremote(tok.port, HOTP_CHIP), "HOTP"))
            rows.append(
                Row(
                    "pico: one HOTP (SHA-1, 6 digits), emulated",
                    h_us,
                    "µs",
                    "report",
                    True,
                    h_us / unix["hotp_us"],
                    f"unix tier: {unix['hotp_us']:.1f} µs",
                )
            )

            dev_provision(tok, seed)
            say("pico: heap after boot and during a press")
            boot_free, low_free, alloc, used = json.loads(_line(_mpremote(tok.port, HEAP_CHIP), "HEAP"))
            if used != 1:
                raise RuntimeError("the heap bench's press used no HOTP counter")
            rows.append(
                Row(
                    "pico: gc.mem_free() after boot (App built)",
                    boot_free / 1024,
                    "KB",
                    "report",
                    True,
                    boot_free / unix["heap_free"],
                    f"unix tier, 72K heap: {unix['heap_free'] / 1024:.1f} KB free before the press",
                )
            )
            rows.append(
                Row(
                    "pico: gc.mem_free() at the lowest point of a press",
                    low_free / 1024,
                    "KB",
                    "report",
                    True,
                    alloc / unix["heap_alloc"],
                    f"allocated by the press: {alloc / 1024:.2f} KB (unix tier {unix['heap_alloc'] / 1024:.2f} KB)",
                )
            )

            say("pico: press -> code drawn")
            tok.soft_reset()
            tok.wait_idle()
            ref = pyotp.HOTP(_b32(seed))
            # the heap bench's press used counter 0
            times = []
            for i in range(PRESSES):
                tok.press()
                tok.wait_idle()
                if tok.screen().digits() != ref.at(i + 1):
                    raise RuntimeError(f"pico press bench: press {i} did not show HOTP({i + 1})")
                times.append(tok.oled_at_ms - tok.press_at_ms)
            press_ms = statistics.median(times)
            rows.append(
                Row(
                    "pico: press -> code drawn, emulated",
                    press_ms,
                    "ms",
                    "<= 50 ms (unix target)",
                    press_ms <= 50,
                    press_ms / unix["press_ms"],
                    f"unix tier: {unix['press_ms']:.1f} ms",
                )
            )

            say("pico: boot -> ready")
            boots = []
            for _ in range(BOOTS):
                tok.cut_power()
                tok.power_on()
                tok.wait_idle(60)
                boots.append(tok.emulated_ms() - QUIET_WINDOWS * 20)
            boot = statistics.median(boots)
            rows.append(
                Row(
                    "pico: boot -> ready, emulated",
                    boot,
                    "ms",
                    "report",
                    True,
                    boot / unix["boot_ms"],
                    f"unix tier (host ms, process start included): {unix['boot_ms']:.1f} ms",
                )
            )
    return rows
