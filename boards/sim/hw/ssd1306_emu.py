# Emulated SSD1306 128x64 OLED controller on I2C (the virtual token's "silicon").
#
# Decodes the I2C write transactions as the SSD1306 datasheet (rev 1.1) describes them:
# section 8.1.5.2 (I2C write: control byte with Co and D/C#), section 9 (command table)
# and section 10 (command descriptions: addressing modes, windows, remaps).
#
# Written in the subset shared by MicroPython and CPython: the sim board uses it in the
# micropython process, host tests load it by file path under CPython.
#
# Model
# - The controller keeps one command decoder whose state survives transactions: a command
#   byte may arrive in one transaction and its argument bytes in the next ones (drivers that
#   send each byte with control 0x80, such as Adafruit's, do exactly that).
# - GDDRAM is 8 pages x 128 segments. The segment remap (0xA0/0xA1) applies when data is
#   *written* (datasheet 10.1.8: "only affects subsequent data input"), so the RAM is kept
#   in segment order in `_ram`. `gddram` is the same RAM as seen through the column address
#   pointer at write time, page-major like framebuf MONO_VLSB (index = page * 128 + column).
# - The COM scan direction (0xC0/0xC8), start line (0x40-0x7F), display offset (0xD3) and
#   multiplex ratio (0xA8) apply when the panel is scanned, i.e. in pixels().
# - The panel is the usual 128x64 module: SEG0 at the right edge, COM0 at the bottom, so the
#   common init sequence (A1, C8) shows framebuf column 0 / row 0 at the top left.
# - The panel lights only with the display on (0xAF) and a high voltage: the internal charge
#   pump enabled (0x8D 0x14), unless the module has an external VCC (external_vcc=True).
# - Scrolling commands are decoded (argument counts) and remembered, not animated.
#
# Frame log (log_frames(path)): every picture the panel shows is appended to a file as
# soon as the write transaction that made it ends, so a host can see it even if the
# process dies right after (a power cut). One record per changed picture, written with
# one unbuffered write (a SIGKILL cannot lose a record that was complete):
#   b'F <ticks_ms> <lit 0/1> <hex of the 1024 bytes of pixels()>\n'
# and one b'\nP <ticks_ms>\n' when logging starts (a power-on), whose leading newline
# ends a record torn by the previous process's death, so readers can skip it.
# A picture changes with GDDRAM data or a command that changes the scan (display on/off,
# invert, entire on, COM remap, start line, offset, multiplex, charge pump); the record is
# made only when pixels() or lit() actually differ from the last one logged.

_W = 128
_PAGES = 8
_ROWS = 64

# Argument bytes taken by each multi-byte command (datasheet section 9).
_ARGS = {
    0x20: 1,  # memory addressing mode
    0x21: 2,  # column address window (horizontal/vertical modes)
    0x22: 2,  # page address window (horizontal/vertical modes)
    0x23: 1,  # fade out / blink (SSD1306B)
    0x26: 6,  # continuous horizontal scroll setup, right
    0x27: 6,  # continuous horizontal scroll setup, left
    0x29: 5,  # continuous vertical and horizontal scroll setup
    0x2A: 5,
    0x2C: 6,  # one-column content scroll (SSD1306B)
    0x2D: 6,
    0x81: 1,  # contrast
    0x8D: 1,  # charge pump setting
    0xA3: 2,  # vertical scroll area
    0xA8: 1,  # multiplex ratio
    0xAD: 1,  # internal IREF selection (SSD1306B)
    0xD3: 1,  # display offset
    0xD5: 1,  # display clock divide ratio / oscillator frequency
    0xD6: 1,  # zoom in (SSD1306B)
    0xD9: 1,  # pre-charge period
    0xDA: 1,  # COM pins hardware configuration
    0xDB: 1,  # VCOMH deselect level
}

# Commands after which the shown picture may differ (the rest set addresses, timing, contrast).
_SCAN = (0x8D, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xAE, 0xAF, 0xD3)

MODE_HORIZONTAL = 0
MODE_VERTICAL = 1
MODE_PAGE = 2


