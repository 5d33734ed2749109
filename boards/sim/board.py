# board.py for the virtual token (the MicroPython unix port with emulated parts).
#
# Deployed onto the virtual flash as board.py, like boards/esp32/board.py on an
# ESP32. The "silicon" (I2C parts, button, USB, control link) lives in
# boards/sim/hw and is on sys.path, put there by hw/rom.py at power-on.
import time

from micropython import const

import bus
from ds3231_emu import civil_from_days, days_from_civil

_DAYS_1970_2000 = const(10957)
_NS_PER_S = const(1000000000)


class RTC:
    """The chip's own RTC, as on an ESP32: counts from 2000-01-01 00:00:00 at power-on,
    lost when power goes. datetime() -> (y, mo, d, weekday 0=Monday, h, mi, s, us)."""

    def __init__(self):
        self._base = 0  # seconds since 2000-01-01 at _t0
        self._t0 = time.time_ns()

    def datetime(self, t=None):
        if t is None:
            ns = time.time_ns() - self._t0
            s = self._base + ns // _NS_PER_S
            us = ns % _NS_PER_S // 1000
            days = s // 86400
            secs = s % 86400
            y, mo, d = civil_from_days(days + _DAYS_1970_2000)
            return (y, mo, d, (days + 5) % 7, secs // 3600, secs // 60 % 60, secs % 60, us)
        y, mo, d = t[0], t[1], t[2]
        h, mi, s = t[4], t[5], t[6]
        days = days_from_civil(y, mo, d) - _DAYS_1970_2000
        self._base = days * 86400 + h * 3600 + mi * 60 + s
        self._t0 = time.time_ns()


_rtc = None


class Board:
    name = 'sim'
    rtc_ppm = None  # the chip RTC stands for an ESP32's: unfit for time mode without a DS3231

    def __init__(self):
        global _rtc
        hw = bus.silicon()
        self._hw = hw
        self.i2c = hw.i2c
        self.button = hw.button
        if _rtc is None:
            _rtc = RTC()  # one chip RTC per power-on, whatever make() is called
        self.rtc = _rtc
        addrs = self.i2c.scan()
        # The panel at either address a module can be strapped to, as boards/common/mcu.py.
        self.oled_addr = None
        for a in bus.OLED_ADDRS:
            if a in addrs:
                self.oled_addr = a
                break
        self.found = {'oled': self.oled_addr is not None, 'ds3231': bus.ADDR_DS3231 in addrs}

    def idle(self, ms):
        return self._hw.idle(ms)

    def ticks_ms(self):
        return bus.ticks_ms()  # the chip's clock: host time the sim ran (bus.py)

    def sleep_ms(self, ms):
        self._hw.sleep_ms(ms)

    def deep_sleep(self):
        # By default the sim returns at the wake-up (the app treats the return as it);
        # with KEYFOB_SIM_SLEEP=reset the wake-up is a reset, as on an ESP32.
        self._hw.deep_sleep()

    def woke_by_button(self):
        # This start is the button waking the chip from deep sleep (sleep mode reset).
        return self._hw.woke

    # USB: the REPL's Ctrl-C and the firmware's own frames (docs/internals.md).
    def set_kbd_intr(self, on):
        self._hw.set_kbd_intr(on)

    def usb_listen(self, on=True):
        self._hw.listen = bool(on)

    def usb_read(self, n):
        return self._hw.usb_read(n)

    def usb_write(self, buf):
        self._hw.usb_write(buf)


def kbd_intr(on):
    # Module level, as on the other boards.
    bus.silicon().set_kbd_intr(on)


def fail():
    # A real board restarts after a crash of a locked token; the sim stays up,
    # closed (USB ignored, Ctrl-C off), still answering its control socket.
    hw = bus.silicon()
    hw.set_kbd_intr(False)
    hw.listen = False
    while True:
        hw.idle(3600000)


def make():
    return Board()
