# The token's screens on a 128x64 SSD1306: the code in big digits, the countdown bar,
# the serial number and short messages. Drawing goes into the driver's framebuffer;
# a new screen is one full frame, a countdown tick sends only the bar columns that changed.

from micropython import const
import time
import font

_W = const(128)
_H = const(64)
_TEXT_AREA = const(56)  # rows above the bar
_BAR_Y = const(58)
_BAR_H = const(6)
_BAR_PAGE = const(7)  # rows 56..63
_LINE_H = const(10)

NOT_PROVISIONED = ("Not", "provisioned")
CLOCK_LOST = ("Clock lost", "set time")
LOCKED = ("Locked",)
HOLD_TO_RESET = ("Keep holding", "to reset")
# RESET asked over USB: what the button will do, in the order it happens.
USB_RESET = ("Reset over USB:", "hold 5 s to", "WIPE the token", "tap: cancel")


class Ui:
    def __init__(self, oled, off_after_ms=15000, ticks_ms=None):
        self.oled = oled
        self.off_after_ms = off_after_ms
        self._ticks = ticks_ms or time.ticks_ms
        self._since = self._ticks()
        self._bar = -1  # bar width in pixels on the panel, -1: no bar drawn
        self.is_on = oled.on  # the driver's init leaves a blank panel on

    # -- screens ---------------------------------------------------------------
    def show_code(self, code, digits, countdown=None):
        """Draw `code` (an int) as `digits` big digits in two groups; `countdown` is
        None or (remaining_s, period_s) to draw the bar in the same frame."""
        fb = self.oled
        fb.fill(0)
        g = font.glyphs(digits)
        cw = g[0]
        step = cw + g[2]
        half = digits // 2
        width = digits * cw + (digits - 2) * g[2] + g[3]
        x0 = (_W - width) // 2
        y0 = (_TEXT_AREA - g[1]) // 2
        segs = font.SEGMENTS
        i = digits - 1
        while i >= 0:
            x = x0 + i * step
            if i >= half:
                x += g[3] - g[2]
            mask = segs[code % 10]
            code //= 10
            s = 0
            while s < 7:
                if mask & (1 << s):
                    o = 4 + 4 * s
                    fb.fill_rect(x + g[o], y0 + g[o + 1], g[o + 2], g[o + 3], 1)
                s += 1
            i -= 1
        self._bar = -1
        if countdown is not None:
            self._bar = self._bar_width(countdown[0], countdown[1])
            fb.fill_rect(0, _BAR_Y, self._bar, _BAR_H, 1)
        self._present()

    def show_countdown(self, remaining_s, period):
        """Update the bar; sends only the columns that changed (nothing when the panel
        is off or the bar did not move)."""
        if not self.is_on:
            return
        fb = self.oled
        new = self._bar_width(remaining_s, period)
        old = self._bar
        if old < 0:
            fb.fill_rect(0, _BAR_Y, _W, _BAR_H, 0)
            fb.fill_rect(0, _BAR_Y, new, _BAR_H, 1)
            self._bar = new
            fb.show_region(0, _W - 1, _BAR_PAGE, _BAR_PAGE)
            return
        if new == old:
            return
        if new > old:
            fb.fill_rect(old, _BAR_Y, new - old, _BAR_H, 1)
            fb.show_region(old, new - 1, _BAR_PAGE, _BAR_PAGE)
        else:
            fb.fill_rect(new, _BAR_Y, old - new, _BAR_H, 0)
            fb.show_region(new, old - 1, _BAR_PAGE, _BAR_PAGE)
        self._bar = new

    def show_message(self, lines):
        """Lines of 8x8 text (up to 16 characters), centred."""
        if isinstance(lines, str):
            lines = (lines,)
        fb = self.oled
        fb.fill(0)
        y = (_H - len(lines) * _LINE_H + (_LINE_H - 8)) // 2
        for line in lines:
            fb.text(line, (_W - 8 * len(line)) // 2, y, 1)
            y += _LINE_H
        self._bar = -1
        self._present()

    def show_serial(self, serial, locked):
        self.show_message(("Serial", serial, "USB locked" if locked else "USB open"))

    def show_not_provisioned(self):
        self.show_message(NOT_PROVISIONED)

    def show_clock_lost(self):
        self.show_message(CLOCK_LOST)

    def show_locked(self):
        self.show_message(LOCKED)

    def show_hold_to_reset(self):
        self.show_message(HOLD_TO_RESET)

    def show_usb_reset(self):
        self.show_message(USB_RESET)

    def show_reset_countdown(self, seconds):
        self.show_message(("WIPE in %d s" % seconds, "keep holding,", "let go: cancel"))

    def show_boot_report(self, found):
        """`found`: the board's boot scan, e.g. {'oled': True, 'ds3231': False}."""
        lines = ["keyfob"]
        for name in sorted(found):
            lines.append(name + (" ok" if found[name] else " missing"))
        self.show_message(lines)

    # -- power -----------------------------------------------------------------
    def off(self):
        self.oled.poweroff()
        self.is_on = False
        self._bar = -1

    def tick(self, now_ms):
        """Turn the panel off once it has been on for off_after_ms; True when it did."""
        if not self.is_on or not self.off_after_ms:
            return False
        if time.ticks_diff(now_ms, self._since) >= self.off_after_ms:
            self.off()
            return True
        return False

    # -- helpers -----------------------------------------------------------------
    def _bar_width(self, remaining_s, period):
        if period <= 0 or remaining_s <= 0:
            return 0
        if remaining_s >= period:
            return _W
        return (remaining_s * _W) // period

    def _present(self):
        self.oled.show()
        if not self.is_on:
            self.oled.poweron()
            self.is_on = True
        self._since = self._ticks()
