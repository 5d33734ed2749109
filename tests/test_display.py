"""The OLED: firmware driver + screens under real MicroPython, the emulated SSD1306, the host reader.

Part (a) runs firmware/ui.py and firmware/ssd1306.py in the micropython process on an I2C stub
that hands every transaction to boards/sim/hw/ssd1306_emu.py, dumps what the emulated panel shows,
and reads it back on the host with keyfob.sim.screen.Screen (which imports no firmware code).
Part (b) feeds hand-made byte streams to the emulator (loaded by path under CPython) and checks
the datasheet's addressing modes, windows, wrap-around, control bytes and panel mapping.
"""

from __future__ import annotations

import importlib.util
import random

import pytest
from keyfob.sim.screen import Screen
from mpy import FIRMWARE, SIM_HW, run_mpy

# ---------------------------------------------------------------------------------------------
# (a) firmware on the emulated panel, under micropython

_PRELUDE = """
import gc, sys
import ssd1306, ui, ssd1306_emu

class PlainBus:
    # machine.I2C-like without writevto: one writeto = one I2C transaction to the emulated panel
    def __init__(self, emu):
        self.emu = emu
        self.sent = 0  # bytes on the wire incl. the address byte
        self.writes = 0
    def writeto(self, addr, buf):
        assert addr == 0x3C
        self.sent += 1 + len(buf)
        self.writes += 1
        self.emu.write(buf)

class Bus(PlainBus):
    # with writevto: the buffers go out as one transaction, like machine.I2C.writevto
    def writevto(self, addr, bufs):
        out = bytearray()
        for b in bufs:
            out.extend(b)
        self.writeto(addr, out)

def make(vector=True):
    emu = ssd1306_emu.SSD1306Emu()
    bus = Bus(emu) if vector else PlainBus(emu)
    oled = ssd1306.SSD1306(bus)
    return emu, bus, oled

def out(tag, *vals):
    print(tag + ' ' + ' '.join([str(v) for v in vals]))

def hexs(b):
    return ''.join(['%02x' % x for x in b])
"""


def _run(code: str) -> list[list[str]]:
    stdout = run_mpy(_PRELUDE + code, paths=[FIRMWARE, SIM_HW], timeout=120)
    return [line.split() for line in stdout.splitlines() if line.strip()]


def _codes() -> list[tuple[int, int]]:
    rnd = random.Random(20240611)
    cases = [(0, 6), (111111, 6), (1, 6), (100000, 6), (999999, 6), (755224, 6), (287082, 6), (101010, 6)]
    cases += [(0, 8), (11111111, 8), (99999999, 8), (10000001, 8), (1234567, 7), (7, 7)]
    cases += [(rnd.randrange(10**6), 6) for _ in range(300)]
    cases += [(rnd.randrange(10**8), 8) for _ in range(300)]
    cases += [(rnd.randrange(10**7), 7) for _ in range(40)]
    return cases


def test_codes_read_back_exactly_from_the_emulated_panel():
    cases = _codes()
    code = (
        f"CASES = {cases!r}\n"
        + """
emu, bus, oled = make()
u = ui.Ui(oled)
for c, d in CASES:
    u.show_code(c, d)
    px = emu.pixels()
    # the panel shows the framebuffer upright (init A1/C8 on a SEG0-right, COM0-bottom panel)
    out('C', c, d, int(px == bytes(oled.buffer)), hexs(px))
"""
    )
    rows = _run(code)
    assert len(rows) == len(cases)
    seen = set()
    for (c, d), row in zip(cases, rows):
        assert row[0] == "C" and int(row[1]) == c and int(row[2]) == d
        assert row[3] == "1", "panel pixels differ from the driver's framebuffer"
        screen = Screen(bytes.fromhex(row[4]))
        want = str(c).zfill(d)
        assert screen.digits() == want, (want, screen.text_art())
        assert screen.kind() == "code"
        seen.update(want)
    assert seen == set("0123456789")


