"""The purchase journal: the terminal's uplink queue, a log on a raw flash partition.

Owns where purchase records (cpos.purchase) and acknowledgement watermarks live on a
block device with esp32.Partition's interface (`readblocks(n, buf, off)`,
`writeblocks(n, buf, off)` = program without erase, `ioctl` of cpos.blockdev), how they are
found again after a power cut, and when the journal is full. The byte layout is in
docs/formats.md ("Purchase journal"); the device is `esp32.Partition` on the ESP32,
`cpos.blockfile.BlockFile` on the unix port, `simulator.norflash.NorFlash` in tests.

Design in one breath: sectors are a ring; each opened sector starts with a header
(magic, sector id, first seq, ack watermark, CRC) and then holds 64-byte slots, each
a purchase record or an ack record, programmed once, in order. A sector is erased
right before it is opened, never rewritten in place. `append` programs one slot
(plus, once per sector, an erase and a header) and returns when it is on flash.
Recovery reads every header and scans the newest sector, and any sector whose header
fails its checksum; it trusts no header alone (docs/formats.md, "Recovery"):
- a header one bit from valid (decay) is repaired; its watermark is not trusted;
- a header beyond repair in a sector holding purchases is placed in the ring from the
  sequence numbers of its records and its neighbours' headers, or reported as an
  orphan for the rescue (host_tools/rescue.py reads every sector);
- a purchase record one bit from valid is repaired when it is read (cpos.bitfix);
- the next seq is above every purchase seen, the watermark comes only from headers and
  ack records whose checksums held as read.
Each repair is logged (level E) and counted in `damage()` (shown by `cpos status`).

Invariants kept here (tested by tests/test_journal_powercut.py):
- Nothing is programmed over bytes a torn write may have left: a non-blank slot is
  never reused, a sector is always erased (in this boot) before its header is written.
- A sector is erased only when every purchase in it is at or below the ack watermark.
- Purchases never take the last reclaimable sector, so an ack can always be recorded
  (see `ack`); when they would, `append` raises JournalFull and writes nothing. A
  partition of fewer than MIN_SECTORS sectors could never free one: refused at open.
- After a boot, the slot after the newest non-blank one is skipped: a program cut
  before any bit visibly cleared leaves a slot that reads blank but is not.
"""
import struct

from cpos import purchase
from cpos.bitfix import fix_one_bit
from cpos.blockdev import BLOCK_COUNT, BLOCK_ERASE, BLOCK_SIZE
from cpos.compat import const
from cpos.crc import seal, sealed_ok
from cpos.log import NULL

SLOT = const(64)
_MAGIC = b"CPJ1"
_HDR = "<4sIII"  # magic, sector id, first seq, ack watermark
_HDR_CRC = const(16)  # CRC-32 of bytes 0..15
_HDR_LEN = const(20)
_ACK_TYPE = const(0x41)  # 'A'
_ACK = "<BBBBI"  # type, 0, 0, 0, watermark
_ACK_CRC = const(8)  # CRC-32 of bytes 0..7
_ACK_LEN = const(12)
_BLANK = b"\xff" * SLOT
_BLANK_HDR = b"\xff" * _HDR_LEN
# The head, the sector opened next, and one in reserve so that an ack can always be
# recorded: with two, a full head whose records are all acknowledged can never open the
# other sector (purchases may not take the reserve), and nothing writes again.
MIN_SECTORS = 3


class JournalFull(Exception):
    """No room: unacknowledged purchases fill the journal. Nothing was written.

    The firmware refuses the purchase with reasons.TERMINAL_FULL. Raised by `ack`
    only in the rare case where the ack cannot be recorded until a later ack frees
    the oldest sector; the uplink then retries with its next (higher) watermark.
    """


