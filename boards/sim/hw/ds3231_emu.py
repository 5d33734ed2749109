# Emulated DS3231 real-time clock (Maxim DS3231 datasheet, "Timekeeping Registers").
#
# Registers 0x00-0x12 as on the chip: BCD seconds, minutes, hours (bit 6 = 12-hour
# mode, bit 5 = PM), day of week (1-7), date, month (bit 7 = century), year;
# alarms 0x07-0x0D (plain storage), control 0x0E, status 0x0F (bit 7 = OSF),
# aging offset 0x10, temperature 0x11-0x12 (read only).
#
# The time is not ticked: it is derived from a reference -- the Unix time the
# chip showed at one host wall-clock reading -- plus a drift in ppm, so it keeps
# running while the token is "off". Writing time registers re-bases the
# reference (writing seconds also restarts the 1 Hz countdown, so the fraction
# goes to 0). Writing time does not clear OSF: only writing 0 to bit 7 of 0x0F
# does. Everything that survives a power cut (the coin cell) is saved as a small
# JSON file after every change.
#
# The chip counts leap years as every 4th year, right for 2000-2099 only.
# Written in the subset shared by MicroPython and CPython.
import json
import os
import time

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


ADDR = const(0x68)

REG_SECONDS = const(0x00)
REG_MINUTES = const(0x01)
REG_HOURS = const(0x02)
REG_DAY = const(0x03)
REG_DATE = const(0x04)
REG_MONTH = const(0x05)
REG_YEAR = const(0x06)
REG_ALARM1 = const(0x07)  # 0x07-0x0A alarm 1, 0x0B-0x0D alarm 2
REG_CONTROL = const(0x0E)
REG_STATUS = const(0x0F)
REG_AGING = const(0x10)
REG_TEMP_MSB = const(0x11)
REG_TEMP_LSB = const(0x12)
NREGS = const(0x13)

HOURS_12 = const(0x40)
HOURS_PM = const(0x20)
MONTH_CENTURY = const(0x80)
CONTROL_CONV = const(0x20)
CONTROL_POR = const(0x1C)  # RS2, RS1, INTCN set at power-on
STATUS_OSF = const(0x80)
STATUS_EN32KHZ = const(0x08)
STATUS_A2F = const(0x02)
STATUS_A1F = const(0x01)

EPOCH_2000 = const(946684800)  # 2000-01-01T00:00:00Z in Unix time
_DAYS_1970_2000 = const(10957)
_NS = 1000000000


# -- calendar (proleptic Gregorian, days since 1970-01-01) ------------------------
# The same arithmetic as firmware/clock.py, kept apart on purpose: the emulated chip
# must not run the firmware code it is there to test (both are checked against
# CPython's calendar in their own tests).

def days_from_civil(y, m, d):
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400
    if m <= 2:
        y += 1
    return y, m, d


def iso_weekday(days):
    """1 = Monday .. 7 = Sunday for a day number since 1970-01-01 (a Thursday)."""
    return (days + 3) % 7 + 1