def test_countdown_sends_only_the_changed_bar_columns():
    code = """
for vector in (True, False):
    emu, bus, oled = make(vector)
    u = ui.Ui(oled)
    u.show_code(755224, 6, (30, 30))
    out('F', int(vector), bus.sent, hexs(emu.pixels()))
    for r in range(29, -1, -1):
        before = bus.sent
        u.show_countdown(r, 30)
        out('T', int(vector), r, bus.sent - before, hexs(emu.pixels()))
    # a new period: the bar grows back to full width
    before = bus.sent
    u.show_countdown(30, 30)
    out('T', int(vector), 30, bus.sent - before, hexs(emu.pixels()))
    # a bar over a code shown without one: the whole bar region once
    u.show_code(287082, 6)
    out('F', int(vector), 0, hexs(emu.pixels()))
    before = bus.sent
    u.show_countdown(12, 30)
    out('T', int(vector), 12, bus.sent - before, hexs(emu.pixels()))
    before = bus.sent
    u.show_countdown(12, 30)
    out('T', int(vector), 12, bus.sent - before, hexs(emu.pixels()))
"""
    rows = _run(code)
    for vector in ("1", "0"):
        mine = [r for r in rows if r[1] == vector]
        full = Screen(bytes.fromhex(mine[0][3]))
        assert int(mine[0][2]) > 1025  # a new screen is one full frame
        assert full.digits() == "755224" and full.bar() == 1.0
        prev = full
        ticks = mine[1:31]
        for r, row in zip(range(29, -1, -1), ticks):
            assert int(row[2]) == r
            sent = int(row[3])
            assert 0 < sent <= 300, sent
            scr = Screen(bytes.fromhex(row[4]))
            assert scr.digits() == "755224"
            assert scr.bar() == pytest.approx((r * 128 // 30) / 128) if r else scr.bar() == 0.0
            changed = _changed_pixels(prev, scr)
            assert changed, "the bar did not move"
            assert all(y >= 56 for _, y in changed), "a tick changed pixels outside the bar"
            prev = scr
        grown = mine[31]
        assert int(grown[2]) == 30 and 0 < int(grown[3]) <= 300
        scr = Screen(bytes.fromhex(grown[4]))
        assert scr.digits() == "755224" and scr.bar() == 1.0
        assert all(y >= 56 for _, y in _changed_pixels(prev, scr))
        other = Screen(bytes.fromhex(mine[32][3]))
        assert other.digits() == "287082" and other.bar() == 0.0
        first, again = mine[33], mine[34]
        assert 0 < int(first[3]) <= 300
        assert Screen(bytes.fromhex(first[4])).bar() == pytest.approx((12 * 128 // 30) / 128)
        assert int(again[3]) == 0  # the bar did not move: nothing on the bus


def _changed_pixels(a: Screen, b: Screen) -> list[tuple[int, int]]:
    return [(x, y) for y in range(64) for x in range(128) if a.pixel(x, y) != b.pixel(x, y)]


def test_message_screens_are_not_codes():
    code = """
emu, bus, oled = make()
u = ui.Ui(oled)
screens = [
    ('not_provisioned', u.show_not_provisioned, ()),
    ('clock_lost', u.show_clock_lost, ()),
    ('locked', u.show_locked, ()),
    ('hold', u.show_hold_to_reset, ()),
    ('serial', u.show_serial, ('KF000123454', True)),
    ('boot', u.show_boot_report, ({'oled': True, 'ds3231': False},)),
    ('digits_text', u.show_message, (('123456', '87654321'),)),
]
for name, fn, args in screens:
    fn(*args)
    out('M', name, hexs(emu.pixels()), hexs(oled.buffer))
"""
    rows = _run(code)
    assert len(rows) == 7
    arts = set()
    for row in rows:
        scr = Screen(bytes.fromhex(row[2]))
        assert row[2] == row[3]
        assert scr.lit_count() > 20, row[1]
        assert scr.digits() is None, row[1]
        assert scr.kind() == "text", row[1]
        arts.add(scr.text_art())
    assert len(arts) == 7  # every screen is different


def test_power_contrast_invert_and_auto_off():
    code = """
emu, bus, oled = make()
now = [1000]
u = ui.Ui(oled, off_after_ms=15000, ticks_ms=lambda: now[0])
u.show_code(359152, 6, (10, 30))
out('S', 'on', int(emu.display_on), int(u.is_on), hexs(emu.pixels()))
oled.contrast(0x20)
out('V', 'contrast', emu.contrast)
oled.invert(1)
out('S', 'inv', int(emu.inverted), 0, hexs(emu.pixels()))
oled.invert(0)
out('S', 'uninv', int(emu.inverted), 0, hexs(emu.pixels()))
now[0] = 15999
out('V', 'tick1', int(u.tick(now[0])), int(emu.display_on))
now[0] = 16000
out('V', 'tick2', int(u.tick(now[0])), int(emu.display_on))
out('S', 'off', int(emu.display_on), int(u.is_on), hexs(emu.pixels()))
before = bus.sent
u.show_countdown(5, 30)
out('V', 'tick_while_off', bus.sent - before, int(emu.display_on))
now[0] = 50000
u.show_code(969429, 6)
out('S', 'again', int(emu.display_on), int(u.is_on), hexs(emu.pixels()))
now[0] = 64999
out('V', 'tick3', int(u.tick(now[0])), int(emu.display_on))
u.off()
out('S', 'off2', int(emu.display_on), int(u.is_on), hexs(emu.pixels()))
"""
    rows = _run(code)
    s = {r[1]: r for r in rows if r[0] == "S"}
    v = {r[1]: r[2:] for r in rows if r[0] == "V"}
    on = Screen(bytes.fromhex(s["on"][4]))
    assert s["on"][2:4] == ["1", "1"] and on.digits() == "359152"
    assert v["contrast"] == ["32"]
    inv = bytes.fromhex(s["inv"][4])
    assert s["inv"][2] == "1" and inv == bytes(b ^ 0xFF for b in on.pixels)
    assert Screen(inv, inverted=True).digits() == "359152"  # read from the negative too
    assert s["uninv"][2] == "0" and bytes.fromhex(s["uninv"][4]) == on.pixels
    assert v["tick1"] == ["0", "1"]
    assert v["tick2"] == ["1", "0"]
    assert s["off"][2:4] == ["0", "0"] and not any(bytes.fromhex(s["off"][4]))
    assert Screen(bytes.fromhex(s["off"][4]), on=False).kind() == "off"
    assert v["tick_while_off"] == ["0", "0"]
    again = Screen(bytes.fromhex(s["again"][4]))
    assert s["again"][2:4] == ["1", "1"] and again.digits() == "969429" and again.bar() == 0.0
    assert v["tick3"] == ["0", "1"]
    assert s["off2"][2:4] == ["0", "0"] and not any(bytes.fromhex(s["off2"][4]))


def test_show_code_does_not_allocate():
    code = """
class Null:
    def writeto(self, addr, buf):
        pass
    def writevto(self, addr, bufs):
        pass
oled = ssd1306.SSD1306(Null())
u = ui.Ui(oled)
cd = (17, 30)
def measure(fn, *args):
    fn(*args)  # warm up
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    fn(*args)
    d = gc.mem_alloc() - a
    gc.enable()
    return d
out('A', 'code6', measure(u.show_code, 123456, 6))
out('A', 'code8', measure(u.show_code, 87654321, 8))
out('A', 'code_bar', measure(u.show_code, 123456, 6, cd))
u.show_countdown(30, 30)
r = [29]
def tick():
    u.show_countdown(r[0], 30)
    r[0] -= 1
out('A', 'tick', measure(tick))
"""
    got = {r[1]: int(r[2]) for r in _run(code)}
    assert got["code6"] == 0 and got["code8"] == 0 and got["code_bar"] == 0, got
    assert got["tick"] <= 32, got  # one memoryview slice for the data transaction


# ---------------------------------------------------------------------------------------------
# (b) the emulator against the datasheet (CPython, loaded by path: it is hardware, not firmware)


def _emu_module():
    spec = importlib.util.spec_from_file_location("ssd1306_emu_test", SIM_HW / "ssd1306_emu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def emu():
    return _emu_module().SSD1306Emu()


def cmd(e, *b):
    e.write(bytes((0x00,) + b))


def data(e, *b):
    e.write(bytes((0x40,) + b))


def on(e):
    # charge pump on, display on, upright mapping (A1, C8)
    cmd(e, 0x8D, 0x14, 0xA1, 0xC8, 0xAF)


def test_power_on_state_is_page_mode_and_dark(emu):
    assert emu.mode == 2 and not emu.display_on and emu.contrast == 0x7F
    data(emu, 1, 2, 3)  # page mode, page 0, from column 0
    assert bytes(emu.gddram[:4]) == b"\x01\x02\x03\x00"
    assert not any(emu.pixels())  # display off


def test_horizontal_mode_window_and_wraparound(emu):
    cmd(emu, 0x20, 0x00, 0x21, 10, 12, 0x22, 2, 3)
    data(emu, *range(1, 9))
    g = emu.gddram
    # 1,2,3 on page 2; 4,5,6 on page 3; then back to the window's start: 7, 8 overwrite 1, 2
    assert [g[2 * 128 + c] for c in (10, 11, 12)] == [7, 8, 3]
    assert [g[3 * 128 + c] for c in (10, 11, 12)] == [4, 5, 6]
    assert sum(1 for b in g if b) == 6


def test_vertical_mode_window_and_wraparound(emu):
    cmd(emu, 0x20, 0x01, 0x21, 5, 6, 0x22, 6, 7)
    data(emu, 1, 2, 3, 4, 5)
    g = emu.gddram
    assert g[6 * 128 + 5] == 5  # 1 at (6,5), wrapped back by 5
    assert g[7 * 128 + 5] == 2
    assert g[6 * 128 + 6] == 3
    assert g[7 * 128 + 6] == 4
    assert sum(1 for b in g if b) == 4


def test_page_mode_column_nibbles_and_wrap_within_the_page(emu):
    cmd(emu, 0x20, 0x02, 0xB3, 0x0A, 0x17)  # page 3, column 0x7A = 122
    data(emu, *range(1, 9))
    g = emu.gddram
    assert [g[3 * 128 + c] for c in range(122, 128)] == [7, 8, 3, 4, 5, 6]
    assert sum(1 for b in g if b) == 6  # page 4 untouched: the page does not advance
    cmd(emu, 0xB7, 0x00, 0x10)
    data(emu, 0x55)
    assert g[7 * 128] == 0x55


def test_window_command_resets_the_pointer(emu):
    cmd(emu, 0x20, 0x00, 0x21, 0, 127, 0x22, 0, 7)
    data(emu, 1, 2, 3)
    cmd(emu, 0x21, 64, 127)
    data(emu, 9)
    assert emu.gddram[64] == 9 and bytes(emu.gddram[:3]) == b"\x01\x02\x03"


def test_invalid_addressing_mode_is_ignored(emu):
    cmd(emu, 0x20, 0x00)
    cmd(emu, 0x20, 0x03)
    assert emu.mode == 0


def test_control_bytes_co_and_dc(emu):
    # Co=1 pairs: one command byte each, then another control byte
    emu.write(b"\x80\x8d\x80\x14\x80\xaf")
    assert emu.display_on and emu.charge_pump
    # Co=1 data byte, then a command stream in the same transaction
    emu.write(b"\xc0\x5a\x00\xa7")
    assert emu.gddram[0] == 0x5A and emu.inverted
    # a Co=0 data stream swallows bytes that look like commands
    emu.write(b"\x40\xae\xa6")
    assert emu.display_on and emu.inverted and bytes(emu.gddram[1:3]) == b"\xae\xa6"
    assert emu.bad_control == 0
    emu.write(b"\x41\x00")  # low six bits of a control byte must be 0
    assert emu.bad_control == 1


def test_arguments_may_come_in_later_transactions(emu):
    cmd(emu, 0x81)
    cmd(emu, 0xAF)  # the argument of 0x81, not "display on"
    assert emu.contrast == 0xAF and not emu.display_on
    emu.write(b"\x80\x21")
    emu.write(b"\x80\x20")
    emu.write(b"\x80\x30")
    assert (emu.col_start, emu.col_end) == (0x20, 0x30)


def test_argument_counts_keep_the_stream_in_sync(emu):
    # scroll setup (6 args) whose argument bytes look like commands, then the rest of an init
    cmd(emu, 0x26, 0x00, 0xAF, 0xA7, 0xA5, 0x00, 0xFF)
    assert emu.scroll_setup == (0x26, b"\x00\xaf\xa7\xa5\x00\xff")
    assert not emu.display_on and not emu.inverted and not emu.entire_on
    cmd(emu, 0x29, 0x00, 0xAF, 0xA7, 0xA5, 0x01)
    assert emu.scroll_setup == (0x29, b"\x00\xaf\xa7\xa5\x01")
    cmd(emu, 0xA3, 0xAF, 0xA7, 0xD5, 0xAF, 0xD9, 0xA7, 0xDB, 0xA5, 0xDA, 0x12, 0xAD, 0xAF, 0xE3)
    assert not emu.display_on and not emu.inverted and not emu.entire_on
    cmd(emu, 0x2F)
    assert emu.scrolling
    cmd(emu, 0x2E, 0xA8, 0x3F, 0xD3, 0x00, 0x40, 0xAF)
    assert emu.display_on and not emu.scrolling and emu.mux == 64 and emu.unknown == []


def test_panel_mapping_remap_and_scan(emu):
    on(emu)
    cmd(emu, 0x20, 0x00, 0x21, 0, 127, 0x22, 0, 7)
    data(emu, 0x01)  # column 0, page 0, bit 0: top-left pixel with A1/C8
    px = emu.pixels()
    assert px[0] == 0x01 and sum(1 for b in px if b) == 1
    # C0 flips the rows immediately: the pixel goes to the bottom-left
    cmd(emu, 0xC0)
    px = emu.pixels()
    assert px[7 * 128] == 0x80 and sum(1 for b in px if b) == 1
    cmd(emu, 0xC8)
    # A0 applies to data written afterwards only (datasheet: "subsequent data input")
    cmd(emu, 0xA0)
    assert emu.pixels()[0] == 0x01
    cmd(emu, 0x21, 0, 127, 0x22, 0, 7)
    data(emu, 0x01)
    px = emu.pixels()
    assert px[127] == 0x01 and px[0] == 0x01  # new byte lands mirrored: top-right


def test_start_line_offset_and_mux(emu):
    on(emu)
    cmd(emu, 0x20, 0x00, 0x21, 3, 3, 0x22, 0, 7)
    data(emu, *[1 << (p % 8) for p in range(8)])  # column 3: RAM rows 0, 9, 18, ... 63
    ram_rows = {p * 8 + (p % 8) for p in range(8)}

    def lit_rows():
        px = emu.pixels()
        return {y for y in range(64) if px[(y >> 3) * 128 + 3] >> (y & 7) & 1}

    assert lit_rows() == ram_rows
    cmd(emu, 0x48)  # start line 8: the picture moves up 8 rows
    assert lit_rows() == {(r - 8) % 64 for r in ram_rows}
    cmd(emu, 0x40, 0xD3, 0x02)
    assert lit_rows() == {(r - 2) % 64 for r in ram_rows}
    # 32 multiplexed rows: only COM0..31 are driven, scanned COM31 -> COM0 (C8); on this
    # panel (COM0 at the bottom edge) that is the bottom half, showing RAM rows 0..31
    cmd(emu, 0xD3, 0x00, 0xA8, 31)
    assert lit_rows() == {r + 32 for r in ram_rows if r < 32}


def test_entire_on_invert_and_power(emu):
    cmd(emu, 0x20, 0x00, 0xA1, 0xC8)
    data(emu, 0xF0)
    cmd(emu, 0xAF)
    assert not any(emu.pixels())  # no charge pump: no light
    on(emu)
    assert emu.pixels()[0] == 0xF0
    cmd(emu, 0xA7)
    assert emu.pixels()[0] == 0x0F and emu.pixels()[1] == 0xFF
    cmd(emu, 0xA6, 0xA5)
    assert emu.pixels() == b"\xff" * 1024
    cmd(emu, 0xA4, 0xAE)
    assert emu.pixels() == bytes(1024)
    ext = _emu_module().SSD1306Emu(external_vcc=True)
    cmd(ext, 0xAF)
    data(ext, 0x01)
    assert ext.lit() and any(ext.pixels())


def test_bytes_in_and_empty_probe(emu):
    emu.write(b"")
    assert emu.bytes_in == 0 and emu.transactions == 0
    cmd(emu, 0xAF)
    data(emu, 1, 2, 3)
    assert emu.bytes_in == 2 + 4 and emu.transactions == 2


# ---------------------------------------------------------------------------------------------
# the host reader on its own


def _draw_digit_screen(code: str, cell=(18, 44), stroke=4, step=20, x0=2, y0=6) -> Screen:
    """Render seven-segment digits with the host's own description (a different scale than
    the firmware's) to check the reader normalises boxes rather than matching one size."""
    w, h = cell
    m = (h - stroke) // 2
    rects = {
        "a": (0, 0, w, stroke),
        "b": (w - stroke, 0, stroke, m + stroke),
        "c": (w - stroke, m, stroke, h - m),
        "d": (0, h - stroke, w, stroke),
        "e": (0, m, stroke, h - m),
        "f": (0, 0, stroke, m + stroke),
        "g": (0, m, w, stroke),
    }
    from keyfob.sim.screen import _DIGIT_SEGMENTS

    buf = bytearray(1024)
    for i, ch in enumerate(code):
        for seg in _DIGIT_SEGMENTS[ch]:
            rx, ry, rw, rh = rects[seg]
            for y in range(y0 + ry, y0 + ry + rh):
                for x in range(x0 + i * step + rx, x0 + i * step + rx + rw):
                    buf[(y >> 3) * 128 + x] |= 1 << (y & 7)
    return Screen(bytes(buf))


def test_reader_scales_and_rejects_non_digits():
    assert _draw_digit_screen("0123456789"[:6], cell=(16, 40), step=20).digits() == "012345"
    assert _draw_digit_screen("6789", cell=(24, 50), stroke=5, step=30).digits() == "6789"
    # a box with ink in a counter is not a digit
    scr = _draw_digit_screen("888")
    px = bytearray(scr.pixels)
    y, x = 6 + 11, 2 + 9
    px[(y >> 3) * 128 + x] |= 1 << (y & 7)
    assert Screen(bytes(px)).digits() is None
    assert Screen(bytes(1024)).digits() is None and Screen(bytes(1024)).kind() == "off"


def test_screen_helpers(tmp_path):
    scr = _draw_digit_screen("12")
    art = scr.text_art().splitlines()
    assert len(art) == 64 and all(len(r) == 128 for r in art)
    assert art[6][2:20] == "." * 14 + "#" * 4 and art[6][22:40] == "#" * 18
    half = scr.text_art(half_blocks=True).splitlines()
    assert len(half) == 32 and "\u2588" in half[5]
    path = tmp_path / "s.png"
    scr.save_png(path, scale=2)
    from PIL import Image

    img = Image.open(path)
    assert img.size == (256, 128)
    assert img.getpixel((2 * 22, 2 * 6))[2] == 255 and img.getpixel((0, 0)) == (0, 0, 0)
    line = "ok 1 207 0 " + scr.pixels.hex()
    again = Screen.from_reply(line)
    assert again.pixels == scr.pixels and again.on and again.contrast == 207 and not again.inverted
    with pytest.raises(ValueError):
        Screen.from_reply("err no screen")
    with pytest.raises(ValueError):
        Screen(b"\x00" * 10)
