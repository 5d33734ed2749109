"""The emulated SSD1306 against an independent driver: Adafruit's CircuitPython SSD1306 library.

What is compared, exactly:

1. Adafruit's driver (CPython, adafruit_framebuf, its own init sequence sent one command byte per
   I2C transaction with control 0x80, then 0x21/0x22 windows and one 1,025-byte data write) talks
   to boards/sim/hw/ssd1306_emu.py through a fake busio.I2C. The pixels the emulated panel shows
   must equal Adafruit's own framebuffer: the emulator decodes that stream as the driver means it.
2. The same drawing calls, run under the real MicroPython with its C `framebuf` into a plain
   128x64 MONO_VLSB buffer, must give the same bytes - and so must our firmware driver
   (firmware/ssd1306.py, itself a framebuf) on the emulated panel in that micropython process.
   Only calls whose semantics the two libraries share are used: pixel, hline, vline, fill,
   fill_rect (clipped anywhere), rect fully on screen with positive size, horizontal/vertical/45°
   lines, scroll by less than the frame size, and text. Known differences left out: lines of other
   slopes (the two Bresenham variants round ties differently), rects that cross the edge (Adafruit
   outlines the clipped rectangle), Adafruit's scroll by >= the frame size (IndexError).
3. Text: Adafruit's text() reads a font file (width, height, 256 column-byte glyphs) and spaces
   characters width + 1 apart; MicroPython's framebuf has a built-in 8x8 font spaced 8 apart. The
   test builds an 8x8 font file from MicroPython's own glyphs (rendered by framebuf.text in the
   micropython run) and on the framebuf side draws each character at Adafruit's 9-pixel pitch; so
   text compares placement, clipping and colour of the same glyphs, not two different fonts.
4. Controller state through Adafruit's API: contrast, invert, poweroff/poweron, and rotate(), whose
   docstring says the COM direction changes at once while the segment remap needs a show().
"""

from __future__ import annotations

import importlib.util
import random

import adafruit_ssd1306  # the dev extra pins it: a missing driver must fail, not skip
import pytest
from mpy import FIRMWARE, SIM_HW, run_mpy

PITCH = 9  # Adafruit: font width + 1


def _emu():
    spec = importlib.util.spec_from_file_location("ssd1306_emu_xcheck", SIM_HW / "ssd1306_emu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SSD1306Emu()


class FakeBus:
    """The parts of busio.I2C that adafruit_bus_device uses."""

    def __init__(self, emu, addr=0x3C):
        self.emu = emu
        self.addr = addr
        self.locked = False
        self.writes = []

    def try_lock(self):
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self):
        self.locked = False

    def scan(self):
        return [self.addr]

    def writeto(self, address, buffer, *, start=0, end=None):
        if address != self.addr:
            raise OSError(19, f"no device at 0x{address:02x}")
        assert self.locked
        chunk = bytes(buffer[start : len(buffer) if end is None else end])
        self.writes.append(chunk)
        self.emu.write(chunk)


