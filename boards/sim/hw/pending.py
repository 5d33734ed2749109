# A KeyboardInterrupt the sim holds until its next entry point (flash.py:
# one that came during a flash operation). Raised by take() at an I2C
# transaction, idle(), sleep_ms(), usb_read(), kbd_intr(-1) and the end of
# boot.py/main.py. Written in the subset shared by MicroPython and CPython.
held = False


def take():
    """Raise the held KeyboardInterrupt, if any."""
    global held
    if held:
        held = False
        raise KeyboardInterrupt
