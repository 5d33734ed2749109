# Board layer for an ESP32 DevKit (ESP32-WROOM-32). Deployed as board.py next to
# the firmware; the firmware reaches hardware only through make()'s object.
#
# Classic ESP32 only (GPIO21/22/27, ext0 wake-up): `keyfob flash` refuses the
# S2/S3/C3/C6, whose pins and wake-up sources differ.
#
# Wiring: SSD1306 128x64 on I2C0 (SDA GPIO21, SCL GPIO22) at 0x3C or 0x3D; a push button
# from GPIO27 to GND (internal pull-up; GPIO27 is RTC-capable, so it can wake the
# chip from deep sleep); optional DS3231 at 0x68 on the same bus.
import machine
from micropython import const

import esp32
from mcu import McuBoard, fail, kbd_intr  # noqa: F401 (main.py calls fail)

PIN_SDA = const(21)
PIN_SCL = const(22)
PIN_BUTTON = const(27)
I2C_FREQ = const(400000)


class Board(McuBoard):
    name = 'esp32'
    # The chip's own clock in deep sleep runs from the ~150 kHz RC oscillator,
    # thousands of ppm off and temperature-dependent: unfit for time mode, which
    # then needs a DS3231 (PROVISION of a TOTP token is refused without one).
    rtc_ppm = None

    def __init__(self):
        i2c = machine.I2C(0, sda=machine.Pin(PIN_SDA), scl=machine.Pin(PIN_SCL), freq=I2C_FREQ)
        button = machine.Pin(PIN_BUTTON, machine.Pin.IN, machine.Pin.PULL_UP)
        super().__init__(i2c, button, machine.RTC())
        esp32.wake_on_ext0(button, esp32.WAKEUP_ALL_LOW)

    def deep_sleep(self):
        # The chip restarts from main.py on the button; state lives in flash.
        machine.deepsleep()

    def woke_by_button(self):
        # This start is the button waking the chip from deep sleep (ext0): the
        # press counts, even if the finger is already up by now.
        return (machine.reset_cause() == machine.DEEPSLEEP_RESET
                and machine.wake_reason() == getattr(machine, 'EXT0_WAKE', 2))


def make():
    return Board()
