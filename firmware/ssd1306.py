# Small SSD1306 OLED driver for I2C (command names from the SSD1306 datasheet, section 9).
#
# The frame is a framebuf.FrameBuffer (MONO_VLSB) over one bytearray made once; byte 0 of
# that bytearray is the I2C control byte 0x40 (Co=0, D/C#=1), so a full frame is one
# transaction without copying. show_region() sends only a rectangle of pages x columns
# (horizontal addressing inside a column/page window), which is what the countdown uses.

from micropython import const
import framebuf

SET_CONTRAST = const(0x81)
SET_ENTIRE_ON = const(0xA4)
SET_NORM_INV = const(0xA6)
SET_DISP = const(0xAE)
SET_MEM_ADDR = const(0x20)
SET_COL_ADDR = const(0x21)
SET_PAGE_ADDR = const(0x22)
SET_DISP_START_LINE = const(0x40)
SET_SEG_REMAP = const(0xA0)
SET_MUX_RATIO = const(0xA8)
SET_COM_OUT_DIR = const(0xC0)
SET_DISP_OFFSET = const(0xD3)
SET_COM_PIN_CFG = const(0xDA)
SET_DISP_CLK_DIV = const(0xD5)
SET_PRECHARGE = const(0xD9)
SET_VCOM_DESEL = const(0xDB)
SET_CHARGE_PUMP = const(0x8D)

_CTRL_CMD = const(0x00)  # Co=0, D/C#=0: the rest of the transaction is commands
_CTRL_CMD1 = const(0x80)  # Co=1, D/C#=0: one command byte
_CTRL_DATA = const(0x40)  # Co=0, D/C#=1: the rest of the transaction is GDDRAM data


class SSD1306(framebuf.FrameBuffer):
    def __init__(self, i2c, width=128, height=64, addr=0x3C, external_vcc=False):
        self.i2c = i2c
        self.addr = addr
        self.width = width
        self.height = height
        self.pages = height // 8
        self.external_vcc = external_vcc
        self._buf = bytearray(1 + self.pages * width)
        self._buf[0] = _CTRL_DATA
        self._mv = memoryview(self._buf)
        self.buffer = self._mv[1:]
        super().__init__(self.buffer, width, height, framebuf.MONO_VLSB)
        # narrow panels use the middle columns of the 128-column RAM
        self._col0 = (128 - width) // 2 if width < 128 else 0
        self._cmd1 = bytearray(2)
        self._cmd1[0] = _CTRL_CMD1
        # one command transaction: control, 0x21 c0 c1, 0x22 p0 p1
        self._win = bytearray(7)
        self._win[0] = _CTRL_CMD
        self._win[1] = SET_COL_ADDR
        self._win[4] = SET_PAGE_ADDR
        self._vec = [b"\x40", None]
        self._line = bytearray(1 + width)
        self._line[0] = _CTRL_DATA
        self._linev = memoryview(self._line)
        self._writev = hasattr(i2c, "writevto")
        self.on = False
        self.init_display()

    def write_cmd(self, cmd):
        self._cmd1[1] = cmd
        self.i2c.writeto(self.addr, self._cmd1)

    def init_display(self):
        ext = self.external_vcc
        seq = bytes(
            (
                _CTRL_CMD,
                SET_DISP,  # display off while configuring
                SET_MEM_ADDR,
                0x00,  # horizontal addressing
                SET_DISP_START_LINE | 0x00,
                SET_SEG_REMAP | 0x01,  # column 127 on SEG0
                SET_MUX_RATIO,
                self.height - 1,
                SET_COM_OUT_DIR | 0x08,  # scan COM[N-1] to COM0
                SET_DISP_OFFSET,
                0x00,
                SET_COM_PIN_CFG,
                0x02 if self.width > 2 * self.height else 0x12,
                SET_DISP_CLK_DIV,
                0x80,
                SET_PRECHARGE,
                0x22 if ext else 0xF1,
                SET_VCOM_DESEL,
                0x30,
                SET_CONTRAST,
                0xFF,
                SET_ENTIRE_ON,  # output follows RAM
                SET_NORM_INV,  # not inverted
                SET_CHARGE_PUMP,
                0x10 if ext else 0x14,
            )
        )
        self.i2c.writeto(self.addr, seq)
        self.fill(0)
        self.show()
        self.poweron()

    def poweroff(self):
        self.write_cmd(SET_DISP)
        self.on = False

    def poweron(self):
        self.write_cmd(SET_DISP | 0x01)
        self.on = True

    def contrast(self, contrast):
        self.write_cmd(SET_CONTRAST)
        self.write_cmd(contrast)

    def invert(self, invert):
        self.write_cmd(SET_NORM_INV | (invert & 1))

    def _window(self, c0, c1, p0, p1):
        w = self._win
        w[2] = self._col0 + c0
        w[3] = self._col0 + c1
        w[5] = p0
        w[6] = p1
        self.i2c.writeto(self.addr, w)

    def show(self):
        """Send the whole frame: one window command and one data transaction."""
        self._window(0, self.width - 1, 0, self.pages - 1)
        self.i2c.writeto(self.addr, self._buf)

    def show_region(self, x0, x1, page0, page1):
        """Send only columns x0..x1 of pages page0..page1 (inclusive): one window command,
        then one data transaction per page (the RAM pointer walks the window)."""
        if x0 < 0:
            x0 = 0
        if x1 >= self.width:
            x1 = self.width - 1
        if page0 < 0:
            page0 = 0
        if page1 >= self.pages:
            page1 = self.pages - 1
        if x1 < x0 or page1 < page0:
            return
        self._window(x0, x1, page0, page1)
        n = x1 - x0 + 1
        w = self.width
        for page in range(page0, page1 + 1):
            start = 1 + page * w + x0
            if self._writev:
                self._vec[1] = self._mv[start : start + n]
                self.i2c.writevto(self.addr, self._vec)
            else:
                self._linev[1 : 1 + n] = self._mv[start : start + n]
                self.i2c.writeto(self.addr, self._linev[: 1 + n])
        self._vec[1] = None
