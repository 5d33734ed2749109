# The virtual token's wiring: the I2C bus, the button pin, the USB port and
# the control link to the host harness (docs/internals.md, "The virtual token").
#
# SimI2C and SimPin are written in the subset shared by MicroPython and
# CPython. Silicon (the parts of one powered-on sim, made once per process by
# silicon()) only runs under the MicroPython unix port.
#
# Control link: the sim connects to the unix socket KEYFOB_SIM_CTRL (the host
# listens) and serves line requests only inside idle(), one at a time:
#   press <ms> | hold | release       -> ok   (the button; an edge ends idle())
#   idle?                             -> ok idle (deferred while a timed press is down)
#   screen?                           -> ok <on> <contrast> <inverted> <hex of 1024 bytes>
#   clock <unix> <ppm> <osf>          -> ok   (the DS3231, battery-backed)
#   clock?                            -> ok <unix> <ppm> <osf>
#   unplug <addr> | plug <addr>       -> ok   (a part off / back on the bus: a loose wire, I2C errors)
#   break <addr>                      -> ok   (the next transaction to it raises RuntimeError: a bug)
#   stats?                            -> ok <i2c bytes> <i2c transactions> <oled bytes>
#                                        <ticks_ms now> <ticks_ms of the last press request>
#                                        <ticks_ms of the last write to the OLED>  (for the bench)
#   asleep?                           -> ok 1 in deep_sleep(), ok 0 otherwise
# A request that makes a button edge ends idle() with 'button'; the requests
# behind it wait for the next idle() call.
#
# USB: bytes from the host arrive on stdin (a pty in raw mode). A Ctrl-C while
# the interrupt char is set never arrives as data: it interrupts the firmware
# wherever it is, as on a board (console.py). Without a listener stdin is left
# alone (bytes wait, as in a board's buffer, for the REPL). When the firmware
# listens (usb_listen(True)), idle() returns 'usb' and the firmware reads with
# usb_read().
#
# Deep sleep: by default deep_sleep() returns at the wake-up. With
# KEYFOB_SIM_SLEEP=reset it ends as on an ESP32: the wake-up is a reset. The
# process writes why to the wake file (KEYFOB_SIM_WAKE: `button <ms still
# pressed, -1 held>`) and kills itself with SIGUSR1; the pty bridge starts the
# next process, whose woke_by_button() is then true (boot.py and main.py run
# again, as at every wake of an ESP32).
import errno
import os
import sys

try:
    from micropython import const
    from time import ticks_add, ticks_diff
    from time import ticks_ms as _host_ms
except ImportError:  # CPython
    import time as _time

    def const(x):
        return x

    def _host_ms():
        return int(_time.monotonic() * 1000)

    def ticks_add(t, d):
        return t + d

    def ticks_diff(a, b):
        return a - b


# The chip's clock (ticks_ms of the board, the button, idle(), the frame log): the host's
# monotonic ms less the time this process waited for a CPU (runnable but not running: the second
# field of /proc/self/schedstat, in ns). A chip runs all the time; a sim process on a loaded host
# can sit in the run queue for 100 ms, and in host time a timed press (80 ms) then ends before
# the firmware, descheduled, has debounced it (30 ms): the press is lost, and the host sees the
# token idle with no code shown. In this clock the press lasts 80 ms of the time the firmware ran,
# as the Pico tier's emulated time does. Without schedstat (not Linux): the host's clock.
try:
    _sched = open('/proc/self/schedstat')
except OSError:
    _sched = None
_last_ms = None


def _waited_ms():
    try:
        _sched.seek(0)
        return int(_sched.read().split()[1]) // 1000000
    except (OSError, ValueError, IndexError):
        return 0


def ticks_ms():
    global _last_ms
    now = _host_ms()
    if _sched is not None:
        now = ticks_add(now, -_waited_ms())
    if _last_ms is not None and ticks_diff(now, _last_ms) < 0:
        now = _last_ms  # the two readings are ms apart: never a step back
    _last_ms = now
    return now


ADDR_OLED = const(0x3C)
OLED_ADDRS = (0x3C, 0x3D)  # SA0 low / high
ADDR_DS3231 = const(0x68)
_AF_UNIX = const(1)