def bcd(v):
    return (v // 10) << 4 | (v % 10)


def unbcd(b):
    return (b >> 4) * 10 + (b & 0x0F)


def _host_ns():
    return time.time_ns()


class DS3231Emu:
    def __init__(self, state_path=None, clock_ns=None):
        self.state_path = state_path
        self._clock_ns = clock_ns or _host_ns
        self._ptr = 0
        self.writes = 0  # write transactions (for tests)
        self._power_on_reset()
        if state_path:
            self._load()

    # -- state -------------------------------------------------------------------

    def _power_on_reset(self):
        # A fresh coin cell: 00:00:00 01/01/00, day 1, oscillator-stop flag set.
        self.ref_unix = EPOCH_2000
        self.ref_frac_ns = 0
        self.ref_host_ns = self._clock_ns()
        self.ppm = 0.0
        self.dow_ref = 1
        self.h12 = False
        self.osf = True
        self.control = CONTROL_POR
        self.status = STATUS_EN32KHZ  # other than OSF
        self.alarms = bytearray(7)
        self.aging = 0  # signed, about 0.1 ppm per LSB (a positive value slows the clock)
        self.temp_q = 100  # temperature in quarter degrees C (25.00 C)

    def _load(self):
        try:
            with open(self.state_path) as f:
                s = json.load(f)
        except (OSError, ValueError):
            return  # no cell yet: power-on reset values, OSF set
        self.ref_unix = int(s['ref_unix'])
        self.ref_frac_ns = int(s.get('ref_frac_ns', 0))
        self.ref_host_ns = int(s['ref_host_ns'])
        self.ppm = float(s.get('ppm', 0.0))
        self.dow_ref = int(s.get('dow', 1))
        self.h12 = bool(s.get('h12', False))
        self.osf = bool(s.get('osf', False))
        self.control = int(s.get('control', CONTROL_POR))
        self.status = int(s.get('status', STATUS_EN32KHZ))
        self.alarms = bytearray(s.get('alarms', [0] * 7))
        self.aging = int(s.get('aging', 0))
        self.temp_q = int(s.get('temp_q', 100))

    def save(self):
        if not self.state_path:
            return
        s = {
            'ref_unix': self.ref_unix, 'ref_frac_ns': self.ref_frac_ns,
            'ref_host_ns': self.ref_host_ns, 'ppm': self.ppm, 'dow': self.dow_ref,
            'h12': self.h12, 'osf': self.osf, 'control': self.control,
            'status': self.status, 'alarms': list(self.alarms), 'aging': self.aging,
            'temp_q': self.temp_q,
        }
        tmp = self.state_path + '.tmp'
        with open(tmp, 'w') as f:
            f.write(json.dumps(s))
        os.rename(tmp, self.state_path)

    # -- time ----------------------------------------------------------------------

    def effective_ppm(self):
        return self.ppm - 0.1 * self.aging

    def _now(self):
        """(whole Unix seconds, fraction in ns) the chip shows now."""
        elapsed = self._clock_ns() - self.ref_host_ns
        chip_ns = self.ref_frac_ns + elapsed * (1.0 + self.effective_ppm() / 1e6)
        whole = int(chip_ns // _NS)
        return self.ref_unix + whole, int(chip_ns - whole * _NS)

    def unix_time(self):
        s, frac = self._now()
        return s + frac / 1e9

    def _rebase(self, unix, frac_ns, dow):
        self.ref_unix = unix
        self.ref_frac_ns = frac_ns
        self.ref_host_ns = self._clock_ns()
        self.dow_ref = dow

    def set_clock(self, unix, ppm=None, osf=None):
        """Set the chip to Unix time `unix` now (host side: `clock <unix> <ppm> <osf>`)."""
        whole = int(unix // 1)
        self._rebase(whole, int((unix - whole) * _NS), iso_weekday(whole // 86400))
        if ppm is not None:
            self.ppm = float(ppm)
        if osf is not None:
            self.osf = bool(osf)
        self.save()

    def set_ppm(self, ppm):
        s, frac = self._now()
        self._rebase(s, frac, self._dow(s))
        self.ppm = float(ppm)
        self.save()

    def _dow(self, unix):
        days = unix // 86400 - self.ref_unix // 86400
        return (self.dow_ref - 1 + days) % 7 + 1

    # -- registers -------------------------------------------------------------------

    def registers(self):
        """All 19 registers as the chip would return them now."""
        r = bytearray(NREGS)
        s, _ = self._now()
        days = s // 86400
        secs = s - days * 86400
        y, mo, d = civil_from_days(days)
        h = secs // 3600
        r[REG_SECONDS] = bcd(secs % 60)
        r[REG_MINUTES] = bcd(secs // 60 % 60)
        if self.h12:
            r[REG_HOURS] = HOURS_12 | (HOURS_PM if h >= 12 else 0) | bcd(h % 12 or 12)
        else:
            r[REG_HOURS] = bcd(h)
        r[REG_DAY] = self._dow(s)
        r[REG_DATE] = bcd(d)
        r[REG_MONTH] = bcd(mo) | (MONTH_CENTURY if (y - 2000) // 100 & 1 else 0)
        r[REG_YEAR] = bcd(y % 100)
        r[REG_ALARM1:REG_CONTROL] = self.alarms
        r[REG_CONTROL] = self.control
        r[REG_STATUS] = (STATUS_OSF if self.osf else 0) | self.status
        r[REG_AGING] = self.aging & 0xFF
        r[REG_TEMP_MSB] = (self.temp_q >> 2) & 0xFF
        r[REG_TEMP_LSB] = (self.temp_q & 3) << 6
        return r

    @staticmethod
    def _decode_time(r):
        secs = unbcd(r[REG_SECONDS] & 0x7F)
        mins = unbcd(r[REG_MINUTES] & 0x7F)
        hb = r[REG_HOURS]
        if hb & HOURS_12:
            h = unbcd(hb & 0x1F) % 12 + (12 if hb & HOURS_PM else 0)
        else:
            h = unbcd(hb & 0x3F)
        d = unbcd(r[REG_DATE] & 0x3F)
        mo = unbcd(r[REG_MONTH] & 0x1F)
        y = 2000 + unbcd(r[REG_YEAR]) + (100 if r[REG_MONTH] & MONTH_CENTURY else 0)
        return days_from_civil(y, mo, d) * 86400 + h * 3600 + mins * 60 + secs

    # -- I2C transactions (called by bus.SimI2C) -------------------------------------

    def write(self, buf):
        """One I2C write transaction: register pointer, then data (auto-increment)."""
        n = len(buf)
        if n == 0:
            return
        self._ptr = buf[0] % NREGS
        if n == 1:
            return  # pointer set for a following read
        r = self.registers()
        _, frac = self._now()
        time_written = False
        seconds_written = False
        old_aging = self.aging
        for i in range(1, n):
            reg = self._ptr
            v = buf[i]
            if reg <= REG_YEAR:
                r[reg] = v
                time_written = True
                if reg == REG_SECONDS:
                    seconds_written = True
            elif reg < REG_CONTROL:
                self.alarms[reg - REG_ALARM1] = v
            elif reg == REG_CONTROL:
                self.control = v & ~CONTROL_CONV  # a conversion is over at once
            elif reg == REG_STATUS:
                # OSF, A2F, A1F can only be cleared; EN32kHz is read/write; BSY read only.
                if not v & STATUS_OSF:
                    self.osf = False
                keep = self.status & (STATUS_A2F | STATUS_A1F) & v
                self.status = keep | (v & STATUS_EN32KHZ)
            elif reg == REG_AGING:
                self.aging = v - 256 if v & 0x80 else v
            # 0x11, 0x12: temperature, read only
            self._ptr = (reg + 1) % NREGS
        if time_written:
            self.h12 = bool(r[REG_HOURS] & HOURS_12)
            self._rebase(self._decode_time(r), 0 if seconds_written else frac, r[REG_DAY] & 0x07)
        elif self.aging != old_aging:
            new_aging = self.aging
            self.aging = old_aging
            s, fr = self._now()
            self._rebase(s, fr, self._dow(s))
            self.aging = new_aging
        self.writes += 1
        self.save()

    def readinto(self, buf):
        """One I2C read transaction from the register pointer (auto-increment, wraps)."""
        r = self.peek()
        for i in range(len(buf)):
            buf[i] = r[i % NREGS]
        self.skip(len(buf))

    def peek(self):
        """The bytes a read transaction starting now returns, from the register pointer on
        (all NREGS, wrapping), without moving the pointer: the chip latches the time at the
        START condition. For a bus that learns a read's length only at its STOP (the
        emulated Pico): peek() at the start, skip(n) at the end."""
        r = self.registers()
        p = self._ptr
        return bytes(r[(p + i) % NREGS] for i in range(NREGS))

    def skip(self, n):
        """A read transaction took n bytes: the pointer moves past them."""
        self._ptr = (self._ptr + n) % NREGS
