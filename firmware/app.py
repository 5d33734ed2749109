# app.py: the token's state machine.
#
#   boot -> (button held? factory-reset offer) -> idle
#   idle --press--> store (HOTP: next counter durable first) -> otp -> display
#        --long press--> serial screen
#        --tick--> countdown bar (TOTP) / display off after a while
#        --usb--> provisioning requests (proto)
#
# One data path per press, no back-and-forth: store, then otp, then display.
# Hardware comes from the board object; nothing here imports machine.
from micropython import const

import gc
import time

import button
import clock
import ds3231
import otp
import proto
import ssd1306
import store
import ui

VERSION = '0.1.0'
_BOOT_REPORT_MS = const(3000)
_RESET_HOLD_MS = const(5000)
_LIFT_MS = const(10000)  # a reset waits this long for the button to be let go
_TICK_MS = const(1000)
_FOREVER_MS = const(60000)
_FRAME_POLL_MS = const(200)


def scrub_ram():
    # The old key and record are garbage now, but garbage keeps its bytes
    # until reused: fill the free heap with zeros before the REPL reopens.
    gc.collect()
    blocks = []
    size = 4096
    while size >= 16:
        try:
            blocks.append(bytearray(size))
        except MemoryError:
            size //= 2
    blocks = None
    gc.collect()


class _NoPanel:
    # Stands in for the OLED when the boot scan found none: the token still
    # works over USB (provisioning, INFO) and says so on the console.
    width = 128
    height = 64
    on = False

    def __getattr__(self, name):
        return self._nothing

    def _nothing(self, *args):
        return None


