# clock.py: UTC Unix time for TOTP from a DS3231 or the chip's own RTC.
#
# Unix time is computed here from the calendar fields (days from 1970-01-01
# by the proleptic Gregorian calendar), never with time.time() or
# time.mktime(): embedded ports count from 2000-01-01, the unix port from
# 1970, and a token that gets this wrong is 30 years off.
#
# Big ints: on 32-bit ports a Unix time (~1.8e9) is a heap-allocated big int,
# so step() works from (days, seconds of day) and, when the period divides a
# day (30 s, 60 s), forms days * (86400 // period) + sod // period, all small
# ints (~6e7). unix() must return the big int; other periods fall back to it.

_DAY = 86400

# The oscillator bound of a DS3231 module in ppm: the DS3231SN is +-2 ppm
# (0-40 C), the DS3231M many cheap modules carry +-5 ppm. SETTIME on a locked
# token and drift learning trust no clock further (docs/protocol.md 5).
DS3231_PPM = 5


def days_from_civil(y, m, d):
    # Days since 1970-01-01 of the Gregorian date y-m-d (m 1-12, d 1-31).
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    # Inverse of days_from_civil: -> (y, m, d).
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
    return (y, m, d)


class Clock:
    # rtc: machine.RTC-like, datetime() -> (y, mo, d, wd, h, mi, s, subsec).
    # ds3231: a DS3231 driver or None; when given it is the time source.
    #
    # Drift hook: when drift_ppm is non-zero and synced_at (the Unix time of
    # the last set_unix) is known, the time read is corrected by
    # (t - synced_at) * drift_ppm / 1e6 seconds, rounded to whole seconds.
    # Positive drift_ppm = the clock runs slow and the correction adds.

    def __init__(self, rtc, ds3231=None):
        self.rtc = rtc
        self.ds3231 = ds3231
        # Worst-case drift of the time source in ppm; None: not fit for time
        # mode (an RC oscillator in deep sleep). The app sets it from the board.
        self.max_ppm = DS3231_PPM
        self.failed = False  # the DS3231 stopped answering: the time is lost
        self.drift_ppm = 0
        self.synced_at = None
        self._sync_key = None
        self._sync_split = (0, 0)

    def fields(self):
        # -> (y, mo, d, h, mi, s) as the clock chip shows them (UTC).
        if self.ds3231 is not None:
            return self.ds3231.datetime()
        t = self.rtc.datetime()
        return (t[0], t[1], t[2], t[4], t[5], t[6])

    def lost(self):
        # True when the time cannot be trusted: the DS3231's oscillator stopped,
        # or (no DS3231) the chip RTC was never set since power-up.
        if self.ds3231 is not None:
            try:
                return self.ds3231.lost()
            except OSError:  # off the bus: never show a code from a clock not read
                self.failed = True
                return True
        return self.rtc.datetime()[0] < 2024

    def days_sod(self):
        # -> (days since 1970-01-01, seconds of the day), drift-corrected:
        # the Unix time without forming it (both small ints).
        y, mo, d, h, mi, s = self.fields()
        days = days_from_civil(y, mo, d)
        sod = h * 3600 + mi * 60 + s
        if self.drift_ppm and self.synced_at is not None:
            sod += self._correction(days, sod)
            days += sod // _DAY
            sod %= _DAY
        return days, sod

    def _correction(self, days, sod):
        # Seconds elapsed since synced_at from (days, sod) so that no big int is
        # formed per read: synced_at is split once per new value.
        if self.synced_at != self._sync_key:
            self._sync_key = self.synced_at
            self._sync_split = divmod(self.synced_at, _DAY)
        sd, ss = self._sync_split
        elapsed = (days - sd) * _DAY + (sod - ss)
        return round(elapsed * self.drift_ppm / 1e6)


    def unix(self):
        days, sod = self.days_sod()
        return days * _DAY + sod

    def raw_and_unix(self):
        # -> (the chip's own reading, the drift-corrected time), one read.
        y, mo, d, h, mi, s = self.fields()
        days = days_from_civil(y, mo, d)
        sod = h * 3600 + mi * 60 + s
        raw = days * _DAY + sod
        if self.drift_ppm and self.synced_at is not None:
            return raw, raw + self._correction(days, sod)
        return raw, raw

    def step(self, period=30):
        # The TOTP step number floor(unix / period), a small int for periods
        # that divide a day; other periods go through the big int.
        return self.step_left(period)[0]

    def step_left(self, period=30):
        # -> (step, seconds left in it) from one read of the clock.
        days, sod = self.days_sod()
        if _DAY % period == 0:
            return days * (_DAY // period) + sod // period, period - sod % period
        t = days * _DAY + sod
        return t // period, period - t % period

    def set_unix(self, t):
        # Set the DS3231 (if any) and the chip RTC to Unix time t; t becomes
        # synced_at, so the drift correction starts again from zero.
        if t < 0:
            raise ValueError("time")
        days, sod = divmod(t, _DAY)
        y, mo, d = civil_from_days(days)
        h = sod // 3600
        mi = sod // 60 % 60
        s = sod % 60
        if self.ds3231 is not None:
            self.ds3231.set_datetime(y, mo, d, h, mi, s)
        # machine.RTC weekday: 0 = Monday; 1970-01-01 was a Thursday.
        self.rtc.datetime((y, mo, d, (days + 3) % 7, h, mi, s, 0))
        self.synced_at = t
