# What the ESP32 and RP2040 board layers share: time, idle with wake on the
# button or USB, the REPL interrupt switch and the boot I2C scan. Deployed next
# to board.py on real boards (not on the virtual token, which has its own).
import select
import sys
import time

import micropython
from micropython import const

ADDR_OLED = const(0x3C)
ADDR_OLED_ALT = const(0x3D)  # modules with the address jumper (SA0) moved
ADDR_DS3231 = const(0x68)
_IDLE_POLL_MS = const(10)


def kbd_intr(on):
    # Module level: the console without a board object. (boot.py and main.py
    # call micropython.kbd_intr(-1) themselves, before anything is imported.)
    micropython.kbd_intr(3 if on else -1)


def fail():
    # After a crash of a locked token: restart rather than fall into the REPL.
    # A fault that stays (a dead OLED) keeps restarting, closed.
    import machine
    time.sleep_ms(1000)
    machine.reset()


class McuBoard:
    name = 'mcu'

    def __init__(self, i2c, button, rtc):
        self.i2c = i2c
        self.button = button
        self.rtc = rtc
        found = i2c.scan()
        self.oled_addr = ADDR_OLED if ADDR_OLED in found else ADDR_OLED_ALT if ADDR_OLED_ALT in found else None
        self.found = {'oled': self.oled_addr is not None, 'ds3231': ADDR_DS3231 in found}
        self._usb = select.poll()
        self._usb.register(sys.stdin, select.POLLIN)

    def _usb_ready(self):
        # ipoll, not poll: no list allocated every 10 ms of idle.
        for _ in self._usb.ipoll(0):
            return True
        return False

    def ticks_ms(self):
        return time.ticks_ms()

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def light_sleep(self, ms):
        # sleep_ms parks the core (WFI/WFE) between ticks; a deeper sleep would
        # cut USB, and the token must keep answering the laptop while idle.
        time.sleep_ms(ms)

    def idle(self, ms):
        start = time.ticks_ms()
        while True:
            if self.button.value() == 0:
                return 'button'
            if self._usb_ready():
                return 'usb'
            left = ms - time.ticks_diff(time.ticks_ms(), start)
            if left <= 0:
                return 'timeout'
            self.light_sleep(min(left, _IDLE_POLL_MS))

    def set_kbd_intr(self, on):
        kbd_intr(on)

    # USB serial: the firmware's provisioning frames (docs/protocol.md).
    def usb_listen(self, on=True):
        pass  # a real port's USB stack buffers bytes by itself

    def usb_read(self, n):
        # read(n) blocks until n bytes came, so take what is there one by one.
        out = bytearray()
        while len(out) < n and self._usb_ready():
            out += sys.stdin.buffer.read(1)
        return bytes(out)

    def usb_write(self, buf):
        sys.stdout.buffer.write(buf)