def _scenes():
    fixed = [
        ("rect", 0, 0, 128, 64, 1),
        ("line", 0, 0, 63, 63, 1),
        ("line", 127, 0, 64, 63, 1),
        ("line", 5, 60, 120, 60, 1),
        ("line", 100, 2, 100, 40, 1),
        ("hline", -5, 10, 200, 1),
        ("vline", 3, -4, 100, 1),
        ("fill_rect", 110, 50, 40, 40, 1),
        ("fill_rect", 20, 30, 30, 12, 1),
        ("fill_rect", 24, 33, 10, 4, 0),
        ("pixel", 1, 1, 1),
        ("pixel", 126, 62, 1),
        ("pixel", 64, 32, 1),
        ("text", "Hello 123", 4, 12, 1),
        ("text", "edge", 100, 44, 1),
        ("text", "neg", -5, -3, 1),
        ("text", "OTP", 22, 31, 0),
    ]
    inverse = [
        ("fill", 1),
        ("fill_rect", 8, 8, 112, 48, 0),
        ("text", "keyfob", 10, 28, 1),
        ("rect", 8, 8, 112, 48, 1),
        ("scroll", 3, -2),
    ]
    rnd = random.Random(4226)
    scenes = [fixed, inverse]
    for _ in range(6):
        ops = []
        for _ in range(30):
            k = rnd.choice(["pixel", "hline", "vline", "fill_rect", "rect", "line", "text", "scroll"])
            x, y = rnd.randrange(-20, 150), rnd.randrange(-20, 80)
            c = rnd.choice([1, 1, 1, 0])
            if k == "pixel":
                ops.append(("pixel", x, y, c))
            elif k == "hline":
                ops.append(("hline", x, y, rnd.randrange(0, 140), c))
            elif k == "vline":
                ops.append(("vline", x, y, rnd.randrange(0, 70), c))
            elif k == "fill_rect":
                ops.append(("fill_rect", x, y, rnd.randrange(0, 140), rnd.randrange(0, 70), c))
            elif k == "rect":
                x, y = rnd.randrange(0, 127), rnd.randrange(0, 63)
                ops.append(("rect", x, y, rnd.randrange(1, 129 - x), rnd.randrange(1, 65 - y), c))
            elif k == "line":
                d = rnd.randrange(-70, 70)
                dx, dy = rnd.choice([(d, 0), (0, d), (d, d), (d, -d)])
                ops.append(("line", x, y, x + dx, y + dy, c))
            elif k == "text":
                s = "".join(chr(rnd.randrange(32, 127)) for _ in range(rnd.randrange(1, 12)))
                ops.append(("text", s, x, y, c))
            else:
                ops.append(("scroll", rnd.randrange(-127, 128), rnd.randrange(-63, 64)))
        scenes.append(ops)
    return scenes


def _framebuf_ops(ops):
    """The same drawing for MicroPython's framebuf: text one character at a time at Adafruit's pitch."""
    out = []
    for op in ops:
        if op[0] == "text":
            _, s, x, y, c = op
            out += [("text", ch, x + PITCH * i, y, c) for i, ch in enumerate(s)]
        else:
            out.append(op)
    return out


_MPY = """
import framebuf, ssd1306, ssd1306_emu
def hexs(b):
    return ''.join(['%02x' % x for x in b])
# MicroPython's 8x8 glyphs as column bytes (MONO_VLSB of an 8x8 frame = one byte per column)
for c in range(32, 127):
    g = bytearray(8)
    framebuf.FrameBuffer(g, 8, 8, framebuf.MONO_VLSB).text(chr(c), 0, 0, 1)
    print('G', c, hexs(g))
emu = ssd1306_emu.SSD1306Emu()
class Bus:
    def writeto(self, addr, buf):
        emu.write(buf)
    def writevto(self, addr, bufs):
        b = bytearray()
        for x in bufs:
            b.extend(x)
        emu.write(b)
oled = ssd1306.SSD1306(Bus())
for n, ops in enumerate(SCENES):
    buf = bytearray(1024)
    fb = framebuf.FrameBuffer(buf, 128, 64, framebuf.MONO_VLSB)
    oled.fill(0)
    for op in ops:
        getattr(fb, op[0])(*op[1:])
        getattr(oled, op[0])(*op[1:])
    oled.show()
    print('S', n, hexs(buf), hexs(emu.pixels()))
"""


@pytest.fixture(scope="module")
def micropython_side():
    scenes = _scenes()
    code = "SCENES = %r\n" % [_framebuf_ops(s) for s in scenes] + _MPY
    lines = [ln.split() for ln in run_mpy(code, paths=[FIRMWARE, SIM_HW], timeout=120).splitlines()]
    glyphs = {int(r[1]): bytes.fromhex(r[2]) for r in lines if r and r[0] == "G"}
    frames = [(bytes.fromhex(r[2]), bytes.fromhex(r[3])) for r in lines if r and r[0] == "S"]
    assert len(glyphs) == 95 and len(frames) == len(scenes)
    return scenes, glyphs, frames


@pytest.fixture()
def font_file(tmp_path, micropython_side):
    _, glyphs, _ = micropython_side
    data = bytearray([8, 8]) + bytearray(256 * 8)
    for c, g in glyphs.items():
        data[2 + 8 * c : 2 + 8 * c + 8] = g
    path = tmp_path / "font8x8.bin"
    path.write_bytes(bytes(data))
    return str(path)


