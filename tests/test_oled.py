"""The ESP32 boards' OLED through micropython-lib's `ssd1306` driver, with the I2C bus recorded.

No ESP32 is attached, so the board's `machine` is a stand-in whose I2C records every
transaction. On CPython, boards/esp32/esp32_board.py builds its outputs from the
board's PINS and the config's `feedback` section and draws pages through the real
driver (host_tools/vendor.py's pinned copy; framebuf: simulator/framebuf.py). On the
MicroPython unix port, the same driver and cpos.display run with the built-in
framebuf. Each test checks the bytes that would cross the bus: the frame drawn, in
the SSD1306's order (one 1 KB write) or the SH1106's (eight pages from column 2).
"""
import importlib.util
import os
import subprocess
import sys
import types

import pytest

from runtimes import ROOT, micropython_env, micropython_path
from cpos import reasons, screen
from host_tools import vendor
import simulator.framebuf as standin_framebuf

PAGE = screen.refused(reasons.REPLACED)  # three Danish lines with æ, three English


class I2C:
    """machine.I2C stand-in: records (addr, bytes) per transaction; `absent` answers nothing."""

    absent = False
    last = None

    def __init__(self, bus, scl=None, sda=None, freq=None):
        self.bus, self.scl, self.sda, self.freq = bus, scl, sda, freq
        self.writes = []
        I2C.last = self

    def writeto(self, addr, buf):
        if I2C.absent:
            raise OSError(19)  # ENODEV: no ACK at the address
        self.writes.append((addr, bytes(buf)))

    def writevto(self, addr, vector):
        if I2C.absent:
            raise OSError(19)
        self.writes.append((addr, b"".join(bytes(v) for v in vector)))


class Pin:
    OUT, IN, PULL_UP = 1, 2, 3

    def __init__(self, n, mode=None, value=None, pull=None):
        self.n, self.v = n, value

    def value(self, v=None):
        if v is not None:
            self.v = v
        return self.v


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        self.hz, self.duty = freq, duty_u16

    def freq(self, hz):
        self.hz = hz

    def duty_u16(self, d):
        self.duty = d


@pytest.fixture
def esp32_board(monkeypatch):
    """boards/esp32/esp32_board.py on CPython, with the stand-ins and the pinned driver."""
    I2C.absent = False
    machine = types.ModuleType("machine")
    machine.I2C, machine.Pin, machine.PWM = I2C, Pin, PWM
    micropython = types.ModuleType("micropython")
    micropython.const = lambda v: v
    for name, mod in (("machine", machine), ("esp32", types.ModuleType("esp32")), ("micropython", micropython),
                      ("framebuf", standin_framebuf)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, "ssd1306", raising=False)
    monkeypatch.syspath_prepend(vendor.ssd1306_dir())
    spec = importlib.util.spec_from_file_location("esp32_board_t", os.path.join(ROOT, "boards", "esp32", "esp32_board.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pins_spec = importlib.util.spec_from_file_location("pins_t", os.path.join(ROOT, "boards", "esp32_i2c", "board.py"))
    monkeypatch.setitem(sys.modules, "esp32_board", mod)
    pins = importlib.util.module_from_spec(pins_spec)
    pins_spec.loader.exec_module(pins)
    return mod.Esp32Board("esp32_i2c", pins.PINS)


def frame_of(page):
    buf = bytearray(1024)
    from cpos import display

    display.draw(standin_framebuf.FrameBuffer(buf, 128, 64, standin_framebuf.MONO_VLSB), page)
    return bytes(buf)


def test_an_ssd1306_gets_the_whole_frame_in_one_write(esp32_board):
    out = esp32_board.outputs({})
    bus = I2C.last
    assert (bus.bus, bus.freq) == (0, 400000) and bus.writes, "the driver initialises the panel"
    assert all(addr == 0x3C for addr, _ in bus.writes)
    bus.writes.clear()
    out.display(PAGE)
    cmds = [w[1] for w in bus.writes[:-1]]
    assert cmds == [b"\x80\x21", b"\x80\x00", b"\x80\x7f", b"\x80\x22", b"\x80\x00", b"\x80\x07"], cmds
    assert bus.writes[-1][1] == b"\x40" + frame_of(PAGE)  # the page as drawn, 1024 bytes in one transaction


def test_an_sh1106_gets_eight_pages_from_column_two(esp32_board):
    out = esp32_board.outputs({"display": {"chip": "sh1106"}})  # pins and address kept from the board
    bus = I2C.last
    assert (bus.scl.n, bus.sda.n) == (22, 21)
    bus.writes.clear()
    out.display(PAGE)
    frame = frame_of(PAGE)
    assert len(bus.writes) == 8 * 4
    for p in range(8):
        w = bus.writes[4 * p:4 * p + 4]
        assert [x[1] for x in w[:3]] == [b"\x80" + bytes([0xB0 | p]), b"\x80\x02", b"\x80\x10"], w[:3]
        assert w[3][1] == b"\x40" + frame[128 * p:128 * (p + 1)]


def test_a_board_without_a_display_keeps_the_console(esp32_board, capsys):
    out = esp32_board.outputs({"display": "none"})
    out.display(PAGE)
    assert capsys.readouterr().out == "DISPLAY | %s\n" % PAGE.text()
    I2C.absent = True  # wired in PINS, but nothing answers at 0x3C: one line, then the console
    out = esp32_board.outputs({})
    out.display(PAGE)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["display: no OLED answers at I2C address 0x3c: the display goes to the console",
                     "DISPLAY | %s" % PAGE.text()], lines


def test_the_buzzer_plays_each_tone_at_its_pitch(esp32_board):
    out = esp32_board.outputs({"display": "none"})
    out.buzzer(1800)
    assert (out._buzzer.hz, out._buzzer.duty) == (1800, 32768)
    out.buzzer(0)
    assert out._buzzer.duty == 0


UNIX_PORT = r"""
import framebuf, ssd1306
from cpos import display, reasons, screen

class Bus:
    def __init__(self):
        self.txn = 0
        self.bytes = 0
        self.data = None
    def writeto(self, addr, buf):
        self.txn += 1
        self.bytes += len(buf)
    def writevto(self, addr, vec):
        self.txn += 1
        self.bytes += sum(len(v) for v in vec)
        self.data = bytes(vec[1])

bus = Bus()
oled = ssd1306.SSD1306_I2C(128, 64, bus)
plain = bytearray(1024)
fb = framebuf.FrameBuffer(plain, 128, 64, framebuf.MONO_VLSB)
pages = [screen.approved(4500, 5500), screen.balance(100), screen.topup(), screen.offline()]
pages += [screen.refused(c) for c in range(1, len(reasons.NAMES))]
same = 0
for p in pages:
    bus.txn = bus.bytes = 0
    display.draw(oled, p)
    oled.show()
    display.draw(fb, p)
    same += bus.data == bytes(plain) and bytes(oled.buffer) == bytes(plain)
print(len(pages), same, bus.txn, bus.bytes)
"""


def test_the_driver_and_the_pages_run_on_the_micropython_unix_port():
    env = micropython_env(vendor.ssd1306_dir())
    p = subprocess.run([micropython_path(), "-c", UNIX_PORT], env=env, capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    n, same, txn, nbytes = map(int, p.stdout.split())
    assert n == same == 4 + len(reasons.NAMES) - 1  # every page: the driver sent what framebuf drew
    assert (txn, nbytes) == (7, 6 * 2 + 1 + 1024)  # per frame: 6 commands and one data write
