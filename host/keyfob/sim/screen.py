"""What the (virtual) token's 128x64 OLED shows, and reading the code back from it.

A :class:`Screen` wraps the 1,024 bytes an emulated SSD1306 panel reports: the frame as
the panel *shows* it, in the MONO_VLSB layout the SSD1306 GDDRAM uses (SSD1306 datasheet
section 8.7: 8 pages of 128 bytes, bit 0 = top row of the page), so pixel (x, y) is bit
``y % 8`` of byte ``(y // 8) * 128 + x``.

:meth:`Screen.digits` reads the one-time code (RFC 4226 section 5.3 / RFC 6238: 6 to 8
decimal digits) back from the pixels without using any firmware code: the token draws
seven-segment digits, so the reader finds the tall band of ink, cuts it into glyph boxes at
empty columns and samples the seven segment positions of each box (plus the two counters
that must stay dark). A box that is a solid thin bar is a ``1``. Anything that does not
match a seven-segment digit exactly makes the whole reading ``None`` - a message screen in
8x8 text has no band tall enough and reads as ``None`` too.
"""

from __future__ import annotations

WIDTH = 128
HEIGHT = 64

#: Segments lit for each digit (the standard seven-segment encoding).
_DIGIT_SEGMENTS = {
    "0": "abcdef",
    "1": "bc",
    "2": "abdeg",
    "3": "abcdg",
    "4": "bcfg",
    "5": "acdfg",
    "6": "acdefg",
    "7": "abc",
    "8": "abcdefg",
    "9": "abcdfg",
}
_SEGMENTS_DIGIT = {frozenset(v): k for k, v in _DIGIT_SEGMENTS.items()}

# Where each segment is sampled in a glyph box, as fractions of width and height: three
# points along the segment, all must agree. Strokes are ~8 % of the glyph height thick.
_SAMPLES = {
    "a": ((0.35, 0.03), (0.5, 0.03), (0.65, 0.03)),
    "d": ((0.35, 0.97), (0.5, 0.97), (0.65, 0.97)),
    "g": ((0.35, 0.5), (0.5, 0.5), (0.65, 0.5)),
    "f": ((0.08, 0.18), (0.08, 0.27), (0.08, 0.36)),
    "b": ((0.92, 0.18), (0.92, 0.27), (0.92, 0.36)),
    "e": ((0.08, 0.64), (0.08, 0.73), (0.08, 0.82)),
    "c": ((0.92, 0.64), (0.92, 0.73), (0.92, 0.82)),
}
# The two holes of an '8': dark in every digit.
_COUNTERS = ((0.5, 0.27), (0.5, 0.73))

# Index: bit 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right.
_QUADRANTS = " \u2598\u259d\u2580\u2596\u258c\u259e\u259b\u2597\u259a\u2590\u259c\u2584\u2599\u259f\u2588"

_MIN_DIGIT_HEIGHT = 24  # taller than any line of text; the code glyphs are ~44 px
_ONE_MAX_RATIO = 0.2  # width / height below which a solid bar is a '1'


