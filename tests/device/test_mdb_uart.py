"""The ESP32 UART link of the MDB reader (cpos.mdb.link.UartLink) against a model of the wire,
on both runtimes.

The model is a `machine.UART` stand-in: it keeps the parity the link set for each byte it
wrote and works out the bit that went on the wire after the 8 data bits, as the UART's
parity generator does (even parity: set when the byte has an odd number of ones; odd:
set when even). That bit is the MDB mode bit a VMC reads. Received bytes come out of a
FIFO the test fills, with no parity (MicroPython cannot read it).
"""
import sys
import time

from cpos.mdb import bus, link


def _ones(b):
    n = 0
    while b:
        n += b & 1
        b >>= 1
    return n


class FakeUART:
    INV_TX = 1
    INV_RX = 2

    def __init__(self, uart_id, baudrate=9600, bits=8, parity=None, stop=1, tx=None, rx=None, timeout=0,
                 timeout_char=0, rxbuf=256, invert=0):
        assert (baudrate, bits, stop) == (9600, 8, 1)
        self.parity = parity
        self.invert = invert
        self.wire = []  # (data, ninth bit) as a VMC receives them
        self.inits = 0
        self.flushes = 0
        self.fifo = bytearray()
        FakeUART.last = self

    def init(self, parity=None, **kw):
        self.parity = parity
        self.inits += 1

    def flush(self):
        self.flushes += 1

    def write(self, buf):
        assert self.parity in (0, 1), "the mode bit needs a parity bit"
        for b in buf:
            even_bit = _ones(b) & 1  # even parity makes the count of ones even
            self.wire.append((b, even_bit if self.parity == 0 else 1 - even_bit))
        return len(buf)

    def any(self):
        return len(self.fifo)

    def readinto(self, buf):
        n = min(len(buf), len(self.fifo))
        buf[:n] = self.fifo[:n]
        self.fifo = self.fifo[n:]
        return n


class FakeMachine:
    UART = FakeUART


def _link():
    sys.modules["machine"] = FakeMachine
    try:
        return link.make_link({"link": "uart", "uart": 1, "tx": 32, "rx": 35, "invert": "both"})
    finally:
        del sys.modules["machine"]


def test_every_byte_of_a_reply_goes_out_with_the_mode_bit_only_on_its_last():
    lk = _link()
    u = FakeUART.last
    assert u.invert == FakeUART.INV_TX | FakeUART.INV_RX
    for reply in (b"\x00", b"\x03\x27\x10\x3a", b"\x05\x05\xdc\xe6", bytes(range(256))):
        u.wire = []
        lk.send(reply, len(reply))
        assert [d for d, _ in u.wire] == list(reply)
        assert [m for _, m in u.wire] == [0] * (len(reply) - 1) + [1], reply
    # the parity is switched only where the next byte needs the other one, each time after a flush
    assert u.inits == u.flushes and 0 < u.inits < 256


def test_parity_for_every_byte_and_mode():
    lk = _link()
    for b in range(256):
        for mode in (0, 1):
            p = lk._parity_for(b, mode)
            bit = (_ones(b) & 1) if p == 0 else 1 - (_ones(b) & 1)
            assert bit == mode, (b, mode, p)


def test_received_bytes_have_an_unknown_mode_and_a_quiet_bus_starts_a_block():
    import asyncio

    lk = _link()
    u = FakeUART.last
    data, modes = bytearray(64), bytearray(64)
    f = bus.Framer(0x10)

    async def chunk(b):
        u.fifo = bytearray(b)
        return await lk.read(data, modes)

    async def go():
        out = []
        time.sleep_ms(3) if hasattr(time, "sleep_ms") else time.sleep(0.003)  # longer than the 1.5 ms gap
        n = await chunk(b"\x13\x00\x05\xdc\x00\x0c\x00")  # VEND REQUEST 15.00 kr, item 12
        assert n == 7 and lk.gap and bytes(modes[:n]) == b"\xff" * 7
        if lk.gap:
            f.gap()
        for i in range(n):
            out.append(f.feed(data[i], -1))
        return out

    kinds = asyncio.run(go())
    assert kinds[-1] == bus.BLOCK and kinds[:-1] == [bus.NOTHING] * 6
    assert bytes(f.buf[:f.last_n]) == b"\x13\x00\x05\xdc\x00\x0c\x00"  # with its checksum
