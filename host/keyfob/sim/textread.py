"""Reading the token's 8x8 text screens ("Not provisioned", "Clock lost", the serial number).

The firmware writes messages with MicroPython's built-in ``framebuf`` text: an 8x8 font that
lives in the interpreter (the port's ROM), not in the firmware. The reader asks the very
``micropython`` the virtual token runs on to draw every printable character once, then
matches the screen against those glyphs cell by cell, trying each of the 8 horizontal phases
a centred line can have. Nothing of the firmware is imported.
"""

from __future__ import annotations

import functools
import subprocess

from keyfob.sim.screen import HEIGHT, WIDTH, Screen
from keyfob.sim.token import micropython_exe

_DRAW_FONT = """
import framebuf
b = bytearray(8)
f = framebuf.FrameBuffer(b, 8, 8, framebuf.MONO_VLSB)
out = []
for c in range(32, 127):
    f.fill(0)
    f.text(chr(c), 0, 0, 1)
    out.append(''.join('%02x' % x for x in b))
print(' '.join(out))
"""


@functools.lru_cache(maxsize=1)
def rom_font() -> dict[bytes, str]:
    """Glyph (8 column bytes, bit 0 = top row) -> character, for ASCII 32..126."""
    run = subprocess.run([micropython_exe(), "-c", _DRAW_FONT], capture_output=True, text=True, timeout=30, check=True)
    glyphs = run.stdout.split()
    font: dict[bytes, str] = {}
    for i, hexed in enumerate(glyphs):
        font.setdefault(bytes.fromhex(hexed), chr(32 + i))
    return font


def _cell(screen: Screen, x: int, y: int) -> bytes:
    col = bytearray(8)
    for dx in range(8):
        v = 0
        for dy in range(8):
            if screen.pixel(x + dx, y + dy):
                v |= 1 << dy
        col[dx] = v
    return bytes(col)


def _line_at(screen: Screen, y: int, font: dict[bytes, str]) -> str | None:
    # A line is readable at (phase, y) when every cell matches a glyph; ink outside the cells
    # (left of the phase) rules the phase out.
    for phase in range(8):
        if any(screen.pixel(x, y + dy) for x in range(phase) for dy in range(8)):
            continue
        chars = []
        for x in range(phase, WIDTH - 7, 8):
            ch = font.get(_cell(screen, x, y))
            if ch is None:
                break
            chars.append(ch)
        else:
            tail = range(phase + 8 * len(chars), WIDTH)
            if any(screen.pixel(x, y + dy) for x in tail for dy in range(8)):
                continue
            text = "".join(chars).strip()
            if text:
                return text
    return None


def text_lines(screen: Screen) -> list[str]:
    """The lines of 8x8 text on the screen, top to bottom ([] for a blank or code screen)."""
    font = rom_font()
    ink_rows = [any(screen.pixel(x, y) for x in range(WIDTH)) for y in range(HEIGHT)]
    lines: list[str] = []
    y = 0
    while y <= HEIGHT - 8:
        # Glyphs may start with empty rows, so a line may begin above its first ink row.
        line = _line_at(screen, y, font) if any(ink_rows[y : y + 8]) else None
        if line is None:
            y += 1
            continue
        lines.append(line)
        y += 8
    return lines
