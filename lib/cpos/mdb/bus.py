"""MDB bus framing for a peripheral: the VMC's blocks in, the reader's replies out.

    f = Framer(0x10)
    kind = f.feed(byte, mode)      # mode 1/0, or -1 when the link cannot tell
    if kind == BLOCK: handle(f.buf, f.n)

Owns the block rules of MDB/ICP 4.2 as a peripheral sees them: a VMC block is an
address byte (mode bit set), data bytes and a checksum (the 8-bit sum of the rest);
after a peripheral's data reply the VMC answers with a lone ACK 00, RET AA or NAK FF.
A link that sees the mode bit (TCP, an interface board) passes it; the ESP32 UART
cannot read a received byte's parity, so it passes -1 and calls `gap()` when the bus
went idle, and the framer cuts the VMC's stream by address, the command's length
(from `length`) and the checksum. Blocks for other peripherals are skipped; a block
for us with a bad checksum is reported as BAD (the reader stays silent: the VMC
repeats it after its 5 ms response timeout).

The framer fills one preallocated buffer: no allocation per byte.
"""
from cpos.compat import const

ACK = const(0x00)
RET = const(0xAA)
NAK = const(0xFF)
MAX_BLOCK = const(36)  # the longest block the standard allows, checksum included

# what feed() returns
NOTHING = const(0)
BLOCK = const(1)  # a complete block for us in buf[:n], checksum good
BAD = const(2)  # a block for us with a bad checksum, or too long
GOT_ACK = const(3)
GOT_RET = const(4)
GOT_NAK = const(5)

_SKIP = const(-2)  # collecting a block for another peripheral: ignore until the next address


def checksum(buf, n):
    """The 8-bit sum of buf[:n]."""
    s = 0
    for i in range(n):
        s += buf[i]
    return s & 0xFF


def length(cmd, sub):
    """The length of a VMC block to a cashless reader, checksum included, from its
    command (the address byte's low 3 bits) and first data byte (`sub`, -1 while not
    known yet). Returns -1 while `sub` is needed, 0 for a command of unknown length."""
    if cmd == 0 or cmd == 2:  # RESET, POLL
        return 2
    if sub < 0:
        return -1
    if cmd == 1:  # SETUP 00 config (lvl, cols, rows, disp) / 01 max-min prices
        return 7 if sub in (0, 1) else 0
    if cmd == 3:  # VEND
        if sub in (0, 5, 6):  # request, cash sale, negative vend: price(2) item(2)
            return 7
        if sub == 2:  # success: item(2)
            return 5
        return 3 if sub in (1, 3, 4) else 0
    if cmd == 4:  # READER disable/enable/cancel
        return 3 if sub <= 2 else 0
    if cmd == 5:  # REVALUE 00 request amount(2) / 01 limit request
        return 5 if sub == 0 else (3 if sub == 1 else 0)
    if cmd == 7:  # EXPANSION 00 request id / 04 optional features enabled
        return 32 if sub == 0 else (7 if sub == 4 else 0)
    return 0


class Framer:
    """Cuts the VMC's byte stream into blocks for the peripheral at `address`."""

    def __init__(self, address):
        self.address = address
        self.buf = bytearray(MAX_BLOCK)
        self.n = 0  # bytes of the block collected so far; _SKIP while skipping another's
        self._want = -1
        self.awaiting = False  # we sent a data reply: the VMC's next byte may be ACK/RET/NAK
        self.bad = 0  # blocks for us with a bad checksum, or of unknown length
        self.garbage = 0  # bytes outside any block
        self.blocks = 0
        self.last_n = 0  # the length of the block BLOCK reported

    def gap(self):
        """The bus was idle: whatever comes next starts a block (or is an ACK/RET/NAK)."""
        if self.n > 0:
            self.garbage += self.n
        self.n = 0

    def feed(self, b, mode):
        """One byte from the VMC; returns NOTHING, BLOCK, BAD or GOT_ACK/RET/NAK."""
        n = self.n
        if mode == 1 or (mode < 0 and n == 0 and not (self.awaiting and b in (ACK, RET, NAK))):
            self.awaiting = False
            if n > 0:
                self.garbage += n  # a block cut short by the next address
            if (b & 0xF8) != self.address:
                self.n = _SKIP
                return NOTHING
            self.buf[0] = b
            self.n = 1
            self._want = length(b & 7, -1)
            return self._done()
        if n == 0:  # a data byte outside a block: the VMC's answer to our reply, or noise
            if self.awaiting:
                self.awaiting = False
                if b == ACK:
                    return GOT_ACK
                if b == RET:
                    return GOT_RET
                if b == NAK:
                    return GOT_NAK
            self.garbage += 1
            return NOTHING
        if n == _SKIP:
            return NOTHING
        self.buf[n] = b
        self.n = n + 1
        if self._want < 0:
            self._want = length(self.buf[0] & 7, b)
        return self._done()

    def _done(self):
        want, n = self._want, self.n
        if want == 0:  # a command we do not know the length of: drop it, say BAD
            self.bad += 1
            self.n = _SKIP
            return BAD
        if want < 0 or n < want:
            if n >= MAX_BLOCK:
                self.bad += 1
                self.n = _SKIP
                return BAD
            return NOTHING
        self.n = 0
        self.last_n = n
        if checksum(self.buf, n - 1) != self.buf[n - 1]:
            self.bad += 1
            return BAD
        self.blocks += 1
        return BLOCK


def seal(buf, n):
    """Put the checksum of buf[:n] at buf[n]; returns n + 1 (the block's length)."""
    buf[n] = checksum(buf, n)
    return n + 1
