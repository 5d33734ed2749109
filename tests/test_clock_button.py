"""firmware/ds3231.py, clock.py and button.py under the real MicroPython, on fakes written in the script."""

from __future__ import annotations

import calendar
import datetime
import random

import pytest
from mpy import run_mpy_json

# A DS3231 register file on a fake I2C bus, and a machine.RTC-like chip clock.
FAKES = """
class FakeI2C:
    def __init__(self, addr=0x68):
        self.addr = addr
        self.mem = bytearray(0x13)
        self.ops = 0
    def _check(self, addr, reg, n):
        if addr != self.addr:
            raise OSError(19)  # ENODEV, as machine.I2C says for a missing part
        if reg + n > len(self.mem):
            raise OSError(5)
    def readfrom_mem_into(self, addr, reg, buf):
        self._check(addr, reg, len(buf))
        self.ops += 1
        for i in range(len(buf)):
            buf[i] = self.mem[reg + i]
    def writeto_mem(self, addr, reg, buf):
        self._check(addr, reg, len(buf))
        self.ops += 1
        for i in range(len(buf)):
            self.mem[reg + i] = buf[i]

class FakeRTC:
    def __init__(self, t=(2000, 1, 1, 5, 0, 0, 0, 0)):
        self.t = t
    def datetime(self, t=None):
        if t is None:
            return self.t
        self.t = tuple(t)
"""


def run_fakes(script: str, data=None):
    return run_mpy_json(FAKES + script, data)


