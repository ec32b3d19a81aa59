"""The MDB vend log: which approved vends the vending machine is known to have heard.

    log = VendLog(dev)            # a raw flash area of 2+ sectors (esp32.Partition, BlockFile)
    settled = log.recover()       # purchases up to this seq need nothing more; -1: never used
    log.note(seq)                 # durable: purchase `seq` is settled (delivered, or refunded)

Owns one fact that the journal cannot hold: whether the VMC acknowledged VEND APPROVED
for the newest purchase. A purchase is journaled before VEND APPROVED is queued
(invariant 1); if the power goes before the VMC acknowledges it, the machine vends
nothing, so at the next start the reader refunds every journaled purchase above
`settled` (docs/mdb.md "Power cuts"). After the acknowledgement the vend counts as
sold, whatever follows (the standard's rule for a RESET between VEND APPROVED and
VEND SUCCESS); a VEND FAILURE is refunded while the reader runs.

NOR layout: 8-byte entries appended into erased flash, never rewritten: u32 seq
(big-endian), u8 kind (1 delivered/refunded, 2 baseline), u8 0xA5, u16 check. The
newest entry is the one with the highest seq. A torn program leaves an entry whose
check fails: it is skipped (the purchase counts as not delivered: the student keeps
the money); after a restart the slot after the last one used is left out too, since a
program cut at its very start reads as erased but may not hold a later program. When a
sector is full the next one is erased and written; the sector holding the newest entry
is never erased, so a torn erase loses nothing.
One 8-byte program per vend; one sector erase every (sector size / 8) vends.
"""
from cpos.blockdev import BLOCK_COUNT, BLOCK_ERASE, BLOCK_SIZE
from cpos.compat import const

ENTRY = const(8)
DELIVERED = const(1)
BASELINE = const(2)
_MARK = const(0xA5)


def _check(seq, kind):
    return (seq ^ (seq >> 16) ^ (kind * 0x101) ^ 0x5AA5) & 0xFFFF


class VendLog:
    def __init__(self, dev):
        self.dev = dev
        self.bs = dev.ioctl(BLOCK_SIZE, 0)
        self.nsec = dev.ioctl(BLOCK_COUNT, 0)
        if self.nsec < 2:
            raise ValueError("the MDB vend log needs at least 2 flash sectors")
        self.per = self.bs // ENTRY
        self._e = bytearray(ENTRY)
        self.settled = -1
        self._sec = 0  # where the next entry goes
        self._slot = 0
        self.writes = 0

    def _valid(self, e):
        seq = (e[0] << 24) | (e[1] << 16) | (e[2] << 8) | e[3]
        if e[5] != _MARK or e[4] not in (DELIVERED, BASELINE) or ((e[6] << 8) | e[7]) != _check(seq, e[4]):
            return -1
        return seq

    def recover(self):
        """Scan the area; returns the highest settled seq, or -1 if nothing was ever written."""
        e, best, at = self._e, -1, None
        for s in range(self.nsec):
            last_used = -1
            for k in range(self.per):
                self.dev.readblocks(s, e, k * ENTRY)
                if e == b"\xff\xff\xff\xff\xff\xff\xff\xff":
                    continue
                last_used = k
                seq = self._valid(e)
                if seq > best:
                    best, at = seq, s
            if at == s:  # one slot left out: a program cut there may read erased yet hold no charge
                self._sec, self._slot = s, last_used + 2
        self.settled = best
        if at is None:
            self._sec, self._slot = 0, self.per  # nothing valid: the first write erases sector 1
        return best

    def note(self, seq, kind=DELIVERED):
        """Make `seq` settled, durably (one 8-byte program; an erase when a sector fills)."""
        if seq <= self.settled:
            return
        e = self._e
        while True:
            if self._slot >= self.per:
                self._sec = (self._sec + 1) % self.nsec
                self._slot = 0
                self.dev.ioctl(BLOCK_ERASE, self._sec)
            self.dev.readblocks(self._sec, e, self._slot * ENTRY)
            if e == b"\xff\xff\xff\xff\xff\xff\xff\xff":
                break
            self._slot += 1  # left by a torn program: not erased, do not write over it
        e[0], e[1], e[2], e[3] = (seq >> 24) & 0xFF, (seq >> 16) & 0xFF, (seq >> 8) & 0xFF, seq & 0xFF
        e[4], e[5] = kind, _MARK
        c = _check(seq, kind)
        e[6], e[7] = c >> 8, c & 0xFF
        self.dev.writeblocks(self._sec, e, self._slot * ENTRY)
        self._slot += 1
        self.settled = seq
        self.writes += 1