class SSD1306Emu:
    def __init__(self, external_vcc=False):
        self.external_vcc = external_vcc
        self.gddram = bytearray(_W * _PAGES)
        self._ram = bytearray(_W * _PAGES)
        self.bytes_in = 0
        self.transactions = 0
        self.commands = 0
        self.bad_control = 0
        self.unknown = []
        self._log = None  # frame log file (log_frames)
        self._ticks = None
        self._dirty = False
        self._shown = None  # (lit, pixels) of the last logged record
        self.frames_logged = 0
        self.reset()

    def log_frames(self, path, ticks_ms=None):
        """Append every picture the panel shows to the file `path` (format at the top of
        this file); `ticks_ms()` stamps the records (0 without it). None/'' = no log."""
        if not path:
            return
        self._ticks = ticks_ms
        self._log = open(path, 'ab', 0)
        self._log.write(b'\nP %d\n' % self._now())
        self._shown = (self.lit(), self.pixels())

    def _now(self):
        if self._ticks is None:
            return 0
        return self._ticks()

    def _log_frame(self):
        self._dirty = False
        lit = self.lit()
        pix = self.pixels()
        if self._shown[0] == lit and self._shown[1] == pix:
            return
        self._shown = (lit, pix)
        import binascii
        self._log.write(b'F %d %d ' % (self._now(), 1 if lit else 0) + binascii.hexlify(pix) + b'\n')
        self.frames_logged += 1

    def reset(self):
        """Power-on reset values (datasheet section 9 / 10)."""
        self.display_on = False
        self.contrast = 0x7F
        self.inverted = False
        self.entire_on = False
        self.seg_remap = False
        self.com_remap = False
        self.start_line = 0
        self.offset = 0
        self.mux = 64
        self.com_pins = 0x12
        self.clock_div = 0x80
        self.precharge = 0x22
        self.vcomh = 0x20
        self.charge_pump = False
        self.scrolling = False
        self.scroll_setup = None
        self.mode = MODE_PAGE
        self.col_start = 0
        self.col_end = _W - 1
        self.page_start = 0
        self.page_end = _PAGES - 1
        self.col = 0
        self.page = 0
        self.page_col_start = 0
        self._cmd = -1
        self._args = bytearray(6)
        self._nargs = 0
        self._need = 0

    # -- I2C side ---------------------------------------------------------------
    def write(self, buf):
        """One I2C write transaction addressed to the panel (the bytes after the
        address byte): control byte(s) and payload, datasheet 8.1.5.2.
        An empty transaction is an address probe and changes nothing."""
        n = len(buf)
        self.bytes_in += n
        if n == 0:
            return
        self.transactions += 1
        i = 0
        while i < n:
            ctrl = buf[i]
            i += 1
            if ctrl & 0x3F:
                # the six low bits of a control byte must be 0
                self.bad_control += 1
            data = ctrl & 0x40
            if ctrl & 0x80:
                # Co = 1: exactly one byte follows, then another control byte
                if i < n:
                    if data:
                        self._dirty = True
                        self._data(buf[i])
                    else:
                        self._command(buf[i])
                    i += 1
            else:
                # Co = 0: the rest of the transaction is one stream
                if data:
                    if i < n:
                        self._dirty = True
                    while i < n:
                        self._data(buf[i])
                        i += 1
                else:
                    while i < n:
                        self._command(buf[i])
                        i += 1
        if self._dirty and self._log is not None:
            self._log_frame()

    # -- command decoder -----------------------------------------------------------
    def _command(self, b):
        if self._need:
            self._args[self._nargs] = b
            self._nargs += 1
            self._need -= 1
            if self._need == 0:
                self._execute(self._cmd, self._args)
                self._cmd = -1
            return
        self.commands += 1
        need = _ARGS.get(b, 0)
        if need:
            self._cmd = b
            self._nargs = 0
            self._need = need
        else:
            self._execute(b, None)

    def _execute(self, c, a):
        if c in _SCAN or 0x40 <= c <= 0x7F or 0xC0 <= c <= 0xCF:
            self._dirty = True
        if c < 0x10:
            # lower column start nibble (page addressing mode)
            self.page_col_start = (self.page_col_start & 0xF0) | c
            self.col = self.page_col_start
        elif c < 0x20:
            self.page_col_start = (self.page_col_start & 0x0F) | ((c & 0x0F) << 4)
            self.col = self.page_col_start
        elif c == 0x20:
            mode = a[0] & 0x03
            if mode != 3:  # 11b is invalid and ignored
                self.mode = mode
        elif c == 0x21:
            self.col_start = a[0] & 0x7F
            self.col_end = a[1] & 0x7F
            self.col = self.col_start
        elif c == 0x22:
            self.page_start = a[0] & 0x07
            self.page_end = a[1] & 0x07
            self.page = self.page_start
        elif c == 0x2E:
            self.scrolling = False
        elif c == 0x2F:
            self.scrolling = True
        elif c in (0x26, 0x27, 0x29, 0x2A, 0x2C, 0x2D):
            self.scroll_setup = (c, bytes(a[:_ARGS[c]]))
        elif 0x40 <= c <= 0x7F:
            self.start_line = c & 0x3F
        elif c == 0x81:
            self.contrast = a[0]
        elif c == 0x8D:
            self.charge_pump = bool(a[0] & 0x04)
        elif c == 0xA0 or c == 0xA1:
            self.seg_remap = c == 0xA1
        elif c == 0xA4 or c == 0xA5:
            self.entire_on = c == 0xA5
        elif c == 0xA6 or c == 0xA7:
            self.inverted = c == 0xA7
        elif c == 0xA8:
            m = a[0] & 0x3F
            if m >= 15:  # 0-14 are invalid
                self.mux = m + 1
        elif c == 0xAE or c == 0xAF:
            self.display_on = c == 0xAF
        elif 0xB0 <= c <= 0xB7:
            self.page = c & 0x07
        elif 0xC0 <= c <= 0xCF:
            self.com_remap = bool(c & 0x08)
        elif c == 0xD3:
            self.offset = a[0] & 0x3F
        elif c == 0xD5:
            self.clock_div = a[0]
        elif c == 0xD9:
            self.precharge = a[0]
        elif c == 0xDA:
            self.com_pins = a[0]
        elif c == 0xDB:
            self.vcomh = a[0]
        elif c in (0x23, 0xA3, 0xAD, 0xD6, 0xE3):
            pass  # accepted, no effect on the picture here (0xE3 is NOP)
        else:
            self.unknown.append(c)

    # -- data into GDDRAM ------------------------------------------------------------
    def _data(self, b):
        page = self.page
        col = self.col
        self.gddram[page * _W + col] = b
        if self.seg_remap:
            self._ram[page * _W + (_W - 1 - col)] = b
        else:
            self._ram[page * _W + col] = b
        mode = self.mode
        if mode == MODE_HORIZONTAL:
            if col >= self.col_end:
                self.col = self.col_start
                if page >= self.page_end:
                    self.page = self.page_start
                else:
                    self.page = page + 1
            else:
                self.col = col + 1
        elif mode == MODE_VERTICAL:
            if page >= self.page_end:
                self.page = self.page_start
                if col >= self.col_end:
                    self.col = self.col_start
                else:
                    self.col = col + 1
            else:
                self.page = page + 1
        else:
            # page mode: the column wraps to the column start, the page stays
            if col >= _W - 1:
                self.col = self.page_col_start
            else:
                self.col = col + 1

    # -- panel side --------------------------------------------------------------------
    def lit(self):
        """True when the panel emits light at all."""
        return self.display_on and (self.charge_pump or self.external_vcc)

    def _row_map(self):
        # For each physical row y (top = 0) the GDDRAM row shown there, or -1 (dark).
        # COM pin p sits at y = 63 - p. The scan drives output row r on COM r (C0) or on
        # COM mux-1-r (C8); output row r shows RAM row (r + start line + offset) mod 64.
        rows = []
        for y in range(_ROWS):
            p = _ROWS - 1 - y
            if self.com_remap:
                r = self.mux - 1 - p
            else:
                r = p
            if r < 0 or r >= self.mux:
                rows.append(-1)
            else:
                rows.append((r + self.start_line + self.offset) % _ROWS)
        return rows

    def pixels(self):
        """What the panel shows: 1024 bytes, MONO_VLSB layout (byte (y // 8) * 128 + x,
        bit y % 8), all 0 when dark, every pixel lit with 0xA5, inverted with 0xA7."""
        out = bytearray(_W * _PAGES)
        if not self.lit():
            return bytes(out)
        if self.entire_on:
            for i in range(len(out)):
                out[i] = 0xFF
            return bytes(out)
        ram = self._ram
        rows = self._row_map()
        identity = True
        for y in range(_ROWS):
            if rows[y] != y:
                identity = False
                break
        # physical x shows SEG 127 - x
        if identity:
            for page in range(_PAGES):
                base = page * _W
                for x in range(_W):
                    out[base + x] = ram[base + _W - 1 - x]
        else:
            for y in range(_ROWS):
                src = rows[y]
                if src < 0:
                    continue
                sbase = (src >> 3) * _W
                sbit = 1 << (src & 7)
                dbase = (y >> 3) * _W
                dbit = 1 << (y & 7)
                for x in range(_W):
                    if ram[sbase + _W - 1 - x] & sbit:
                        out[dbase + x] |= dbit
        if self.inverted:
            for i in range(len(out)):
                out[i] ^= 0xFF
            # rows not driven stay dark
            for y in range(_ROWS):
                if rows[y] < 0:
                    dbase = (y >> 3) * _W
                    mask = 0xFF ^ (1 << (y & 7))
                    for x in range(_W):
                        out[dbase + x] &= mask
        return bytes(out)