class SimI2C:
    """machine.I2C-like bus: each address maps to a device with write(buf) (one write
    transaction) and optionally readinto(buf) (one read transaction)."""

    def __init__(self, devices=None, nack_errno=errno.ENODEV):
        self.devices = dict(devices or {})
        self.nack_errno = nack_errno
        self.bytes = 0  # bytes on the wire, address bytes included
        self.transactions = 0
        self.oled_at = 0  # ticks_ms() of the last transaction to the OLED (the bench's "on screen")
        self._cat = bytearray(64)  # writevto joins its buffers here (grown once)
        self.unplugged = {}  # devices pulled off the bus by the host (`unplug <addr>`)
        self.broken = set()  # addresses whose next transaction fails oddly (`break <addr>`)
        self.oled_addr = ADDR_OLED
        self.on_transaction = None  # called at every transaction (the sim: pending.take)

    def _dev(self, addr, extra):
        if self.on_transaction is not None:
            self.on_transaction()
        self.transactions += 1
        self.bytes += 1
        if addr == self.oled_addr:
            self.oled_at = ticks_ms()
        if addr in self.broken:
            # Not an I2C error: stands for a firmware bug met while talking to the part.
            self.broken.discard(addr)
            raise RuntimeError('sim: broken part at 0x%02x' % addr)
        d = self.devices.get(addr)
        if d is None:
            raise OSError(self.nack_errno)  # address not acknowledged
        self.bytes += extra
        return d

    def _read(self, d, buf):
        if hasattr(d, 'readinto'):
            d.readinto(buf)
        else:
            for i in range(len(buf)):
                buf[i] = 0

    def scan(self):
        # machine.I2C.scan probes 0x08-0x77 with one address byte each
        if self.on_transaction is not None:
            self.on_transaction()
        found = []
        for addr in range(0x08, 0x78):
            self.transactions += 1
            self.bytes += 1
            if addr in self.devices:
                found.append(addr)
        return found

    def writeto(self, addr, buf, stop=True):
        self._dev(addr, len(buf)).write(buf)
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        n = 0
        for b in vector:
            n += len(b)
        if len(self._cat) < n:
            self._cat = bytearray(n)
        i = 0
        for b in vector:
            self._cat[i:i + len(b)] = b
            i += len(b)
        self._dev(addr, n).write(memoryview(self._cat)[:n])
        return n

    def readfrom_into(self, addr, buf, stop=True):
        self._read(self._dev(addr, len(buf)), buf)

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf)
        return bytes(buf)

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        d = self._dev(addr, 2 + len(buf))  # register byte, repeated-start address
        d.write(bytes((memaddr,)))
        self.transactions += 1
        self._read(d, buf)

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        d = self._dev(addr, 1 + len(buf))
        d.write(bytes((memaddr,)) + bytes(buf))


class SimPin:
    """The button: a machine.Pin-like input with pull-up, 0 while pressed."""

    IN = 1
    PULL_UP = 1

    def __init__(self, held=False):
        self._held = held
        self._until = None  # ticks_ms() when a timed press lets go

    def _timed(self):
        if self._until is not None and ticks_diff(self._until, ticks_ms()) <= 0:
            self._until = None
        return self._until is not None

    def value(self, v=None):
        return 0 if (self._held or self._timed()) else 1

    __call__ = value

    def press(self, ms):
        self._until = ticks_add(ticks_ms(), ms)

    def hold(self):
        self._held = True

    def release(self):
        self._held = False
        self._until = None

    def timed_left(self):
        """ms until a timed press lets go, or None."""
        if not self._timed():
            return None
        return ticks_diff(self._until, ticks_ms())