def _adafruit(emu):
    bus = FakeBus(emu)
    display = adafruit_ssd1306.SSD1306_I2C(128, 64, bus)
    return bus, display


def _draw_adafruit(display, ops, font_file):
    for op in ops:
        if op[0] == "text":
            _, s, x, y, c = op
            display.text(s, x, y, c, font_name=font_file)
        else:
            getattr(display, op[0])(*op[1:])


def test_adafruit_init_is_understood():
    emu = _emu()
    bus, _display = _adafruit(emu)
    assert emu.display_on and emu.charge_pump and emu.lit()
    assert emu.mode == 0 and emu.seg_remap and emu.com_remap and emu.mux == 64
    assert emu.contrast == 0xFF and not emu.inverted and not emu.entire_on
    assert emu.unknown == [] and emu.bad_control == 0
    assert emu.bytes_in == sum(len(w) for w in bus.writes)
    assert emu.pixels() == bytes(1024)
    # init_display's fill(0) + show(): a full frame went out as one 1,025-byte transaction
    assert any(len(w) == 1025 and w[0] == 0x40 for w in bus.writes)


def test_same_pixels_from_adafruit_framebuf_and_firmware_driver(micropython_side, font_file):
    scenes, _, frames = micropython_side
    emu = _emu()
    _, display = _adafruit(emu)
    for n, (ops, (framebuf_bytes, firmware_panel)) in enumerate(zip(scenes, frames)):
        display.fill(0)
        _draw_adafruit(display, ops, font_file)
        display.show()
        shown = emu.pixels()
        assert any(shown), n
        assert shown == bytes(display.buffer[1:]), f"scene {n}: panel != Adafruit's own buffer"
        assert shown == framebuf_bytes, f"scene {n}: Adafruit drawing != MicroPython framebuf"
        assert shown == firmware_panel, f"scene {n}: Adafruit panel != firmware driver's panel"


def test_text_lands_where_adafruit_put_it(micropython_side, font_file):
    _, glyphs, _ = micropython_side
    emu = _emu()
    _, display = _adafruit(emu)
    display.fill(0)
    display.text("AB", 10, 8, 1, font_name=font_file)  # page-aligned: glyph columns are whole bytes
    display.show()
    px = emu.pixels()
    assert px[128 + 10 : 128 + 18] == glyphs[ord("A")]
    assert px[128 + 19 : 128 + 27] == glyphs[ord("B")]
    assert px[128 + 18] == 0 and sum(1 for b in px if b) == sum(1 for b in glyphs[65] + glyphs[66] if b)


def test_contrast_invert_power_through_adafruit(micropython_side, font_file):
    emu = _emu()
    _, display = _adafruit(emu)
    display.fill(0)
    display.text("123", 0, 0, 1, font_name=font_file)
    display.fill_rect(60, 20, 30, 30, 1)
    display.show()
    picture = emu.pixels()
    assert picture == bytes(display.buffer[1:])
    display.contrast(0x10)
    assert emu.contrast == 0x10 and emu.pixels() == picture
    display.invert(True)
    assert emu.inverted and emu.pixels() == bytes(b ^ 0xFF for b in picture)
    display.invert(False)
    assert emu.pixels() == picture
    display.poweroff()
    assert not emu.display_on and emu.pixels() == bytes(1024)
    display.poweron()
    assert emu.display_on and emu.pixels() == picture


def test_rotate_com_at_once_segment_remap_after_show():
    emu = _emu()
    _, display = _adafruit(emu)
    display.fill(0)
    display.pixel(3, 5, 1)
    display.show()

    def lit():
        px = emu.pixels()
        return [(x, y) for y in range(64) for x in range(128) if px[(y >> 3) * 128 + x] >> (y & 7) & 1]

    assert lit() == [(3, 5)]
    display.rotate(False)  # C0 + A0
    assert lit() == [(3, 58)]  # rows flip immediately, columns not yet
    display.show()
    assert lit() == [(124, 58)]  # 180 degrees once the RAM is rewritten under A0
    display.rotate(True)
    display.show()
    assert lit() == [(3, 5)]
