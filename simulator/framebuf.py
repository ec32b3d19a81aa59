"""framebuf for CPython: the parts of MicroPython's `framebuf` that cpos.display uses.

Why not a package: PyPI has no maintained CPython `framebuf` that serves. `micropython-
cpython-framebuf` 0.0 is an empty placeholder; `adafruit-circuitpython-framebuf` is
maintained but differs where it matters: its text is a 5x8 font read from a
`font5x8.bin` file the wheel does not ship (so pages would measure and look different
from the device's 8x8 font), `blit` raises NotImplementedError, and it pulls in
Adafruit-Blinka. A CPython render must match the device's pixel for pixel, so the
simulator's test side carries this minimal one (MONO_VLSB only, the SSD1306's layout).

The 8x8 font is not copied into this repository: it is read once per process from the
real MicroPython unix port installed with the project (it renders every ASCII
character with its own `framebuf.text`), so both runtimes draw the same letters.
tests/device/framebuf.py makes `import framebuf` find this module on CPython; on
MicroPython the built-in module always wins over a file of the same name.
"""
import subprocess

MONO_VLSB = 0
_FIRST, _LAST = 32, 127
_font = None


def font():
    """{char code: 8 column bytes (bit 0 = top row)} for codes 32..127, from MicroPython."""
    global _font
    if _font is None:
        from host_tools.bundle import tool

        script = ("import framebuf\n"
                  "b=bytearray(8)\n"
                  "f=framebuf.FrameBuffer(b,8,8,framebuf.MONO_VLSB)\n"
                  "for c in range(%d,%d):\n"
                  " f.fill(0)\n"
                  " f.text(chr(c),0,0,1)\n"
                  " print(b.hex())\n" % (_FIRST, _LAST + 1))
        out = subprocess.run([tool("micropython"), "-c", script], capture_output=True, text=True, check=True,
                             timeout=60).stdout.split()
        if len(out) != _LAST + 1 - _FIRST:
            raise RuntimeError("micropython did not render the font: %r" % out[:3])
        _font = {_FIRST + i: bytes.fromhex(h) for i, h in enumerate(out)}
    return _font


class FrameBuffer:
    """A 1-bit framebuffer over `buf`, laid out as MicroPython's MONO_VLSB: byte
    (y // 8) * width + x holds 8 vertical pixels, bit 0 on top."""

    def __init__(self, buf, width, height, format=MONO_VLSB, stride=None):
        if format != MONO_VLSB:
            raise ValueError("only MONO_VLSB is supported by the CPython stand-in")
        if len(buf) < ((height + 7) // 8) * width:
            raise ValueError("buffer too small")
        self.buf, self.width, self.height = buf, width, height

    def pixel(self, x, y, c=None):
        if not (0 <= x < self.width and 0 <= y < self.height):
            return None
        i, bit = (y >> 3) * self.width + x, 1 << (y & 7)
        if c is None:
            return 1 if self.buf[i] & bit else 0
        if c:
            self.buf[i] |= bit
        else:
            self.buf[i] &= ~bit & 0xFF

    def fill(self, c):
        v = 0xFF if c else 0
        for i in range(((self.height + 7) // 8) * self.width):
            self.buf[i] = v

    def fill_rect(self, x, y, w, h, c):
        for yy in range(max(0, y), min(self.height, y + h)):
            for xx in range(max(0, x), min(self.width, x + w)):
                self.pixel(xx, yy, c)

    def hline(self, x, y, w, c):
        self.fill_rect(x, y, w, 1, c)

    def vline(self, x, y, h, c):
        self.fill_rect(x, y, 1, h, c)

    def rect(self, x, y, w, h, c, f=False):
        if f:
            self.fill_rect(x, y, w, h, c)
        else:
            self.hline(x, y, w, c)
            self.hline(x, y + h - 1, w, c)
            self.vline(x, y, h, c)
            self.vline(x + w - 1, y, h, c)

    def text(self, s, x, y, c=1):
        """As MicroPython: each character 8 px wide, codes outside 32..127 drawn as 127,
        only the set pixels drawn (the background stays)."""
        glyphs = font()
        for ch in s.encode("utf-8"):  # the device iterates the UTF-8 bytes, as here
            col_bytes = glyphs[ch if _FIRST <= ch <= _LAST else _LAST]
            for dx in range(8):
                bits = col_bytes[dx]
                for dy in range(8):
                    if bits & (1 << dy):
                        self.pixel(x + dx, y + dy, c)
            x += 8
