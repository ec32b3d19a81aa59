"""MicroPython side of bench_pn532.py: codec and driver CPU time per poll (no wire)."""
import sys
import time

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from cpos.reader import frame as F
from cpos.reader.pn532 import PN532
from cpos.reader.link import StreamLink

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
ACK = F.ACK_FRAME
R_NONE = F.encode(F.TFI_CHIP, 0x4B, b"\x00")
R_CARD = F.encode(F.TFI_CHIP, 0x4B, bytes.fromhex("01010044000704112233445566"))  # 7-byte UID
R_CARD4 = F.encode(F.TFI_CHIP, 0x4B, bytes.fromhex("010100040804a1b2c3d4"))  # 4-byte UID
R_REL = F.encode(F.TFI_CHIP, 0x53, b"\x00")
R_RF = F.encode(F.TFI_CHIP, 0x33)


def us(t0):
    return time.ticks_diff(time.ticks_us(), t0)


def naive_decode(raw):
    # the obvious way: find the start code, slice, sum (allocates every time)
    i = raw.find(b"\x00\xff")
    ln = raw[i + 2]
    if (ln + raw[i + 3]) & 0xFF:
        raise ValueError
    body = raw[i + 4:i + 4 + ln]
    if (sum(body) + raw[i + 4 + ln]) & 0xFF:
        raise ValueError
    return body[1:]


def bench_codec():
    buf = bytearray(F.frame_size(F.MAX_DATA))
    r = F.FrameReader()
    t0 = time.ticks_us()
    for _ in range(N):
        F.encode_into(buf, F.TFI_HOST, 0x4A, b"\x01\x00")
        r.reset()
        r.feed(ACK)
        r.next()
        r.feed(R_CARD)
        r.next()
    ours = us(t0) / N
    t0 = time.ticks_us()
    for _ in range(N):
        bytes(F.encode(F.TFI_HOST, 0x4A, b"\x01\x00"))
        naive_decode(R_CARD)
    naive = us(t0) / N
    return ours, naive


class Clock:
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    async def sleep_ms(self, ms):
        await asyncio.sleep_ms(0)


class LoopChip:
    """Answers instantly with canned frames: measures the driver alone."""

    def __init__(self, card):
        self.card = card
        self.q = bytearray()

    def write(self, buf):
        b = bytes(buf)
        if len(b) > 7 and b[5] == 0xD4:
            cmd = b[6]
            self.q += ACK
            self.q += {0x4A: R_CARD4 if self.card else R_NONE, 0x52: R_REL, 0x32: R_RF}[cmd]
        return len(b)

    def readinto(self, buf):
        n = min(len(buf), len(self.q))
        buf[:n] = self.q[:n]
        self.q = self.q[n:]
        return n


async def bench_driver(card):
    pn = PN532(StreamLink(LoopChip(card), clock=Clock()))
    await pn.read_uid()
    tx, rx = pn.link.tx_bytes, pn.link.rx_bytes
    t0 = time.ticks_us()
    for _ in range(N // 5):
        await pn.read_uid()
    t = us(t0) / (N // 5)
    return t, (pn.link.tx_bytes - tx) // (N // 5), (pn.link.rx_bytes - rx) // (N // 5)


ours, naive = bench_codec()
none = asyncio.run(bench_driver(False))
card = asyncio.run(bench_driver(True))
print("codec_us %.1f" % ours)
print("naive_us %.1f" % naive)
print("driver_none_us %.1f %d %d" % none)
print("driver_card_us %.1f %d %d" % card)