class Journal:
    """The journal on block device `dev`. Call `recover()` once before anything else.
    `log` (cpos.log.Log) gets one E line per decayed header or record found."""

    MIN_SECTORS = MIN_SECTORS

    def __init__(self, dev, log=NULL):
        self.dev = dev
        self.log = log
        self.sector = dev.ioctl(BLOCK_SIZE, 0)
        self.nsec = dev.ioctl(BLOCK_COUNT, 0)
        if self.sector % SLOT or self.sector < 2 * SLOT:
            raise ValueError("journal sectors of %d bytes refused: they must be a multiple of 64, at least 128"
                             % self.sector)
        if self.nsec < self.MIN_SECTORS:
            raise ValueError("journal of %d sectors refused: it needs at least %d (the newest, the next to open "
                             "and one kept for acknowledgements), or it stops writing once full"
                             % (self.nsec, self.MIN_SECTORS))
        self.slots = self.sector // SLOT - 1  # record slots per sector (slot 0 is the header)
        self._sid = [0] * self.nsec  # sector id of each sector in the ring, 0 = not in it
        self._first = [0] * self.nsec  # first seq of each sector in the ring
        self._dmg = [0, 0, 0]  # headers repaired or placed, orphan sectors, records repaired
        self._pin = bytearray(self.nsec)  # 1: an orphan sector, never erased (see recover)
        self._fix_seq = 0  # highest seq repaired and logged so far (read() logs each once)
        self._nofix = -1  # the last slot (sector * (slots + 1) + slot) found beyond repair
        self._rec = bytearray(SLOT)
        self._hdr = bytearray(_HDR_LEN)
        self._ackb = bytearray(_ACK_LEN)
        self._ok = False

    # -- boot -------------------------------------------------------------------
    def recover(self):
        """Rebuild the state from flash alone. Returns the next sequence number."""
        self._ok = False
        n = self.nsec
        hb = self._hdr
        sid, first = self._sid, self._first
        dmg = self._dmg
        dmg[0] = dmg[1] = dmg[2] = 0
        self._fix_seq = 0
        self._nofix = -1
        w = 0
        head = -1
        damaged = None  # sectors whose header is neither valid, repairable nor blank
        untrusted = None  # sectors whose header was repaired or placed (its watermark unknown)
        for i in range(n):
            self.dev.readblocks(i, hb, 0)
            s = self._parse_header(hb)
            if s is not None:
                w = max(w, s[2])  # a watermark only from a header whose CRC held as read
            elif hb != _BLANK_HDR:
                if fix_one_bit(hb, self._header_ok) >= 0:
                    s = self._parse_header(hb)  # sector id and first seq; its watermark is not trusted
                    untrusted = (untrusted or []) + [i]
                    dmg[0] += 1
                    self.log.error("journal: sector %d header failed its checksum: one bit repaired "
                                   "(flash decay, or a cut while it was written)" % i)
                else:
                    damaged = (damaged or []) + [i]
            if s is None:
                sid[i] = 0
                continue
            sid[i], first[i] = s[0], s[1]
            if head < 0 or sid[i] > sid[head]:
                head = i
        seen = 0  # highest purchase seq seen outside the head
        lost = []  # (sector, lo, hi, count) of sectors with a lost header that hold purchases
        for i in damaged or ():
            lo, hi, cnt = self._seq_range(i)
            if cnt:  # else a torn header or erase: nothing to keep
                seen = max(seen, hi)
                lost.append((i, lo, hi, cnt))
        moved = True
        while lost and moved:  # one placed may be the neighbour another one needs
            moved = False
            for p in lost:
                i, lo, hi, cnt = p
                s = self._place(i, lo, hi)
                if s:
                    sid[i], first[i] = s, lo
                    untrusted = (untrusted or []) + [i]
                    dmg[0] += 1
                    if head < 0 or s > sid[head]:
                        head = i
                    self.log.error("journal: sector %d header unreadable: placed in the ring as sector id %d "
                                   "from its %d purchases (seq %d..%d)" % (i, s, cnt, lo, hi))
                    lost.remove(p)
                    moved = True
                    break
        pin = self._pin  # orphans: kept out of the ring and never erased, for the rescue
        for i in range(n):
            pin[i] = 0
        for i, lo, hi, cnt in lost:
            pin[i] = 1
            self.log.error("journal: sector %d header unreadable and its %d purchases (seq %d..%d) fit nowhere "
                           "in the ring: the sector is kept for cpos rescue" % (i, cnt, lo, hi))
        orphans = len(lost)
        dmg[1] = orphans
        self._head = head
        self._ready = -1  # a sector erased during this boot and untouched since
        if head < 0:
            for i in range(n):
                sid[i] = 0
            self._used = 0
            self._next = seen + 1
            self._w = 0
            self._free = n - orphans
            self._ok = True
            return self._next
        # The ring: sectors before the head with consecutive ids. Anything else is stale.
        oldest = head
        k = 1
        while k < n:
            p = (head - k) % n
            if sid[p] != sid[head] - k:
                break
            oldest = p
            k += 1
        for j in range(k, n):
            sid[(head - j) % n] = 0
        # The head's header carried the watermark of the acks before it; if it is not
        # trusted, the acks are read from the sector before it instead.
        if untrusted and head in untrusted and oldest != head:
            w = max(w, self._acks_in((head - 1) % n))
        # Scan the head: used slots (torn ones count), last seq, later acks.
        used = 0
        top = first[head] - 1
        buf = self._rec
        for slot in range(1, self.slots + 1):
            self.dev.readblocks(head, buf, slot * SLOT)
            if buf == _BLANK:
                continue
            used = slot
            if purchase.is_valid(buf):
                top = max(top, purchase.seq_of(buf))
            elif self._is_ack(buf):
                w = max(w, struct.unpack_from("<I", buf, 4)[0])
            elif self._repair(head, slot, buf):
                top = max(top, purchase.seq_of(buf))
        # The slot after the last non-blank one may hold a program the cut interrupted
        # before any bit visibly cleared: blank to a read, not to a program. Skip it.
        self._used = used + 1 if used < self.slots else used
        self._next = max(top, seen) + 1  # never below a purchase seen anywhere
        # Records below the oldest sector's first seq were erased, which happens only
        # once they are acknowledged (an ack may be cut between erase and its record).
        # Not when a sector could not be placed: the ring may then end early.
        if not orphans:
            w = max(w, first[oldest] - 1)
        self._w = min(w, self._next - 1)
        self._free = self._count_free(self._w)
        self._ok = True
        return self._next

    # -- the tap path -------------------------------------------------------------
    def append(self, t, uid, account, amount, place, kind, terminal, item, balance_after,
               reason, topup=False, untimed=False):
        """Record one purchase; returns its sequence number once it is durable on flash.

        Raises JournalFull (nothing written) when unacknowledged purchases fill the
        journal, ValueError (nothing written) for a field outside the format.
        """
        self._check()
        purchase.encode_into(self._rec, self._next, t, uid, account, amount, place, kind,
                             terminal, item, balance_after, reason, topup, untimed)
        return self._program_next()

    def append_reversal(self, t, uid, account, amount, place, kind, terminal, item, balance_after,
                        orig_seq, orig_t, cause):
        """Record the reversal of purchase `orig_seq` (a cpos.purchase type R record; cpos.refund
        decides whether it may be written). Returns its own sequence number once it is durable;
        JournalFull / ValueError as `append`, nothing written."""
        self._check()
        purchase.encode_reversal_into(self._rec, self._next, t, uid, account, amount, place, kind,
                                      terminal, item, balance_after, orig_seq, orig_t, cause)
        return self._program_next()

    def _program_next(self):
        """Program the record encoded in self._rec as the next slot (opening a sector first
        when the head is full); returns its seq once durable."""
        opening = self._head < 0 or self._used >= self.slots
        if self._free < (2 if opening else 1):
            raise JournalFull("journal full: waiting for acknowledgements")
        self._ok = False  # until the flash work below completes
        if opening:
            self._open(self._w)
        self.dev.writeblocks(self._head, self._rec, (self._used + 1) * SLOT)
        self._used += 1
        seq = self._next
        self._next = seq + 1
        self._ok = True
        return seq

    # -- the uplink -------------------------------------------------------------
    def ack(self, watermark):
        """The backend holds every record up to `watermark`: release them, durably.

        Returns True if recorded, False if it changed nothing (idempotent). Raises
        ValueError for a watermark beyond the last appended record, and JournalFull
        (nothing changed) if it cannot be recorded yet (see JournalFull).
        """
        self._check()
        if type(watermark) is not int or watermark < 0:
            raise ValueError("watermark must be a non-negative int")
        if watermark >= self._next:
            raise ValueError("ack beyond the last appended record")
        if watermark <= self._w:
            return False
        if self._used < self.slots:
            b = self._ackb
            struct.pack_into(_ACK, b, 0, _ACK_TYPE, 0, 0, 0, watermark)
            seal(b, _ACK_CRC)
            self._ok = False
            self.dev.writeblocks(self._head, b, (self._used + 1) * SLOT)
            self._used += 1
        else:  # head full: the next sector's header carries the watermark
            if self._count_free(watermark) < 1:
                raise JournalFull("ack cannot be recorded until the oldest sector is acknowledged")
            self._ok = False
            self._open(watermark)
        self._w = watermark
        self._free = self._count_free(watermark)
        self._ok = True
        return True

    def read(self, seq, buf, acked=False):
        """Copy the first record with sequence number >= `seq` into `buf` (64 bytes).

        Returns its sequence number, or None when there is none. Only unacknowledged
        records unless `acked`. Torn slots are skipped: whatever lands in `buf` passed
        its checksum. Decode with cpos.purchase.decode, or send the bytes as they are.
        """
        self._check()
        if self._head < 0:
            return None
        if not acked and seq <= self._w:
            seq = self._w + 1
        if seq >= self._next:
            return None
        n = self.nsec
        i = self._head
        while self._first[i] > seq:
            p = (i - 1) % n
            if self._sid[p] != self._sid[i] - 1 or self._sid[p] == 0:
                break  # asked for records older than the ring holds
            i = p
        slot = 1 + seq - self._first[i]
        if slot < 1:
            slot = 1
        while True:
            last = self._used if i == self._head else self.slots
            while slot <= last:
                self.dev.readblocks(i, buf, slot * SLOT)
                if purchase.is_valid(buf) or self._repair(i, slot, buf):
                    s = purchase.seq_of(buf)
                    if seq <= s < self._next:
                        return s
                slot += 1
            if i == self._head:
                return None
            i = (i + 1) % n
            slot = 1

    def prepare(self):
        """Idle-time work: erase the sector the ring moves to next, if it may be erased,
        so that the append which crosses into it does not wait for the erase.
        Returns True if it erased."""
        self._check()
        t = (self._head + 1) % self.nsec if self._head >= 0 else self._start()
        if t == self._ready or self._count_free(self._w) < 1:
            return False
        self._ok = False
        self.dev.ioctl(BLOCK_ERASE, t)
        self._sid[t] = 0
        self._ready = t
        self._ok = True
        return True

    def survey(self):
        """Counts over every slot of the ring (reads the whole ring: tools and tests, not
        the tap path): sectors, purchase records, ack records, torn (non-blank, invalid)."""
        self._check()
        buf = self._rec
        out = {"sectors": 0, "records": 0, "acks": 0, "torn": 0, "repaired": 0}
        for i in range(self.nsec):
            if self._sid[i] == 0:
                continue
            out["sectors"] += 1
            for slot in range(1, self.slots + 1):
                self.dev.readblocks(i, buf, slot * SLOT)
                if purchase.is_valid(buf):
                    out["records"] += 1
                elif self._is_ack(buf):
                    out["acks"] += 1
                elif buf != _BLANK:
                    if fix_one_bit(buf, purchase.is_valid) >= 0:
                        out["repaired"] += 1
                        out["records"] += 1
                    else:
                        out["torn"] += 1
        return out

    def damage(self):
        """What recovery and reading found decayed since `recover()`: headers repaired (one
        bit) or placed from their records, orphan sectors (purchases outside the ring, left
        for the rescue) and purchase records repaired (one bit). All zero on healthy flash."""
        d = self._dmg
        return {"headers": d[0], "orphans": d[1], "records_repaired": d[2]}

    # -- health -------------------------------------------------------------------
    def fill(self):
        """(used, total) record slots; purchases are refused when used reaches total."""
        total = (self.nsec - 1) * self.slots
        if self._head < 0:
            return 0, total
        used = (self.nsec - 1 - self._free) * self.slots + self._used
        return min(used, total), total

    def capacity(self):
        """Purchases the journal holds with no acknowledgement in between."""
        return (self.nsec - 1) * self.slots

    def pending(self):
        """Number of unacknowledged purchases."""
        return self._next - 1 - self._w

    def oldest_unacked(self):
        """Sequence number of the oldest unacknowledged purchase, or None."""
        return self._w + 1 if self._w + 1 < self._next else None

    @property
    def next_seq(self):
        return self._next

    @property
    def watermark(self):
        return self._w

    # -- inside -------------------------------------------------------------------
    def _check(self):
        if not self._ok:
            raise RuntimeError("journal needs recover() (not yet run, or a flash operation failed)")

    def _parse_header(self, hb):
        if hb[0:4] != _MAGIC:
            return None
        if not sealed_ok(hb, _HDR_CRC):
            return None
        _, s, f, hw = struct.unpack_from(_HDR, hb, 0)
        if s == 0:
            return None
        return s, f, hw

    def _start(self):
        """Where an empty ring starts: sector 0, or the first sector after the orphans."""
        t = 0
        while t < self.nsec - 1 and self._pin[t]:
            t += 1
        return t

    def _header_ok(self, hb):
        return self._parse_header(hb) is not None

    def _seq_range(self, i):
        """(lowest, highest, count) of the purchase seqs in sector `i` (repairing none)."""
        buf = self._rec
        lo = hi = cnt = 0
        for slot in range(1, self.slots + 1):
            self.dev.readblocks(i, buf, slot * SLOT)
            if purchase.is_valid(buf):
                s = purchase.seq_of(buf)
                lo = s if not cnt else min(lo, s)
                hi = max(hi, s)
                cnt += 1
        return lo, hi, cnt

    def _acks_in(self, i):
        """The highest watermark of the valid ack records in sector `i` (0 if none)."""
        buf = self._rec
        w = 0
        for slot in range(1, self.slots + 1):
            self.dev.readblocks(i, buf, slot * SLOT)
            if self._is_ack(buf):
                w = max(w, struct.unpack_from("<I", buf, 4)[0])
        return w

    def _place(self, i, lo, hi):
        """The sector id of sector `i`, whose header is lost, from its neighbours' headers and
        its seqs lo..hi: the one before the next sector, or after the previous; 0 if neither fits."""
        n = self.nsec
        sid, first = self._sid, self._first
        nx, pv = (i + 1) % n, (i - 1) % n
        if sid[nx] > 1 and hi < first[nx] and sid[pv] != sid[nx] - 1:
            return sid[nx] - 1
        if sid[pv] > 0 and first[pv] <= lo and sid[nx] != sid[pv] + 1:
            return sid[pv] + 1
        return 0

    def _repair(self, i, slot, buf):
        """True if the non-blank slot in `buf`, not a valid record, is a purchase one bit
        from valid: repaired in `buf`, counted and logged (once per seq)."""
        key = i * (self.slots + 1) + slot
        if buf == _BLANK or key == self._nofix or buf[0] == _ACK_TYPE:
            return False
        if fix_one_bit(buf, purchase.is_valid) < 0:
            self._nofix = key  # torn: the uplink's next read passes it without retrying
            return False
        s = purchase.seq_of(buf)
        if s > self._fix_seq:
            self._fix_seq = s
            self._dmg[2] += 1
            self.log.error("journal: purchase seq %d (sector %d slot %d) failed its checksum: one bit repaired "
                           "(flash decay)" % (s, i, slot))
        return True

    def _is_ack(self, buf):
        return buf[0] == _ACK_TYPE and sealed_ok(buf, _ACK_CRC)

    def _count_free(self, w):
        """Sectors that may be erased under watermark `w`, the head excluded."""
        n = self.nsec
        h = self._head
        pin = self._pin
        if h < 0:
            return n - sum(pin)
        free = 0
        i = (h + 1) % n
        while i != h:
            if pin[i]:
                break
            if self._sid[i] == 0:
                free += 1
            elif self._first[(i + 1) % n] - 1 <= w:  # its last purchase is acknowledged
                free += 1
            else:
                break
            i = (i + 1) % n
        return free

    def _open(self, w):
        """Erase the next sector of the ring (unless erased this boot) and start it."""
        n = self.nsec
        h = self._head
        t = (h + 1) % n if h >= 0 else self._start()
        sid = self._sid[h] + 1 if h >= 0 else 1
        if self._ready != t:
            self.dev.ioctl(BLOCK_ERASE, t)
        self._ready = -1
        self._sid[t] = 0
        hb = self._hdr
        struct.pack_into(_HDR, hb, 0, _MAGIC, sid, self._next, w)
        seal(hb, _HDR_CRC)
        self.dev.writeblocks(t, hb, 0)
        self._sid[t] = sid
        self._first[t] = self._next
        self._head = t
        self._used = 0
        self._free -= 1
