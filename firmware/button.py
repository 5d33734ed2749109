# button.py: one push button on a pull-up input (pin value 0 = pressed).
#
# The pin is polled every _POLL_MS. A level counts once it has been stable for
# debounce_ms. ticks_ms and sleep_ms come from the board, so tests can drive
# the button from a virtual clock.

from micropython import const
from time import ticks_diff

_POLL_MS = const(5)


class Button:
    def __init__(self, pin, ticks_ms, sleep_ms, debounce_ms=30, long_ms=2000):
        self.pin = pin
        self.ticks_ms = ticks_ms
        self.sleep_ms = sleep_ms
        self.debounce_ms = debounce_ms
        self.long_ms = long_ms
        self.down_at = None  # ticks_ms() when the last press seen by pressed() began

    def _settle(self):
        # Wait until the pin has kept one level for debounce_ms; -> (level, since).
        v = self.pin.value()
        since = self.ticks_ms()
        while ticks_diff(self.ticks_ms(), since) < self.debounce_ms:
            self.sleep_ms(_POLL_MS)
            w = self.pin.value()
            if w != v:
                v = w
                since = self.ticks_ms()
        return v, since

    def pressed(self):
        # Debounced level: True while the button is held down.
        v, since = self._settle()
        if v:
            self.down_at = None
            return False
        self.down_at = since
        return True

    def held(self, start, ms):
        # True once the button has been down for ms since start; False as soon
        # as it has been up for debounce_ms (a shorter release is a bounce).
        up_since = None
        while True:
            now = self.ticks_ms()
            if self.pin.value():
                if up_since is None:
                    up_since = now
                elif ticks_diff(now, up_since) >= self.debounce_ms:
                    return False
            else:
                up_since = None
                if ticks_diff(now, start) >= ms:
                    return True
            self.sleep_ms(_POLL_MS)

    def wait_release(self):
        # After a press: 'short' once the button is released, or 'long' as soon
        # as it has been down for long_ms, without waiting for the release (so
        # the UI can react). The hold is timed from the start of the press seen
        # by pressed(), else from this call.
        start = self.down_at if self.down_at is not None else self.ticks_ms()
        self.down_at = None
        return "long" if self.held(start, self.long_ms) else "short"

    def wait_up(self):
        # Block until the button is released (e.g. after a 'long' press).
        while self._settle()[0] == 0:
            pass
        self.down_at = None

    def held_at_boot(self, ms=1000):
        # True if the button stays down for ms from now (power-up with the
        # button held: the setup / unlock gesture).
        return self.held(self.ticks_ms(), ms)

