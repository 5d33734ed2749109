# The virtual token's USB console interrupt: what `micropython.kbd_intr` does on
# a port. While the interrupt char is set, a Ctrl-C from the host clears the
# bytes not read yet and schedules KeyboardInterrupt, which the VM raises at its
# next pending-exception check (a jump, a sleep); while it is off (-1), Ctrl-C
# is plain data. A KeyboardInterrupt already scheduled survives kbd_intr(-1).
#
# How the unix tier gets there (Linux only: termios values below are Linux's):
# - The USB port is a pty. With ISIG on, its line discipline turns a Ctrl-C
#   into SIGINT for this process (which holds the pty as its controlling
#   terminal, see Console.__init__); NOFLSH, since the kernel's flush would also
#   drop output the host has not read yet. The pty bridge on the host drops the
#   unread input instead (keyfob.sim.pty).
# - This unix port raises KeyboardInterrupt straight from its SIGINT handler
#   (MICROPY_ASYNC_KBD_INTR): at once, between any two bytecodes and even
#   inside a C call, not at the next check as a port does. Its handler is
#   installed only while the interrupt char is 3 (with -1 SIGINT kills).
# - So "on" has two steps. kbd_intr(3) (rom.py's before each file, or the
#   firmware's) makes it PENDING: ISIG still off, and a callback scheduled with
#   micropython.schedule, which the VM runs at its next check. There it turns
#   ISIG on (ON). A Ctrl-C that comes while PENDING is held by the bridge
#   (which reads this state from the pty: ISIG, VINTR) and sent once ON; if
#   kbd_intr(-1) comes first (or the file ends), the sim takes the held one
#   over (the bridge and the sim race for one unlink of KEYFOB_SIM_INTR) and
#   raises it from that kbd_intr(-1) call: as on a port, it survives.
# Left different from a port: once ON, an interrupt comes at once, even in a C
# call (a flood can so break the unix port's heap, seen); and a held one is
# raised inside kbd_intr(-1), where a port raises it at the next check after.
#
# The firmware calls micropython.kbd_intr itself; rom.py puts a stand-in for
# the micropython module in sys.modules whose kbd_intr is Console.kbd_intr
# while boot.py/main.py run (the unix REPL after them keeps its own).
import os
import sys

import micropython as _mp
import termios

import pending

_ISIG = 0x1
_NOFLSH = 0x80
_VINTR = 0
_VQUIT = 1
_VSUSP = 10
OFF = 0
PENDING = 1
ON = 2


class Micropython:
    """Stands in for the micropython module: kbd_intr is the sim's, the rest the port's."""

    def __init__(self):
        self.kbd_intr = _mp.kbd_intr

    def __getattr__(self, name):
        return getattr(_mp, name)


class Console:
    def __init__(self):
        self.state = OFF
        self.intr_path = os.getenv('KEYFOB_SIM_INTR') or None
        self._scheduled = False
        self._attrs = None
        try:
            attrs = termios.tcgetattr(0)
            # A session leader (the bridge starts the sim in a new session) that opens
            # a tty gets it as its controlling terminal: its ISIG signals come here.
            open('/proc/self/fd/0', 'rb').close()
        except OSError:
            attrs = None  # not on a pty (a script run by a test): Ctrl-C is never an interrupt
        if attrs is not None:
            # The state is in the pty settings, where the bridge reads it:
            # OFF = ISIG off, VINTR disabled; PENDING = ISIG off, VINTR 3; ON = ISIG on.
            cc = list(attrs[6])
            cc[_VQUIT] = b'\x00'  # no SIGQUIT on Ctrl-\ nor SIGTSTP on Ctrl-Z: not a board's
            cc[_VSUSP] = b'\x00'
            off = list(attrs)
            off[3] = (attrs[3] & ~_ISIG) | _NOFLSH
            off[6] = list(cc)
            off[6][_VINTR] = b'\x00'
            pend = list(off)
            pend[6] = list(cc)
            pend[6][_VINTR] = b'\x03'
            on = list(pend)
            on[3] = off[3] | _ISIG
            self._attrs = (off, pend, on)
            self._tty_off = lambda a=off: termios.tcsetattr(0, termios.TCSANOW, a)
        else:
            self._tty_off = lambda: None
        self._by_char = (self.off, self.on)
        self.module = Micropython()
        self._tty(OFF)
        _mp.kbd_intr(-1)
        self._take()  # nothing can be held for a process that just started

    def _tty(self, state):
        self.state = state
        if self._attrs is not None:
            termios.tcsetattr(0, termios.TCSANOW, self._attrs[state])

    def kbd_intr(self, c):
        # Only 3 turns it on: the unix port installs its SIGINT handler for Ctrl-C alone.
        # No jump on the way to off's effect: the VM runs _at_check at a jump (which
        # may turn Ctrl-C on), and a port's kbd_intr is one C call.
        self._by_char[c == 3]()

    def on(self):
        if self.state != OFF:
            return
        _mp.kbd_intr(3)
        self._tty(PENDING)
        if not self._scheduled:
            self._scheduled = True
            _mp.schedule(self._at_check, None)

    def _at_check(self, _):
        # Run by the VM at its next pending-exception check after on().
        self._scheduled = False
        if self.state == PENDING:
            self._tty(ON)  # last: an interrupt from here on is raised in the firmware

    def off(self):
        was = self.state
        self._tty_off()  # first: no SIGINT can come once SIG_DFL is back (no jump before it)
        self.state = OFF
        _mp.kbd_intr(-1)
        # Only a Ctrl-C that came while on is this call's: one the bridge held on a stale
        # look at a console that was off already is data (the bridge lets it go).
        if was != OFF and self._take():
            raise KeyboardInterrupt  # came while on and is pending: it survives kbd_intr(-1)
        pending.take()

    def _take(self):
        # The bridge held a Ctrl-C that came while PENDING: the sim takes it over,
        # unless the bridge has already let it go (one unlink decides).
        if self.intr_path is None:
            return False
        try:
            os.remove(self.intr_path)
        except OSError:
            return False
        return True

    def install(self):
        """Route the firmware's micropython.kbd_intr here (boot.py, main.py)."""
        sys.modules['micropython'] = self.module
        self.module.kbd_intr = self.kbd_intr

    def release(self):
        """Ctrl-C off and the port's own kbd_intr back, for the unix REPL that follows."""
        try:
            self.off()
        except KeyboardInterrupt:
            pass
        self.module.kbd_intr = _mp.kbd_intr


_console = None


def console():
    global _console
    if _console is None:
        _console = Console()
    return _console
