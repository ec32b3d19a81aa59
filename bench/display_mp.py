"""Runs on the MicroPython unix port (bench/bench_display.py): the cost of drawing a page
and handing the frame to micropython-lib's ssd1306 driver, beside a naive text renderer.

Usage: display_mp.py N. Prints one line per figure: `name us_p50 us_p99 bytes txns`.
The I2C bus is a stand-in that counts transactions and bytes (no wire time: that is
computed by the caller for 400 kHz).
"""
import gc
import sys
import time

import framebuf
import ssd1306

from cpos import display, reasons, screen

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200


class Bus:
    def __init__(self):
        self.txn = self.bytes = 0

    def writeto(self, addr, buf):
        self.txn += 1
        self.bytes += 1 + len(buf)  # the address byte too

    def writevto(self, addr, vec):
        self.txn += 1
        self.bytes += 1 + sum(len(v) for v in vec)


# The naive renderer: every character, ASCII too, set pixel by pixel from a bitmap
# table in Python (what a driver without framebuf.text would do). The table is read
# from framebuf itself once, so both draw the same letters.
_ROWS = {}
_cell = bytearray(8)
_cfb = framebuf.FrameBuffer(_cell, 8, 8, framebuf.MONO_HLSB)
for c in range(32, 127):
    _cfb.fill(0)
    _cfb.text(chr(c), 0, 0, 1)
    _ROWS[chr(c)] = bytes(_cell)
_ROWS.update(display.GLYPHS)


def naive_draw(fb, page):
    fb.fill(0)
    fb.fill_rect(0, 0, screen.WIDTH, screen.BAND, 1)
    for x, y, s, c in [(screen.centre(page.band), 2, page.band, 0)] + [(x, y, s, 1) for x, y, s in page.rows]:
        for ch in s:
            display.glyph(fb, _ROWS.get(ch, _ROWS["?"]), x, y, c)
            x += 8


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * (len(v) - 1) + 0.5))]


pages = [screen.approved(4500, 5500), screen.balance(12345), screen.topup(), screen.offline()]
pages += [screen.refused(c) for c in range(1, len(reasons.NAMES))]
bus = Bus()
oled = ssd1306.SSD1306_I2C(128, 64, bus)
times = {"page": [], "draw": [], "show": [], "naive_draw": []}
for i in range(N):
    page = pages[i % len(pages)]
    p = page
    gc.collect()  # a collection is the heap's cost, not the drawing's: keep it out of the figures
    t1 = time.ticks_us()
    display.draw(oled, p)
    t2 = time.ticks_us()
    bus.txn = bus.bytes = 0
    oled.show()
    t3 = time.ticks_us()
    naive_draw(oled, p)
    t4 = time.ticks_us()
    times["draw"].append(time.ticks_diff(t2, t1))
    times["show"].append(time.ticks_diff(t3, t2))
    times["naive_draw"].append(time.ticks_diff(t4, t3))
# building a page (layout, wrap, money formatting): the refusal with the longest texts
for i in range(N):
    gc.collect()
    t0 = time.ticks_us()
    screen.refused(reasons.REPLACED)
    times["page"].append(time.ticks_diff(time.ticks_us(), t0))
for k in ("page", "draw", "show", "naive_draw"):
    print(k, pct(times[k], 50), pct(times[k], 99), bus.bytes if k == "show" else 0, bus.txn if k == "show" else 0)