class Control:
    """Client end of the host's control socket (None path: not connected)."""

    def __init__(self, path):
        self.sock = None
        self.rx = b''
        if not path:
            return
        import socket
        import struct
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(struct.pack('H', _AF_UNIX) + path.encode() + b'\x00')
        except OSError as e:
            s.close()
            print('sim: no control link:', e)
            return
        self.sock = s

    def feed(self):
        try:
            data = self.sock.recv(512)
        except OSError:
            data = b''
        if not data:
            self.close()
            return False
        self.rx += data
        return True

    def peek(self):
        i = self.rx.find(b'\n')
        if i < 0:
            return None
        return self.rx[:i].decode().strip()

    def pop(self):
        i = self.rx.find(b'\n')
        self.rx = self.rx[i + 1:]

    def reply(self, text):
        if self.sock is not None:
            try:
                self.sock.sendall((text + '\n').encode())
            except OSError:
                self.close()

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Silicon:
    """Everything soldered to the virtual token, made once per power-on."""

    def __init__(self):
        import select
        import ds3231_emu
        import ssd1306_emu
        self._select = select
        self.oled = ssd1306_emu.SSD1306Emu()
        # KEYFOB_SIM_FRAMELOG=<path>: every picture the panel shows is appended there at once
        # (ssd1306_emu.py, "Frame log"), so a host sees codes shown just before a power cut.
        self.oled.log_frames(os.getenv('KEYFOB_SIM_FRAMELOG'), ticks_ms)
        self.ds3231 = ds3231_emu.DS3231Emu(os.getenv('KEYFOB_SIM_STATE') or None)
        # KEYFOB_SIM_OLED_ADDR=0x3d: a module with its address jumper moved;
        # KEYFOB_SIM_ABSENT=0x68,...: parts not fitted on this board.
        oled_addr = int(os.getenv('KEYFOB_SIM_OLED_ADDR') or '0x3c', 0)
        self.i2c = SimI2C({oled_addr: self.oled, ADDR_DS3231: self.ds3231})
        self.i2c.oled_addr = oled_addr
        for a in (os.getenv('KEYFOB_SIM_ABSENT') or '').split(','):
            if a.strip():
                self.i2c.devices.pop(int(a, 0), None)
        import pending
        self._take_held = pending.take  # an interrupt held during a flash operation
        self.i2c.on_transaction = pending.take
        self.button = SimPin(held=os.getenv('KEYFOB_SIM_HOLD') == '1')
        hold_ms = os.getenv('KEYFOB_SIM_HOLD_MS')
        if hold_ms:
            # Held at power-up for this long, then let go by itself: the firmware
            # may be polling the pin (not in idle()) when a finger lifts.
            self.button.press(int(hold_ms))
        self.wake_path = os.getenv('KEYFOB_SIM_WAKE')
        self.sleep_resets = os.getenv('KEYFOB_SIM_SLEEP') == 'reset' and bool(self.wake_path)
        self.woke = self._woken()
        self.asleep = False
        self.ctrl = Control(os.getenv('KEYFOB_SIM_CTRL'))
        self.press_at = 0  # ticks_ms() of the last press request (the bench)
        self.listen = False
        self.stdin = sys.stdin.buffer
        self._poll = select.poll()
        self._stdin_in_poll = False
        if self.ctrl.sock is not None:
            self._poll.register(self.ctrl.sock, select.POLLIN)
        self._peek = select.poll()  # stdin alone, polled with timeout 0
        self._peek.register(sys.stdin, select.POLLIN)
        self._ctrl_peek = select.poll()  # the control link alone (sleep_ms: a finger lifting)
        if self.ctrl.sock is not None:
            self._ctrl_peek.register(self.ctrl.sock, select.POLLIN)

    # -- USB -----------------------------------------------------------------------

    def set_kbd_intr(self, on):
        import micropython  # the console's, while boot.py/main.py run (rom.py)
        micropython.kbd_intr((-1, 3)[bool(on)])  # no jump before it takes effect (console.py)

    def _stdin_ready(self, ms=0):
        for _, ev in self._peek.poll(ms):
            if ev & (self._select.POLLHUP | self._select.POLLERR):
                raise SystemExit('sim: USB host gone')
            return True
        return False

    def _read_byte(self):
        b = self.stdin.read(1)
        if not b:
            raise SystemExit('sim: USB host gone')
        return b[0]

    def usb_read(self, n):
        """Up to n bytes that have arrived (never blocks); b'' if none."""
        self._take_held()
        out = bytearray()
        while len(out) < n and self._stdin_ready():
            out.append(self._read_byte())
        return bytes(out)

    def usb_write(self, buf):
        sys.stdout.buffer.write(buf)

    def _watch_stdin(self, on):
        if on != self._stdin_in_poll:
            if on:
                self._poll.register(sys.stdin, self._select.POLLIN)
            else:
                self._poll.unregister(sys.stdin)
            self._stdin_in_poll = on

    # -- waiting -----------------------------------------------------------------------

    def sleep_ms(self, ms):
        import time
        self._take_held()
        self._finger()
        time.sleep_ms(ms)

    def _finger(self):
        # A button held by the host is let go (or pressed) whatever the firmware
        # is doing, as a finger is: 'hold' and 'release' at the head of the
        # control queue are taken in sleep_ms too (the firmware polls the pin
        # there while it waits for a press to end). Everything else waits for idle().
        c = self.ctrl
        if c.sock is None:
            return
        if c.peek() is None and self._ctrl_peek.poll(0):
            c.feed()
        line = c.peek()
        if line == 'release' or line == 'hold':
            c.pop()
            c.reply(self._answer(line))

    def idle(self, ms):
        self._take_held()
        deadline = ticks_add(ticks_ms(), ms)
        level = self.button.value()
        while True:
            if self._serve(level):
                return 'button'
            if self.button.value() != level:
                return 'button'
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                return 'timeout'
            t = self.button.timed_left()
            if t is not None and t + 1 < left:
                left = t + 1
            self._watch_stdin(self.listen)
            for obj, ev in self._poll.poll(left):
                if self.ctrl.sock is not None and obj is self.ctrl.sock:
                    if not self.ctrl.feed():
                        # The harness closes the link only after killing this process:
                        # it is gone, so power goes too (no orphaned sims).
                        raise SystemExit('sim: host harness gone')
                elif self.listen:
                    if ev & (self._select.POLLHUP | self._select.POLLERR):
                        raise SystemExit('sim: USB host gone')
                    return 'usb'

    def _serve(self, level):
        """Answer queued control requests; True when one made a button edge."""
        c = self.ctrl
        while True:
            line = c.peek()
            if line is None:
                return False
            if line == 'idle?' and self.button.timed_left() is not None:
                return False  # the firmware is still handling a press: ask again later
            c.pop()
            c.reply(self._answer(line))
            if self.button.value() != level:
                return True

    def _answer(self, line):
        parts = line.split()
        if not parts:
            return 'err empty'
        cmd = parts[0]
        try:
            if cmd == 'press':
                self.button.press(int(parts[1]) if len(parts) > 1 else 80)
                self.press_at = ticks_ms()
            elif cmd == 'hold':
                self.button.hold()
            elif cmd == 'release':
                self.button.release()
            elif cmd == 'idle?':
                return 'ok idle'
            elif cmd == 'screen?':
                import binascii
                o = self.oled
                return 'ok %d %d %d %s' % (o.display_on, o.contrast, o.inverted,
                                           binascii.hexlify(o.pixels()).decode())
            elif cmd == 'clock':
                self.ds3231.set_clock(float(parts[1]), float(parts[2]), parts[3] not in ('0', 'False'))
            elif cmd == 'unplug':  # pull a part off the I2C bus (a loose wire)
                addr = int(parts[1], 0)
                self.i2c.unplugged[addr] = self.i2c.devices.pop(addr)
            elif cmd == 'break':  # the next transaction to the part raises a non-I2C error
                self.i2c.broken.add(int(parts[1], 0))
            elif cmd == 'plug':
                addr = int(parts[1], 0)
                self.i2c.devices[addr] = self.i2c.unplugged.pop(addr)
            elif cmd == 'clock?':
                d = self.ds3231
                return 'ok %r %r %d' % (d.unix_time(), d.ppm, d.osf)
            elif cmd == 'asleep?':
                return 'ok %d' % self.asleep
            elif cmd == 'stats?':
                return 'ok %d %d %d %d %d %d' % (self.i2c.bytes, self.i2c.transactions,
                                                 getattr(self.oled, 'bytes_in', 0), ticks_ms(),
                                                 self.press_at, self.i2c.oled_at)
            else:
                return 'err unknown request ' + cmd
        except (IndexError, ValueError, KeyError) as e:
            return 'err bad request: ' + repr(e)
        return 'ok'

    def deep_sleep(self):
        # Asleep: no USB reader, only the button wakes it (and a Ctrl-C while the
        # interrupt is on). What the host sent meanwhile is lost, as on a chip whose
        # UART was off.
        listen = self.listen
        self.listen = False
        self.asleep = True
        try:
            while self.idle(3600000) != 'button':
                pass
        finally:
            self.asleep = False
            self.listen = listen
        if self.sleep_resets:
            self._wake_reset()
        while self._stdin_ready():
            self._read_byte()

    def _wake_reset(self):
        # The ESP32's wake-up from deep sleep is a reset (see the top of this file).
        import console
        console.console().off()  # no SIGINT now: it would also hit the shell below
        while self._stdin_ready():
            self._read_byte()
        left = self.button.timed_left()
        if left is None:
            left = -1 if self.button.value() == 0 else 0
        with open(self.wake_path, 'w') as f:
            f.write('button %d\n' % left)
        while True:
            os.system('kill -USR1 $PPID')  # $PPID of the shell: this process

    def _woken(self):
        # This start is a deep-sleep wake-up by the button: the wake file says so (once).
        if not self.wake_path:
            return False
        try:
            with open(self.wake_path) as f:
                why = f.read().split()
            os.remove(self.wake_path)
        except OSError:
            return False
        if len(why) < 2 or why[0] != 'button':
            return False
        left = int(why[1])
        if left < 0:
            self.button.hold()
        elif left > 0:
            self.button.press(left)
        return True


_silicon = None


def silicon():
    """The parts of this powered-on sim (one set per process, like one board)."""
    global _silicon
    if _silicon is None:
        _silicon = Silicon()
    return _silicon
