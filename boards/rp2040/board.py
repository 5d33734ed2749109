# Board layer for a Raspberry Pi Pico (RP2040). Deployed as board.py next to the
# firmware; the firmware reaches hardware only through make()'s object.
#
# Wiring: SSD1306 128x64 on I2C0 (SDA GP4 = pin 6, SCL GP5 = pin 7) at 0x3C or 0x3D; a
# push button from GP15 (pin 20) to GND with the internal pull-up; a DS3231 at
# 0x68 on the same bus is needed for time mode: the RP2040's own RTC has no
# battery and forgets the time at every power-off.
import machine
from micropython import const

from mcu import McuBoard, fail, kbd_intr  # noqa: F401 (main.py calls fail)

PIN_SDA = const(4)
PIN_SCL = const(5)
PIN_BUTTON = const(15)
I2C_FREQ = const(400000)


class Board(McuBoard):
    name = 'rp2040'
    # The RTC counts the 12 MHz crystal (some tens of ppm); it stops at every
    # power-off anyway, so without a DS3231 each sync finds the clock lost.
    rtc_ppm = 50

    def __init__(self):
        i2c = machine.I2C(0, sda=machine.Pin(PIN_SDA), scl=machine.Pin(PIN_SCL), freq=I2C_FREQ)
        button = machine.Pin(PIN_BUTTON, machine.Pin.IN, machine.Pin.PULL_UP)
        super().__init__(i2c, button, machine.RTC())

    # idle() waits with time.sleep_ms, which parks the core in WFE between
    # ticks. machine.lightsleep would save more but stops the USB clock, and
    # the token must keep answering the laptop while it waits.


def make():
    return Board()
