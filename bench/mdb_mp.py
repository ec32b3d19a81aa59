"""Run under MicroPython (bench/bench_mdb.py): the MDB reader's work per VMC block.

For each kind of block: from its first byte given to the framer to the reply ready in
the reader's buffer (framing, checksum, state machine; no I/O), in µs, 2000 times; and
the heap allocated per block. Beside it, a naive reader of the same blocks that keeps
the block as a growing bytes object and builds each reply with bytes() (what a first
version tends to do). Prints one JSON line per case.
"""
import gc
import json
import time

from cpos import reasons
from cpos.mdb import bus, cashless
from cpos.mdb.settings import Settings

N = 2000


class Host:
    def funds(self, uid):
        return reasons.APPROVED, 10000, 7

    def ready(self):
        return True

    def vend(self, uid, amount, item):
        return reasons.APPROVED, 1, 10000 - amount

    def refund(self, seq):
        return reasons.APPROVED

    def delivered(self, seq):
        pass

    def event(self, kind, a, b):
        pass


def blk(*data):
    b = bytes(data)
    return b + bytes([sum(b) & 0xFF])


POLL = blk(0x12)
VEND_REQ = blk(0x13, 0x00, 0x05, 0xDC, 0x00, 0x0C)
SUCCESS = blk(0x13, 0x02, 0x00, 0x0C)
COMPLETE = blk(0x13, 0x04)


def feed(f, r, block):
    n = 0
    for i in range(len(block)):
        if f.feed(block[i], 1 if i == 0 else 0) == bus.BLOCK:
            n = r.handle(f.buf, f.last_n, 1000)
            if n:
                f.awaiting = True
    return n


def ack(f, r):
    if f.feed(0, 0) == bus.GOT_ACK:
        r.acked()


def real():
    f = bus.Framer(0x10)
    r = cashless.Reader(Host(), Settings({"link": "tcp", "host": "x", "port": 1}))
    for b in (blk(0x10), POLL):
        feed(f, r, b)
    ack(f, r)
    feed(f, r, blk(0x11, 0x00, 2, 0, 0, 0))
    ack(f, r)
    feed(f, r, blk(0x14, 0x01))
    return f, r


class Naive:
    """The same protocol, the obvious way: bytes grow per byte, replies are new bytes."""

    def __init__(self):
        self.block = b""
        self.queue = []

    def feed(self, b, mode):
        if mode:
            self.block = b""
        self.block += bytes([b])
        want = {2: 2, 3: 7 if len(self.block) < 2 or self.block[1] in (0, 5) else (5 if self.block[1] == 2 else 3)}.get(self.block[0] & 7, 2)
        if len(self.block) < want:
            return None
        if sum(self.block[:-1]) % 256 != self.block[-1]:
            return b""
        if self.block[0] & 7 == 2:
            if self.queue:
                reply = self.queue[0]
                return reply + bytes([sum(reply) % 256])
            return b"\x00"
        if self.block[0] & 7 == 3 and self.block[1] == 0:
            price = self.block[2] * 256 + self.block[3]
            self.queue = [bytes([0x05, price >> 8, price & 0xFF])]
        return b"\x00"


def _one(block, f, r, naive):
    if naive is not None:
        for i in range(len(block)):
            naive.feed(block[i], 1 if i == 0 else 0)
    else:
        feed(f, r, block)


def measure(name, block, reset_each, f=None, r=None, naive=None):
    """Heap allocated per block (20 blocks, collector off), then the time of N blocks
    with the collector on, as it runs on the device (a variant that allocates pays for
    its collections in its times)."""
    gc.collect()
    gc.disable()
    alloc = 0
    for _ in range(20):
        if reset_each is not None:
            reset_each()
        a0 = gc.mem_alloc()
        _one(block, f, r, naive)
        alloc += gc.mem_alloc() - a0
    alloc //= 20
    gc.enable()
    times = [0] * N
    gc.collect()
    for k in range(N):
        if reset_each is not None:
            reset_each()
        t0 = time.ticks_us()
        _one(block, f, r, naive)
        times[k] = time.ticks_diff(time.ticks_us(), t0)
    times.sort()
    print(json.dumps({"case": name, "p50_us": times[N // 2], "p99_us": times[N * 99 // 100],
                      "max_us": times[-1], "alloc_per_block": alloc}))


def main():
    f, r = real()
    measure("POLL, nothing to report (ACK)", POLL, None, f, r)
    measure("naive: POLL, nothing to report", POLL, None, naive=Naive())
    r.card(b"\x04\x01\x02\x03", 1000)
    feed(f, r, POLL)
    ack(f, r)  # BEGIN SESSION

    def back_to_idle():
        r.state = cashless.IDLE
        r.price = 0
    measure("VEND REQUEST (ACK; the decision runs after the reply)", VEND_REQ, back_to_idle, f, r)
    nv = Naive()
    measure("naive: VEND REQUEST", VEND_REQ, None, naive=nv)

    def queued():
        f.awaiting = False
        if not r._qlen:
            r._decision()
    r.state = cashless.VEND
    r._decide = False
    measure("POLL answering VEND APPROVED (3 bytes + checksum)", POLL, queued, f, r)
    measure("naive: POLL answering VEND APPROVED", POLL, None, naive=nv)


main()
