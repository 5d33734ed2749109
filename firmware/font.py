# Big digit glyphs for the code screen: seven thick segments per digit, as data.
#
# Segments are the usual a..g (bit 0 = a ... bit 6 = g):
#
#      aaaa
#     f    b
#     f    b
#      gggg
#     e    c
#     e    c
#      dddd
#
# A glyph set is: cell width, cell height, gap between digits, gap between the two digit
# groups ('123 456'), then 7 rectangles (x, y, w, h) inside the cell for segments a..g.
# The vertical strokes run the full half height, so every glyph reaches the top and the
# bottom of its cell; '1' (b and c only) is the only glyph narrower than its cell.

# digit -> segment mask
SEGMENTS = b"\x3f\x06\x5b\x4f\x66\x6d\x7d\x07\x7f\x6f"

# Up to 6 digits: 18 x 45 cells, strokes 5 px; 6 * 18 + 4 * 2 + 8 = 124 px wide.
WIDE = bytes(
    (
        18, 45, 2, 8,
        0, 0, 18, 5,  # a
        13, 0, 5, 25,  # b
        13, 20, 5, 25,  # c
        0, 40, 18, 5,  # d
        0, 20, 5, 25,  # e
        0, 0, 5, 25,  # f
        0, 20, 18, 5,  # g
    )
)

# 7 and 8 digits: 13 x 44 cells, strokes 4 px; 8 * 13 + 6 * 2 + 7 = 123 px wide.
NARROW = bytes(
    (
        13, 44, 2, 7,
        0, 0, 13, 4,  # a
        9, 0, 4, 24,  # b
        9, 20, 4, 24,  # c
        0, 40, 13, 4,  # d
        0, 20, 4, 24,  # e
        0, 0, 4, 24,  # f
        0, 20, 13, 4,  # g
    )
)


def glyphs(digits):
    """The glyph set for a code of `digits` digits."""
    return WIDE if digits <= 6 else NARROW
