# ds3231.py: DS3231 real-time clock over I2C (Maxim DS3231 datasheet, "Timekeeping Registers").
#
# Registers 0x00-0x06 hold BCD seconds, minutes, hours, day (weekday 1-7),
# date, month/century and year. The time is read and written as one burst so
# the registers cannot roll over between bytes. The driver keeps 24-hour mode
# when it writes and reads either mode.

from micropython import const

_SECONDS = const(0x00)
_CONTROL = const(0x0E)
_STATUS = const(0x0F)

_HOUR_12 = const(0x40)  # hours register: 1 = 12-hour mode
_HOUR_PM = const(0x20)  # hours register in 12-hour mode: 1 = PM
_CENTURY = const(0x80)  # month register: the year rolled over from 99
_EOSC = const(0x80)  # control: 1 = oscillator stops on battery power
_OSF = const(0x80)  # status: 1 = the oscillator stopped (time is invalid)


def _bcd2bin(v):
    return (v >> 4) * 10 + (v & 0x0F)


def _bin2bcd(v):
    return (v // 10) << 4 | v % 10


def _weekday(y, m, d):
    # ISO weekday, 1 = Monday .. 7 = Sunday (Sakamoto's method gives 0 = Sunday).
    t = (0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4)
    if m < 3:
        y -= 1
    w = (y + y // 4 - y // 100 + y // 400 + t[m - 1] + d) % 7
    return w or 7


class DS3231:
    def __init__(self, i2c, addr=0x68):
        self.i2c = i2c
        self.addr = addr
        self._tbuf = bytearray(7)
        self._reg = bytearray(1)

    def _read_reg(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._reg)
        return self._reg[0]

    def _write_reg(self, reg, value):
        self._reg[0] = value
        self.i2c.writeto_mem(self.addr, reg, self._reg)

    def datetime(self):
        # -> (year, month, day, hour, minute, second)
        b = self._tbuf
        self.i2c.readfrom_mem_into(self.addr, _SECONDS, b)
        h = b[2]
        if h & _HOUR_12:
            hour = _bcd2bin(h & 0x1F) % 12
            if h & _HOUR_PM:
                hour += 12
        else:
            hour = _bcd2bin(h & 0x3F)
        year = 2000 + _bcd2bin(b[6])
        if b[5] & _CENTURY:
            year += 100
        return (year, _bcd2bin(b[5] & 0x1F), _bcd2bin(b[4] & 0x3F), hour, _bcd2bin(b[1] & 0x7F), _bcd2bin(b[0] & 0x7F))

    def set_datetime(self, year, month, day, hour, minute, second):
        # Valid for 2000-2199; writes 24-hour mode, starts the oscillator on
        # battery (EOSC = 0) and clears OSF.
        if not 2000 <= year <= 2199:
            raise ValueError("year")
        b = self._tbuf
        b[0] = _bin2bcd(second)
        b[1] = _bin2bcd(minute)
        b[2] = _bin2bcd(hour)
        b[3] = _weekday(year, month, day)
        b[4] = _bin2bcd(day)
        b[5] = _bin2bcd(month)
        if year >= 2100:
            b[5] |= _CENTURY
        b[6] = _bin2bcd(year % 100)
        self.i2c.writeto_mem(self.addr, _SECONDS, b)
        c = self._read_reg(_CONTROL)
        if c & _EOSC:
            self._write_reg(_CONTROL, c & ~_EOSC)
        self.clear_lost()

    def lost(self):
        # True when the oscillator has stopped since OSF was last cleared:
        # first power-up, or the coin cell ran flat.
        return bool(self._read_reg(_STATUS) & _OSF)

    def clear_lost(self):
        s = self._read_reg(_STATUS)
        if s & _OSF:
            self._write_reg(_STATUS, s & ~_OSF)