def bcd(v: int) -> int:
    return (v // 10) * 16 + v % 10


def random_datetimes(n: int, seed: int, lo=datetime.datetime(1970, 1, 1), hi=datetime.datetime(2199, 12, 31)):
    rng = random.Random(seed)
    span = int((hi - lo).total_seconds())
    fixed = [
        datetime.datetime(2000, 1, 1),
        datetime.datetime(2000, 2, 29, 23, 59, 59),
        datetime.datetime(2024, 2, 29, 12),
        datetime.datetime(2038, 1, 19, 3, 14, 8),  # past 2**31 - 1
        datetime.datetime(2099, 12, 31, 23, 59, 59),
        datetime.datetime(2100, 1, 1),
        datetime.datetime(2100, 3, 1),  # 2100 is not a leap year
        datetime.datetime(2199, 12, 31, 23, 59, 59),
    ]
    return fixed + [lo + datetime.timedelta(seconds=rng.randrange(span)) for _ in range(n)]


def fields(d: datetime.datetime) -> list[int]:
    return [d.year, d.month, d.day, d.hour, d.minute, d.second]


# ---------------------------------------------------------------- DS3231

DS_ROUNDTRIP = """
from ds3231 import DS3231
i2c = FakeI2C()
ds = DS3231(i2c)
out = []
for dt in DATA:
    i2c.mem[0x0F] = 0x88  # OSF set, EN32kHz set
    i2c.mem[0x0E] = 0x9C  # EOSC set (oscillator off on battery)
    ds.set_datetime(*dt)
    out.append([list(i2c.mem[0:7]), i2c.mem[0x0E], i2c.mem[0x0F], list(ds.datetime()), ds.lost()])
emit(out)
"""


def test_ds3231_bcd_round_trip_century_weekday():
    dates = [d for d in random_datetimes(300, 1) if d.year >= 2000]
    got = run_fakes(DS_ROUNDTRIP, [fields(d) for d in dates])
    for d, (regs, control, status, back, lost) in zip(dates, got):
        month = bcd(d.month) | (0x80 if d.year >= 2100 else 0)
        want = [
            bcd(d.second),
            bcd(d.minute),
            bcd(d.hour),
            d.isoweekday(),
            bcd(d.day),
            month,
            bcd(d.year % 100),
        ]
        assert regs == want, d
        assert back == fields(d), d
        assert control == 0x1C and status == 0x08 and lost is False, d  # EOSC and OSF cleared, rest kept


DS_12H = """
from ds3231 import DS3231
i2c = FakeI2C()
ds = DS3231(i2c)
out = []
for regs in DATA:
    for i in range(7):
        i2c.mem[i] = regs[i]
    out.append(list(ds.datetime()))
emit(out)
"""


def test_ds3231_reads_12_hour_mode_and_century():
    cases, want = [], []
    for h in range(24):
        h12 = h % 12 or 12
        hour_reg = 0x40 | (0x20 if h >= 12 else 0) | bcd(h12)
        cases.append([0x59, 0x07, hour_reg, 3, 0x31, 0x12, 0x99])
        want.append([2099, 12, 31, h, 7, 59])
    # 24-hour mode with the century bit: 2105-07-04 21:30:15
    cases.append([0x15, 0x30, 0x21, 6, 0x04, 0x87, 0x05])
    want.append([2105, 7, 4, 21, 30, 15])
    assert run_fakes(DS_12H, cases) == want


DS_OSF = """
from ds3231 import DS3231
i2c = FakeI2C()
ds = DS3231(i2c)
out = []
i2c.mem[0x0F] = 0x8B  # OSF, EN32kHz, A2F, A1F
out.append(ds.lost())
ds.clear_lost()
out.append([ds.lost(), i2c.mem[0x0F]])
i2c.mem[0x0F] = 0x80
out.append(ds.lost())
try:
    ds.set_datetime(1999, 12, 31, 0, 0, 0)
    out.append('accepted')
except ValueError:
    out.append('rejected')
try:
    DS3231(FakeI2C(addr=0x57)).datetime()
    out.append('read')
except OSError:
    out.append('no device')
emit(out)
"""


def test_ds3231_oscillator_stop_flag():
    lost, (after_clear, status), lost_again, early, missing = run_fakes(DS_OSF)
    assert lost is True
    assert after_clear is False and status == 0x0B  # only OSF cleared
    assert lost_again is True
    assert early == "rejected"
    assert missing == "no device"


# ---------------------------------------------------------------- Clock

CLOCK_UNIX = """
from ds3231 import DS3231
from clock import Clock
i2c = FakeI2C()
ds = DS3231(i2c)
rtc = FakeRTC()
with_ds = Clock(rtc, ds)
chip = Clock(FakeRTC())
out = [None] * len(DATA)  # one block up front: a growing list fragments the heap
for i, (y, mo, d, h, mi, s) in enumerate(DATA):
    row = []
    if y >= 2000:
        ds.set_datetime(y, mo, d, h, mi, s)
        row.append([with_ds.unix(), with_ds.step(30), with_ds.step(60), with_ds.step(7),
                    list(with_ds.step_left(30)), list(with_ds.step_left(7))])
    else:
        row.append(None)
    chip.rtc.datetime((y, mo, d, 0, h, mi, s, 0))
    row.append([chip.unix(), chip.step(30), chip.step(60), chip.step(7),
                list(chip.step_left(30)), list(chip.step_left(7))])
    out[i] = row
emit(out)
"""


def test_clock_unix_matches_timegm():
    dates = random_datetimes(1500, 2)
    got = run_fakes(CLOCK_UNIX, [fields(d) for d in dates])
    for d, (from_ds, from_chip) in zip(dates, got):
        t = calendar.timegm(d.timetuple())
        want = [t, t // 30, t // 60, t // 7, [t // 30, 30 - t % 30], [t // 7, 7 - t % 7]]
        assert from_chip == want, d
        if d.year >= 2000:
            assert from_ds == want, d


CLOCK_SET = """
from ds3231 import DS3231
from clock import Clock, civil_from_days, days_from_civil
i2c = FakeI2C()
i2c.mem[0x0F] = 0x80
c = Clock(FakeRTC(), DS3231(i2c))
chip_only = Clock(FakeRTC())
out = []
for t in DATA:
    c.set_unix(t)
    chip_only.set_unix(t)
    out.append([list(c.rtc.datetime()), list(c.ds3231.datetime()), c.unix(), chip_only.unix(), c.lost(),
                c.synced_at == t])
emit(out)
"""


def test_clock_set_unix_sets_both_clocks():
    times = [calendar.timegm(d.timetuple()) for d in random_datetimes(300, 3) if d.year >= 2000]
    got = run_fakes(CLOCK_SET, times)
    for t, (rtc, ds, back, back_chip, lost, synced) in zip(times, got):
        d = datetime.datetime.fromtimestamp(t, tz=datetime.UTC)
        assert rtc == fields(d)[:3] + [d.weekday()] + fields(d)[3:] + [0], t
        assert ds == fields(d), t
        assert back == t and back_chip == t and lost is False and synced is True, t


CLOCK_LOST = """
from ds3231 import DS3231
from clock import Clock
out = []
# chip RTC only: after power-up an ESP32 reads 2000-01-01 (its epoch), an unset sim may read 1970
for y in (1970, 2000, 2023, 2024, 2031):
    out.append(Clock(FakeRTC((y, 6, 1, 0, 12, 0, 0, 0))).lost())
# with a DS3231 its OSF decides, whatever the chip RTC says
i2c = FakeI2C()
c = Clock(FakeRTC((2000, 1, 1, 5, 0, 0, 0, 0)), DS3231(i2c))
i2c.mem[0x0F] = 0x80
out.append(c.lost())
i2c.mem[0x0F] = 0x00
out.append(c.lost())
c.rtc.datetime((2030, 1, 1, 0, 0, 0, 0, 0))
i2c.mem[0x0F] = 0x80
out.append(c.lost())
emit(out)
"""


def test_clock_lost():
    assert run_fakes(CLOCK_LOST) == [True, True, True, False, False, True, False, True]


CLOCK_DRIFT = """
from clock import Clock
out = []
for sync, later, ppm, period in DATA:
    c = Clock(FakeRTC())
    c.set_unix(sync)
    plain = Clock(FakeRTC())
    plain.set_unix(later)
    c.rtc.datetime(plain.rtc.datetime())  # the clock has run on to `later`
    row = [c.unix()]  # drift_ppm 0: no change
    c.drift_ppm = ppm
    row += [c.unix(), c.step(period), c.step(7), list(c.step_left(period))]
    c.synced_at = None  # no reference: no correction
    row.append(c.unix())
    out.append(row)
emit(out)
"""


def test_clock_drift_hook():
    rng = random.Random(4)
    cases = [[1_700_000_000, 1_700_000_000 + 1_000_000, 100, 30], [1_700_000_000, 1_731_536_000, -2.5, 30]]
    for _ in range(200):
        sync = rng.randrange(946_684_800, 4_000_000_000)
        cases.append([sync, sync + rng.randrange(0, 3 * 365 * 86400), rng.uniform(-20, 20), rng.choice([30, 60])])
    got = run_fakes(CLOCK_DRIFT, cases)
    for (sync, later, ppm, period), (raw, corrected, step, step7, left, uncorrected) in zip(cases, got):
        want = later + round((later - sync) * ppm / 1e6)
        assert raw == later and uncorrected == later
        assert isinstance(corrected, int) and isinstance(step, int)  # never a float time
        assert abs(corrected - want) <= 1  # whole seconds; float rounding may differ at .5
        assert step == corrected // period and step7 == corrected // 7
        assert left == [step, period - corrected % period]
    assert got[0][1] == 1_700_000_000 + 1_000_000 + 100
    assert got[1][1] == 1_731_536_000 - 79  # 31.536e6 s at -2.5 ppm: 78.84 s slow


# ---------------------------------------------------------------- Button

# A virtual clock and a pin that follows a script of (until_ms, level) segments; level 0 = pressed.
# ticks start near the wrap-around point to prove ticks_diff is used.
BUTTON = """
import time
from button import Button

class VClock:
    def __init__(self, base):
        self.base = base
        self.t = 0
    def ticks_ms(self):
        return time.ticks_add(self.base, self.t)
    def sleep_ms(self, ms):
        self.t += ms

class ScriptPin:
    def __init__(self, clock, segments):
        self.clock = clock
        self.segments = segments
    def value(self):
        for until, level in self.segments:
            if self.clock.t < until:
                return level
        return 1

out = []
for base in (0, time.ticks_add(0, -1000)):
    for name, op, segments, kw in DATA:
        clk = VClock(base)
        b = Button(ScriptPin(clk, segments), clk.ticks_ms, clk.sleep_ms, **kw)
        if op == 'press':
            r = [b.pressed()]
            if r[0]:
                r.append(b.wait_release())
        elif op == 'long_then_up':
            r = [b.pressed(), b.wait_release()]
            r.append(clk.t)
            b.wait_up()
        elif op == 'pressed':
            r = [b.pressed()]
        else:
            r = [b.held_at_boot(ms=op)]
        out.append([name, r, clk.t])
emit(out)
"""


def bounce(start: int, end: int, level_after: int) -> list[list[int]]:
    """Contact bounce: alternate levels every 2 ms from start to end, then settle at level_after."""
    segs, lvl = [], level_after
    for t in range(start + 2, end + 1, 2):
        segs.append([t, lvl])
        lvl ^= 1
    return segs


BUTTON_CASES = [
    # name, operation, pin script, Button kwargs, expected result, virtual time window at return
    ("short", "press", [[300, 0]], {}, [True, "short"], (330, 345)),
    (
        "short bouncy",
        "press",
        bounce(0, 12, 0) + [[300, 0]] + bounce(300, 310, 1),
        {},
        [True, "short"],
        (330, 360),
    ),
    ("long, still held", "press", [[5000, 0]], {}, [True, "long"], (2000, 2010)),
    ("long despite a bounce", "press", [[1000, 0], [1010, 1], [5000, 0]], {}, [True, "long"], (2000, 2010)),
    ("release just before long", "press", [[1990, 0]], {}, [True, "short"], (2020, 2030)),
    ("custom long_ms", "press", [[5000, 0]], {"long_ms": 800}, [True, "long"], (800, 810)),
    ("not pressed", "pressed", [], {}, [False], (30, 40)),
    ("glitch is no press", "pressed", [[5, 0]], {}, [False], (35, 45)),
    ("long then wait for release", "long_then_up", [[2600, 0]], {}, [True, "long"], (2630, 2645)),
    ("held at boot", 1000, [[1500, 0]], {}, [True], (1000, 1010)),
    ("released at boot", 1000, [[400, 0]], {}, [False], (430, 440)),
    ("bounce while held at boot", 1000, [[500, 0], [510, 1], [1500, 0]], {}, [True], (1000, 1010)),
    ("not held at boot", 1000, [], {}, [False], (30, 40)),
]


def test_button_short_long_and_boot_hold():
    data = [[name, op, segs, kw] for name, op, segs, kw, _, _ in BUTTON_CASES]
    got = run_fakes(BUTTON, data)
    assert len(got) == 2 * len(BUTTON_CASES)
    for i, (name, r, t) in enumerate(got):
        _, _, _, _, want, (lo, hi) = BUTTON_CASES[i % len(BUTTON_CASES)]
        if name == "long then wait for release":
            want = want + [pytest.approx(2000, abs=10)]
        assert r == want, name
        assert lo <= t <= hi, (name, t)