class Screen:
    """One frame of the panel.

    ``pixels`` is what the panel shows (already dark when off, already inverted when
    inverted); ``on``, ``contrast`` and ``inverted`` are the controller state reported
    alongside it.
    """

    def __init__(
        self,
        pixels: bytes,
        on: bool = True,
        contrast: int = 255,
        inverted: bool = False,
        width: int = WIDTH,
        height: int = HEIGHT,
    ) -> None:
        if len(pixels) != width * height // 8:
            raise ValueError(f"expected {width * height // 8} bytes of pixels, got {len(pixels)}")
        self.pixels = bytes(pixels)
        self.on = bool(on)
        self.contrast = int(contrast)
        self.inverted = bool(inverted)
        self.width = width
        self.height = height

    @classmethod
    def from_reply(cls, line: str) -> Screen:
        """Parse the sim control socket's ``screen?`` reply:
        ``ok <on> <contrast> <inverted> <hex of 1024 bytes>``."""
        parts = line.split()
        if len(parts) != 5 or parts[0] != "ok":
            raise ValueError(f"not a screen reply: {line[:40]!r}")
        return cls(
            bytes.fromhex(parts[4]),
            on=_flag(parts[1]),
            contrast=int(parts[2]),
            inverted=_flag(parts[3]),
        )

    # -- pixels -----------------------------------------------------------------
    def pixel(self, x: int, y: int) -> int:
        """1 if the pixel at column x, row y (0, 0 = top left) is lit."""
        if not (0 <= x < self.width and 0 <= y < self.height):
            raise IndexError(f"pixel ({x}, {y}) outside {self.width}x{self.height}")
        return (self.pixels[(y >> 3) * self.width + x] >> (y & 7)) & 1

    def rows(self) -> list[list[int]]:
        """The frame as rows of 0/1."""
        w = self.width
        px = self.pixels
        return [[(px[(y >> 3) * w + x] >> (y & 7)) & 1 for x in range(w)] for y in range(self.height)]

    def lit_count(self) -> int:
        return sum(b.bit_count() for b in self.pixels)

    def text_art(self, half_blocks: bool = False) -> str:
        """The frame as text: one character per pixel ('#' lit, '.' dark), or with
        ``half_blocks`` one character per two rows (Unicode upper/lower half blocks)."""
        rows = self.rows()
        if not half_blocks:
            return "\n".join("".join("#" if v else "." for v in row) for row in rows)
        chars = {(0, 0): " ", (1, 0): "\u2580", (0, 1): "\u2584", (1, 1): "\u2588"}
        out = []
        for y in range(0, self.height, 2):
            top, bottom = rows[y], rows[y + 1] if y + 1 < self.height else [0] * self.width
            out.append("".join(chars[(t, b)] for t, b in zip(top, bottom, strict=True)))
        return "\n".join(out)

    def quadrant_art(self) -> str:
        """The frame at half size for an 80-column terminal: one character per 2x2 pixels
        (Unicode quadrant blocks), 64 columns by 32 lines."""
        rows = self.rows()
        out = []
        for y in range(0, self.height, 2):
            line = []
            for x in range(0, self.width, 2):
                bits = rows[y][x] | rows[y][x + 1] << 1 | rows[y + 1][x] << 2 | rows[y + 1][x + 1] << 3
                line.append(_QUADRANTS[bits])
            out.append("".join(line))
        return "\n".join(out)

    def save_png(self, path, scale: int = 4) -> None:
        """Write the frame as a PNG (lit pixels light blue-white on black, each pixel a
        ``scale`` x ``scale`` square). Needs Pillow."""
        from PIL import Image

        img = Image.new("L", (self.width, self.height), 0)
        img.putdata([255 if v else 0 for row in self.rows() for v in row])
        img = img.resize((self.width * scale, self.height * scale), Image.NEAREST)
        rgb = Image.merge("RGB", (img.point(lambda v: v * 200 // 255), img.point(lambda v: v * 230 // 255), img))
        rgb.save(path, "PNG")

    # -- reading it -------------------------------------------------------------
    def kind(self) -> str:
        """``'off'`` (nothing lit), ``'code'`` (a code in big digits) or ``'text'``."""
        if not self.on or not any(self.pixels):
            return "off"
        return "code" if self.digits() is not None else "text"

    def digits(self) -> str | None:
        """The code shown in big seven-segment digits, e.g. ``'755224'``, or None."""
        grid = self._ink()
        if grid is None:
            return None
        band = _digit_band(grid)
        if band is None:
            return None
        top, bottom = band
        boxes = _boxes(grid, top, bottom)
        if not boxes:
            return None
        out = []
        for left, right in boxes:
            d = _classify(grid, left, right, top, bottom)
            if d is None:
                return None
            out.append(d)
        return "".join(out)

    def bar(self) -> float | None:
        """The countdown bar below the digits as a fraction of the width (0.0 when no
        column of it is lit), None when there is no code on screen."""
        grid = self._ink()
        if grid is None:
            return None
        band = _digit_band(grid)
        if band is None:
            return None
        below = range(band[1] + 1, self.height)
        lit = [x for x in range(self.width) if any(grid[y][x] for y in below)]
        if not lit:
            return 0.0
        return (max(lit) + 1) / self.width

    def _ink(self) -> list[list[int]] | None:
        if not self.on:
            return None
        grid = self.rows()
        lit = sum(map(sum, grid))
        if lit == 0:
            return None
        if lit * 2 > self.width * self.height:
            # a negative picture (inverted panel): read the dark strokes
            grid = [[1 - v for v in row] for row in grid]
        return grid


def _flag(s: str) -> bool:
    s = s.lower()
    if s in ("1", "true", "on", "yes"):
        return True
    if s in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"not a flag: {s!r}")


def _digit_band(grid) -> tuple[int, int] | None:
    """The one run of inked rows at least _MIN_DIGIT_HEIGHT tall."""
    inked = [any(row) for row in grid]
    bands = []
    y = 0
    n = len(inked)
    while y < n:
        if inked[y]:
            start = y
            while y < n and inked[y]:
                y += 1
            bands.append((start, y - 1))
        else:
            y += 1
    tall = [b for b in bands if b[1] - b[0] + 1 >= _MIN_DIGIT_HEIGHT]
    if len(tall) != 1:
        return None
    return tall[0]


def _boxes(grid, top, bottom) -> list[tuple[int, int]]:
    width = len(grid[0])
    cols = [any(grid[y][x] for y in range(top, bottom + 1)) for x in range(width)]
    boxes = []
    x = 0
    while x < width:
        if cols[x]:
            start = x
            while x < width and cols[x]:
                x += 1
            boxes.append((start, x - 1))
        else:
            x += 1
    return boxes


def _classify(grid, left, right, top, bottom) -> str | None:
    w = right - left + 1
    h = bottom - top + 1
    # every glyph reaches the top and the bottom of the band
    if not any(grid[top][left : right + 1]) or not any(grid[bottom][left : right + 1]):
        return None
    if w / h < _ONE_MAX_RATIO:
        solid = all(grid[y][x] for y in range(top, bottom + 1) for x in range(left, right + 1))
        return "1" if solid else None

    def at(fx, fy):
        return grid[top + min(h - 1, int(fy * h))][left + min(w - 1, int(fx * w))]

    for fx, fy in _COUNTERS:
        if at(fx, fy):
            return None
    lit = set()
    for seg, points in _SAMPLES.items():
        values = {at(fx, fy) for fx, fy in points}
        if len(values) != 1:
            return None
        if values.pop():
            lit.add(seg)
    return _SEGMENTS_DIGIT.get(frozenset(lit))
