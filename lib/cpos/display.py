"""Draws a `cpos.screen.Page` into a framebuf, with the Danish letters the built-in font lacks.

Owns the pixels of a page and the glyphs for æ ø å Æ Ø Å. MicroPython's `framebuf`
font is 8x8 ASCII only (anything else prints as a checkered block), so those six
letters are bitmaps drawn here, in the built-in font's style (2-pixel strokes where
room allows, baseline on row 6). Any other character outside ASCII is drawn as `?`.

The target is any object with framebuf's `fill`, `fill_rect`, `pixel` and `text`:
`framebuf.FrameBuffer` itself, micropython-lib's `ssd1306.SSD1306_I2C` (a FrameBuffer
subclass: call its `show()` after `draw`), or, on CPython, the stand-in in
simulator/framebuf.py. Used by the boards' outputs (boards/*/board.py).
"""
from cpos import screen

# 8 rows of 8 pixels each, most significant bit = leftmost pixel (row 0 on top).
GLYPHS = {
    # ........  ........  ....#...  ..#####.  ..####.#  ...##...
    # ........  ......#.  ...#.#..  .##.#...  .##..##.  ..#..#..
    # .##.##..  ..####..  ....#...  ##..#...  .##.###.  ..####..
    # ...##.#.  .##.###.  ..####..  ######..  .######.  .##..##.
    # .######.  .##.#.#.  ..#####.  ##..#...  .###.##.  .######.
    # #..##...  .###.##.  .##..##.  ##..#...  .##..##.  .##..##.
    # .##.###.  ..####..  ..#####.  ##..####  #.####..  .##..##.
    # ........  .#......  ........  ........  ........  ........
    #    æ         ø         å         Æ         Ø         Å
    "æ": b"\x00\x00\x6c\x1a\x7e\x98\x6e\x00",
    "ø": b"\x00\x02\x3c\x6e\x6a\x76\x3c\x40",
    "å": b"\x08\x14\x08\x3c\x3e\x66\x3e\x00",
    "Æ": b"\x3e\x68\xc8\xfc\xc8\xc8\xcf\x00",
    "Ø": b"\x3d\x66\x6e\x7e\x76\x66\xbc\x00",
    "Å": b"\x18\x24\x3c\x66\x7e\x66\x66\x00",
}


def glyph(fb, rows, x, y, c):
    """Set the pixels of one 8x8 glyph (`rows` as in GLYPHS) at x, y in colour c."""
    for dy in range(8):
        bits = rows[dy]
        if bits:
            for dx in range(8):
                if bits & (0x80 >> dx):
                    fb.pixel(x + dx, y + dy, c)


def text(fb, s, x, y, c=1):
    """Draw `s` at x, y: ASCII through the built-in font, æøåÆØÅ from GLYPHS. Returns the x after it."""
    for ch in s:
        if ch < "\x80":
            fb.text(ch, x, y, c)
        else:
            rows = GLYPHS.get(ch)
            if rows is None:
                fb.text("?", x, y, c)
            else:
                glyph(fb, rows, x, y, c)
        x += screen.CHAR
    return x


def draw(fb, page):
    """Clear `fb` and draw `page`: its headline dark on a lit band across the top, its rows below."""
    fb.fill(0)
    fb.fill_rect(0, 0, screen.WIDTH, screen.BAND, 1)
    text(fb, page.band, screen.centre(page.band), 2, 0)
    for x, y, s in page.rows:
        text(fb, s, x, y, 1)