class App:
    def __init__(self, board, off_after_ms=15000, sleep_after_ms=30000):
        self.board = board
        self.off_after_ms = off_after_ms  # display off after this long (saves the panel)
        # Deep sleep this long after the last press or USB request, on boards
        # that can (0: never). Only a locked token sleeps: an open one is on a
        # laptop being set up, and a sleeping chip does not answer USB.
        self.sleep_after_ms = sleep_after_ms
        self._active_at = board.ticks_ms()
        found = board.found
        self.faults = []  # parts that failed after the boot scan found them (INFO 'faults')
        self.oled_addr = getattr(board, 'oled_addr', 0x3C)
        oled = _NoPanel()
        if found.get('oled'):
            # The 1 KB frame first, before file reads leave the heap in pieces.
            try:
                oled = ssd1306.SSD1306(board.i2c, addr=self.oled_addr)
            except OSError as e:  # came loose between the scan and the first command
                self.fault('oled', e)
        self.ui = ui.Ui(oled, off_after_ms, ticks_ms=board.ticks_ms)
        self.store = store.Store()
        rtc_chip = ds3231.DS3231(board.i2c) if found.get('ds3231') else None
        self.clock = clock.Clock(board.rtc, rtc_chip)
        # How far the time source may drift (SETTIME bound, drift learning); a
        # chip clock the board calls unfit (None) refuses time mode.
        self.clock.max_ppm = clock.DS3231_PPM if rtc_chip else getattr(board, 'rtc_ppm', None)
        self.button = button.Button(board.button, board.ticks_ms, board.sleep_ms)
        self.key = None
        if self.store.wiping:
            # A reset was cut short (store.py, wipe): finish its scrub before
            # anything else runs. Ctrl-C is still off (boot.py) and the store
            # reads as locked until the scrub is complete.
            self._wipe()
        self.step_shown = -1  # TOTP step of the code on screen, -1 = none
        # The provisioning link on the USB serial port (docs/protocol.md).
        self.link = proto.Decoder()
        self.fw_version = VERSION
        self.board_name = board.name
        listen = getattr(board, 'usb_listen', None)
        if listen is not None:
            listen(True)
        self._apply_state()

    # -- faults --------------------------------------------------------------
    # A part that stops answering is reported (console, INFO 'faults') and the
    # token goes on without it: a locked token that restarted would loop for
    # ever. The code lives in fault.py, loaded only when it is needed.

    def fault(self, part, err):
        import fault
        fault.report(self, part, err)

    def _i2c_error(self, err):
        import fault
        fault.i2c_error(self, err, _NoPanel)

    # -- state ---------------------------------------------------------------

    def _apply_state(self):
        # Make the RAM state follow the store: key, drift correction, REPL lock.
        s = self.store
        if self.key is not None:
            self.key.wipe()
            self.key = None
        if s.provisioned:
            self.key = otp.Hotp(s.seed, s.algorithm)
        proto.apply_drift(s, self.clock)
        set_intr = getattr(self.board, 'set_kbd_intr', None)
        if set_intr is not None:
            set_intr(not s.locked)

    # -- screens -------------------------------------------------------------

    def press(self):
        """A short press: show the next code (or why there is none)."""
        s = self.store
        if not s.provisioned:
            self.ui.show_not_provisioned()
            return
        if s.mode == 'hotp':
            try:
                counter = s.reserve_next_counter()  # durable before shown
            except OSError:
                self.ui.show_message(('Flash error',))
                return
            self.step_shown = -1
            self.ui.show_code(self.key.code(counter, s.digits), s.digits)
            return
        self.show_totp()

    def show_totp(self, tick=False):
        """The current TOTP code; on a tick, only the bar unless the step changed."""
        s = self.store
        if self.clock.lost():
            # Never show a code from a clock that stopped.
            self.step_shown = -1
            self.ui.show_clock_lost()
            return
        step, left = self.clock.step_left(s.period)
        if tick and step == self.step_shown:
            self.ui.show_countdown(left, s.period)
            return
        self.step_shown = step
        self.ui.show_code(self.key.code(step, s.digits), s.digits, (left, s.period))

    def tick(self):
        """Once a second while the screen is on: bar, next TOTP code, off."""
        if self.step_shown >= 0 and self.ui.is_on:
            self.show_totp(tick=True)
        if self.ui.tick(self.board.ticks_ms()):
            self.step_shown = -1

    def long_press(self):
        s = self.store
        if not s.provisioned:
            self.ui.show_not_provisioned()
        else:
            self.ui.show_serial(s.serial, s.locked)
        self.step_shown = -1

    # -- factory reset at power-up ---------------------------------------------

    def boot_reset_offer(self):
        """Button held at power-up: hold 5 s more to wipe the token.

        Returns True when the offer was made (the screen then says how it ended)."""
        if not self.button.held_at_boot():
            return False
        self.ui.show_hold_to_reset()
        if not self.button.held(self.board.ticks_ms(), _RESET_HOLD_MS):
            self.ui.show_message(('Reset', 'cancelled'))
            self.button.wait_up()
            return True
        try:
            self.factory_reset()
        except OSError:
            pass  # the screen says so; the next boot tries again
        self.button.wait_up()
        return True

    def factory_reset(self, report=None):
        # The same path as a RESET request: wipe and scrub the flash (durable
        # intent first, store.py), then the RAM; only then reopen the REPL.
        # report(step, done, total): progress for the host. Raises OSError when
        # the flash failed (the token stays locked; a reset again finishes it).
        if not self._wipe(report):
            raise OSError(5)  # EIO
        self.notify('reset')
        self._wait_lift(report)

    def _wait_lift(self, report):
        # The finger that confirmed the reset may still be down when the wipe
        # ends: that is the end of the gesture, not a press of the wiped token.
        b = self.board
        start = b.ticks_ms()
        sec = -1
        while b.button.value() == 0:
            el = time.ticks_diff(b.ticks_ms(), start)
            if el >= _LIFT_MS:
                return  # held on and on: from here it is a press
            if report is not None and el // 1000 != sec:
                sec = el // 1000
                report('release', sec, _LIFT_MS // 1000)
            b.idle(20)  # where the virtual token takes the host's "release"
            b.sleep_ms(10)  # a chip's idle() returns at once while the button is down

    # -- USB provisioning (proto calls back into these) ---------------------------

    def usb(self):
        b = self.board
        req = self.link.feed(b.usb_read(64))
        while req is not None:
            b.usb_write(proto.handle(req, self))
            req = self.link.feed(b'')

    def usb_expire(self):
        # A frame that started but never finished gets its error reply.
        req = self.link.expire()
        if req is not None:
            self.board.usb_write(proto.handle(req, self))

    def _wipe(self, report=None):
        # Store.wipe(): records, then zeros over all free flash. Slow: the
        # screen says so, with the share done. -> True when it completed.
        ui = self.ui
        shown = [0]
        ui.show_message(('Wiping 0%', 'keep power on'))

        def progress(done, total):
            pct = done * 100 // total if total else 0
            if pct // 10 != shown[0]:
                shown[0] = pct // 10
                ui.show_message(('Wiping %d%%' % pct, 'keep power on'))
            if report is not None:
                report('scrub', done, total)

        try:
            self.store.wipe(progress)
        except OSError:
            ui.show_message(('Wipe failed', 'locked: reset', 'again'))
            return False
        return True

    def notify(self, event):
        if event == 'reset':
            # The flash is wiped; now the old key and records in RAM.
            if self.key is not None:
                self.key.wipe()
                self.key = None
            self.store.load()
            scrub_ram()
        if event in ('provisioned', 'locked', 'reset'):
            self._apply_state()
        if event == 'provisioned':
            self.ui.show_message(('Provisioned', self.store.serial))
        elif event == 'reset-wait':
            self.ui.show_usb_reset()
        elif event == 'reset-refused':
            self.ui.show_message(('Reset', 'refused'))
        elif event == 'reset-cancelled':
            self.ui.show_message(('Reset', 'cancelled'))
        elif event == 'reset':
            self.ui.show_message(('Token', 'wiped'))
        elif event == 'locked':
            self.ui.show_locked()
        self.step_shown = -1

    def send(self, buf):
        # A PROGRESS frame while a request is being handled (proto).
        self.board.usb_write(buf)

    def reset_gesture(self, wait_ms, hold_ms, report):
        # Physical presence for RESET: the button goes down within wait_ms and
        # stays down through a hold_ms countdown on the screen; letting go
        # cancels at once. -> 'held', 'cancelled' or 'none'. Waits through
        # board.idle(), the only place where the virtual token takes button
        # requests from the host; report(step, done, total) once a second.
        b = self.board
        btn = self.button
        start = b.ticks_ms()
        sec = -1
        while True:
            el = time.ticks_diff(b.ticks_ms(), start)
            if el >= wait_ms:
                return 'none'
            if el // 1000 != sec:
                sec = el // 1000
                report('wait', sec, wait_ms // 1000)
            event = b.idle(min(wait_ms - el, 1000 - el % 1000))
            if event == 'button' and btn.pressed():
                break
            if event == 'usb':
                b.usb_read(64)  # one request at a time: bytes sent meanwhile are dropped
        down = btn.down_at
        n = hold_ms // 1000
        for s in range(n):
            self.ui.show_reset_countdown(n - s)
            report('hold', s, n)
            if not btn.held(down, (s + 1) * 1000):
                return 'cancelled'
        report('hold', n, n)
        return 'held'

    # -- deep sleep -----------------------------------------------------------------

    def _sleep_in(self):
        # ms until the token may deep-sleep, or -1 when it must stay awake.
        s = self.store
        if not self.sleep_after_ms or not s.provisioned or not s.locked or self.ui.is_on:
            return -1
        if self.link.busy() or getattr(self.board, 'deep_sleep', None) is None:
            return -1
        return max(0, self.sleep_after_ms - time.ticks_diff(self.board.ticks_ms(), self._active_at))

    def sleep(self):
        # A board that resets on wake-up never returns from deep_sleep() (the
        # next start sees woke_by_button()); the sim returns at the wake-up.
        self.ui.off()
        self.step_shown = -1
        self.board.deep_sleep()
        self.on_button(woke=True)

    def on_button(self, woke=False):
        # The press that woke the chip counts even if it is already over.
        self._active_at = self.board.ticks_ms()
        self.ui.off_after_ms = self.off_after_ms
        if woke or self.button.pressed():
            self.press()
            if self.button.wait_release() == 'long':
                self.long_press()
                self.button.wait_up()

    # -- main loop -----------------------------------------------------------------

    def run(self):
        b = self.board
        print('keyfob', VERSION, 'on', b.name, 'found:', b.found)
        if b.found.get('oled'):
            # SH1106 (1.3-inch) modules answer at the same addresses and cannot be
            # told apart reliably: say what is driven (README, "Hardware").
            print('keyfob: display: SSD1306 128x64 at 0x%02x (SH1106 not supported)' % self.oled_addr)
        woke = getattr(b, 'woke_by_button', None)
        try:
            if woke is not None and woke():
                self.on_button(woke=True)
            elif not self.boot_reset_offer():
                self.ui.show_boot_report(b.found)
                self.ui.off_after_ms = _BOOT_REPORT_MS
        except OSError as e:
            self._i2c_error(e)
        while True:
            if self.link.busy():
                wait = _FRAME_POLL_MS
            elif self.ui.is_on:
                wait = _TICK_MS
            else:
                wait = self._sleep_in()
                if wait == 0:
                    self.sleep()
                    continue
                if wait < 0 or wait > _FOREVER_MS:
                    wait = _FOREVER_MS
            event = b.idle(wait)
            try:
                if event == 'button':
                    self.on_button()
                elif event == 'usb':
                    self._active_at = b.ticks_ms()
                    self.usb()
                else:
                    self.usb_expire()
                    self.tick()
            except OSError as e:
                self._i2c_error(e)


def run(board, **options):
    App(board, **options).run()
