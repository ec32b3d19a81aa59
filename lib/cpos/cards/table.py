"""The card table on flash: lookups, deltas, atomic snapshot installs and compaction.

Owns the table's flash region (one block device, e.g. an `esp32.Partition`, a
`cpos.blockfile.BlockFile` or `simulator.norflash.NorFlash`) and the small RAM state
that goes with it: one page buffer, the page index and the delta overlay. RAM does not
grow with the number of cards. Layout and formats: docs/formats.md ("Card table").

    block 0, 1      commit records (the newest valid one names the live slot)
    slot 0, slot 1  each: LOG_BLOCKS delta-log blocks, then the image
                    (one header block with the page index, then the pages)

A lookup reads one block; deltas go to the live slot's log and to the RAM overlay;
a snapshot install or a compaction writes the other slot and switches by writing
one commit record, so a power cut leaves the old table or the new one.
"""
import struct

from cpos.blockdev import BLOCK_COUNT, BLOCK_ERASE, BLOCK_SIZE
from cpos.compat import const
from cpos.cards import layout
from cpos.cards.layout import PAGE, PAGE_DATA_END, Cursor, uid_hash, rd16, rd32
from cpos.crc import seal, sealed_ok
from cpos.cards.delta import Delta, MAX_DELTA
from cpos.cards.overlay import Overlay, CARD, C_STATUS, C_ACCOUNT
from cpos.uid import UID_LENGTHS, uid_kind

# lookup results
FOUND = const(0)
NOT_FOUND = const(1)
CORRUPT = const(2)  # caller refuses with reasons.NEEDS_UPDATE and asks for a resync

# apply_delta results
APPLIED = const(0)
DUPLICATE = const(1)  # version already applied (or older): ignored
GAP = const(2)  # a version is missing (or no table): needs resync
MALFORMED = const(3)
NO_SPACE = const(4)  # overlay/log full and compaction impossible: needs a snapshot

# install results
INSTALL_OK = const(0)
INSTALL_DUPLICATE = const(1)  # chunk already written: ignored
INSTALL_OUT_OF_ORDER = const(2)
INSTALL_BAD = const(3)  # image malformed, too big or failed verification: old table stays
INSTALL_OLD = const(4)  # older than the live table
INSTALL_IDLE = const(5)  # no install in progress

# table states
EMPTY = const(0)
OK = const(1)
BROKEN = const(2)

LOG_BLOCKS = const(4)  # default delta-log blocks per slot
_SB_BLOCKS = const(2)
_SB_MAGIC = b"CPSB"
_SB_FMT = "<4sBBHIIIHHII"  # magic fmt slot 0 seq version included_seq n_pages 0 hdr_crc crc
_SB_LEN = const(32)

class CardTable:
    """The terminal's card table. `lookup` is the tap path; the rest is the sync path."""

    def __init__(self, dev, acc_slots=16, card_slots=24, log_blocks=LOG_BLOCKS):
        if dev.ioctl(BLOCK_SIZE, 0) != PAGE:
            raise ValueError("the card table needs 4096-byte blocks")
        nblocks = dev.ioctl(BLOCK_COUNT, 0)
        self.dev = dev
        self._slot_len = (nblocks - _SB_BLOCKS) // 2
        if log_blocks < 1:
            raise ValueError("the delta log needs at least one block")
        self.log_blocks = log_blocks  # geometry: the same value on every open of a device
        self._img_blocks = self._slot_len - log_blocks
        if self._img_blocks < 2:
            raise ValueError("block device too small for a card table")
        self.max_pages = min(layout.MAX_PAGES, self._img_blocks - 1)
        self.page = bytearray(PAGE)
        self.index = bytearray(2 * self.max_pages)
        self.ov = Overlay(acc_slots, card_slots)
        self._cur = Cursor()
        self._delta = Delta()
        self._tag = bytearray(4)
        self.ref_keys = [0, 0, 0]
        self._inst = None
        # called once per page read while compacting (seconds on a large table, all in
        # one call): the app feeds its watchdog from it
        self.progress = None
        self.mount()

    # -- geometry -------------------------------------------------------------------
    def _log_start(self, slot):
        return _SB_BLOCKS + slot * self._slot_len

    def _img_start(self, slot):
        return self._log_start(slot) + self.log_blocks

    def ram_bytes(self):
        """Bytes of preallocated buffers the table holds (page, index, overlays)."""
        return len(self.page) + len(self.index) + len(self.ov.acc) + len(self.ov.cards) + 4 + 20

    # -- mounting -------------------------------------------------------------------
    def mount(self):
        """(Re)read the commit records, the live header and index, and replay the delta log."""
        self.state = EMPTY
        self.needs_resync = False
        self.version = 0
        self.included_seq = 0
        self.slot = 1  # so the first install goes to slot 0
        self.n_pages = 0
        self.n_cards = 0
        self._sb_seq = 0
        self._sb_block = 1
        self._log_pos = None
        self.ov.clear()
        best = None
        damaged = False
        p = self.page
        for blk in range(_SB_BLOCKS):
            self.dev.readblocks(blk, p)
            rec = bytes(p[:_SB_LEN])
            if not self._blank(p, _SB_LEN):
                damaged = True  # nothing is ever written after the record
            if rec == b"\xff" * _SB_LEN:
                continue
            if not sealed_ok(rec) or rec[:4] != _SB_MAGIC:
                damaged = True
                continue
            f = struct.unpack(_SB_FMT, rec)
            if f[1] != 1 or f[2] > 1:
                damaged = True
                continue
            if best is None or f[4] > best[4]:
                best = f
                self._sb_block = blk
        if damaged:
            self.needs_resync = True
        if best is None:
            if damaged:
                self.state = BROKEN
            return
        _, _, slot, _, seq, version, inc, n_pages, _, hdr_crc, _ = best
        self._sb_seq = seq
        self.slot = slot
        try:
            self.dev.readblocks(self._img_start(slot), p)
            hv, hi, keys, hn, hc = layout.decode_header(p)
            if (hv, hi, hn) != (version, inc, n_pages) or rd32(p, PAGE_DATA_END) != hdr_crc \
                    or hn > self.max_pages or hn < 1:
                raise ValueError("header does not match its commit record")
        except ValueError:
            self.state = BROKEN
            self.needs_resync = True
            return
        self.index[0:2 * hn] = p[layout.HDR_FIXED:layout.HDR_FIXED + 2 * hn]
        self.n_pages = hn
        self.n_cards = hc
        for w in range(3):
            self.ref_keys[w] = keys[w]
        self._tag[:] = struct.pack("<I", version & 0xFFFFFFFF)
        self.version = version
        self.included_seq = inc
        self.state = OK
        self._replay()

    def _blank(self, p, o):
        """True if p[o:] is erased; allocates nothing (mount runs on a tight heap)."""
        for i in range(o, PAGE):
            if p[i] != 0xFF:
                return False
        return True

    def _valid_at(self, p, o):
        if o + 2 > PAGE:
            return False
        ln = rd16(p, o)
        if ln < 16 or ln > MAX_DELTA or o + 2 + ln > PAGE:
            return False
        try:
            self._delta.decode(memoryview(p)[o + 2:o + 2 + ln])
        except ValueError:
            return False
        return True

    def _replay(self):
        """Apply the live slot's delta log to the overlay, block by block. apply_delta goes
        on at the start of the next block when a delta does not fit in a block's tail, and
        after a torn write found here; so a blank tail, or a torn last record, ends the log
        only when the next block is blank too."""
        base = self._log_start(self.slot)
        p = self.page
        d = self._delta
        tail = None  # (block, offset) where the next delta goes
        for s in range(self.log_blocks):
            self.dev.readblocks(base + s, p)
            if tail is not None and rd16(p, 0) == 0xFFFF and self._blank(p, 0):
                break  # nothing was written past the previous block
            tail = None
            o = 0
            while o + 2 <= PAGE:
                ln = rd16(p, o)
                if ln == 0xFFFF and self._blank(p, o):
                    tail = (s, o)
                    break
                if not self._valid_at(p, o):
                    # a torn last write, or damage: damage if anything valid follows in this
                    # block. A torn delta never reached the table: ask for a resync anyway.
                    self.needs_resync = True
                    for o2 in range(o + 1, PAGE - 17):
                        if self._valid_at(p, o2):
                            self._broken()
                            return
                    tail = (s + 1, 0) if s + 1 < self.log_blocks else None
                    break
                if d.version != self.version + 1 or not self.ov.room(d):
                    self._broken()
                    return
                self._apply(d)
                o += 2 + ln
        self._log_pos = tail  # None: the log is full, the next delta compacts first

    def _broken(self):
        self.state = BROKEN
        self.needs_resync = True

    # -- overlay --------------------------------------------------------------------
    def _apply(self, d):
        self.ov.apply(d)
        self.version = d.version
        self.included_seq = d.included_seq

    # -- the tap path ---------------------------------------------------------------
    def lookup(self, uid, card, spends):
        """Fill `card` (CardRecord) and `spends` (Spends) for `uid`; FOUND, NOT_FOUND or CORRUPT.

        Reads at most one flash block and allocates nothing in the steady state. Never
        raises: damage of any kind gives CORRUPT and sets `needs_resync`.
        `card.balance` is the synced balance (as of `version`).
        """
        try:
            if self.state != OK:
                return CORRUPT
            n = len(uid)
            kind = uid_kind(n)
            if kind < 0:
                return NOT_FOUND
            h = uid_hash(uid, 0, n)
            ov = self.ov
            ce = ov.card_find(uid, n, kind, h)
            f = ov.cards[ce * CARD] if ce >= 0 else 0
            if f & C_ACCOUNT:
                card.clear()
                spends.clear()
                card.account = ov.card_account(ce)
            else:
                r = self._base_lookup(uid, n, kind, h, card, spends)
                if r != FOUND:
                    return r
            if f & C_STATUS:
                card.status = (f >> 2) & 3
            ai = ov.acc_find(card.account)
            if ai >= 0:
                ov.acc_apply(ai, card, spends)
            elif f & C_ACCOUNT:
                raise ValueError("overlay card without its account")
            return FOUND
        except Exception:
            self.needs_resync = True
            return CORRUPT

    def _page_for(self, prefix):
        idx = self.index
        lo = 0
        hi = self.n_pages - 1
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if idx[2 * mid] | (idx[2 * mid + 1] << 8) <= prefix:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _read_page(self, p):
        """Read page p of the live image into self.page; False if it is damaged."""
        self.dev.readblocks(self._img_start(self.slot) + 1 + p, self.page)
        if not layout.page_ok(self.page, p, self._tag):
            self.needs_resync = True
            return False
        return True

    def _base_lookup(self, uid, n, kind, h, card, spends):
        p = self._page_for(h >> 8)
        if not self._read_page(p):
            return CORRUPT
        pg = self.page
        cnt = rd16(pg, 2)
        lo = 0
        hi = cnt - 1
        while lo <= hi:
            mid = (lo + hi) >> 1
            off = rd16(pg, PAGE_DATA_END - 2 * (mid + 1))
            rn = UID_LENGTHS[pg[off] & 3]
            c = uid_hash(pg, off + 1, rn) - h
            if c == 0:
                c = rn - n
                j = 0
                while c == 0 and j < n:
                    c = pg[off + 1 + j] - uid[j]
                    j += 1
            if c == 0:
                end = layout.record_end(pg, mid, cnt)
                layout.decode_record_into(pg, off, end, self._cur, card, spends, self.ref_keys)
                return FOUND
            if c < 0:
                lo = mid + 1
            else:
                hi = mid - 1
        return NOT_FOUND

    # -- deltas ---------------------------------------------------------------------
    def apply_delta(self, buf):
        """Apply one encoded delta (cpos.cards.delta); APPLIED, DUPLICATE, GAP, MALFORMED or NO_SPACE.

        Durable (in the delta log) before it returns APPLIED, and seen by the next lookup.
        """
        d = self._delta
        try:
            d.decode(buf)
        except ValueError:
            return MALFORMED
        if self.state != OK:
            self.needs_resync = True
            return GAP
        if d.version <= self.version:
            return DUPLICATE
        if d.version != self.version + 1:
            self.needs_resync = True
            return GAP
        if not (self.ov.room(d) and self._log_room(len(buf))):
            if self.compact() != INSTALL_OK:
                return NO_SPACE
            d.decode(buf)
            if not (self.ov.room(d) and self._log_room(len(buf))):
                return NO_SPACE
        s, o = self._log_pos
        if o + 2 + len(buf) > PAGE:
            s += 1
            o = 0
        rec = bytearray(2 + len(buf))
        rec[0] = len(buf) & 0xFF
        rec[1] = len(buf) >> 8
        rec[2:] = buf
        self.dev.writeblocks(self._log_start(self.slot) + s, rec, o)
        self._log_pos = (s, o + len(rec))
        self._apply(d)
        return APPLIED

    def _log_room(self, n):
        if self._log_pos is None:
            return False
        s, o = self._log_pos
        return o + 2 + n <= PAGE or s + 1 < self.log_blocks

    @property
    def installing(self):
        """True while a snapshot is arriving (a compaction now would restart it)."""
        return self._inst is not None

    @property
    def needs_compaction(self):
        """True when the overlay or the log is more than half full: compact when idle."""
        if self.state != OK:
            return False
        return (self.ov.half_full()
                or self._log_pos is None or self._log_pos[0] * 2 >= self.log_blocks)

    # -- installs -------------------------------------------------------------------
    def install_begin(self, version, included_seq, total_chunks):
        """Start receiving a snapshot image (layout.build_image) in `total_chunks` chunks."""
        self._inst = None
        for v in (version, included_seq):
            if type(v) is not int or not 0 <= v <= 0xFFFFFFFF:
                return INSTALL_BAD
        if type(total_chunks) is not int or total_chunks < 1:
            return INSTALL_BAD
        if self.state == OK and version < self.version:
            return INSTALL_OLD
        self._inst = [1 - self.slot, version, included_seq, total_chunks, 0, 0]
        return INSTALL_OK

    def install_chunk(self, index, data):
        """Write chunk `index` (0-based, in order) beside the live table."""
        st = self._inst
        if st is None:
            return INSTALL_IDLE
        if type(index) is not int or index >= st[3]:
            return INSTALL_OUT_OF_ORDER
        if index < st[4]:
            return INSTALL_DUPLICATE
        if index != st[4]:
            return INSTALL_OUT_OF_ORDER
        pos = st[5]
        if pos + len(data) > self._img_blocks * PAGE:
            self._inst = None
            return INSTALL_BAD
        self._write_image(st[0], pos, data)
        st[4] += 1
        st[5] = pos + len(data)
        return INSTALL_OK

    def _write_image(self, slot, pos, data):
        mv = memoryview(data)
        start = self._img_start(slot)
        i = 0
        while i < len(data):
            blk = start + (pos + i) // PAGE
            o = (pos + i) % PAGE
            if o == 0:
                self.dev.ioctl(BLOCK_ERASE, blk)
            k = min(PAGE - o, len(data) - i)
            self.dev.writeblocks(blk, mv[i:i + k], o)
            i += k

    def install_abort(self):
        self._inst = None

    def install_commit(self):
        """Verify the received image and switch to it in one step; INSTALL_OK or INSTALL_BAD."""
        st = self._inst
        self._inst = None
        if st is None:
            return INSTALL_IDLE
        slot, version, inc, total, got, nbytes = st
        if got != total:
            return INSTALL_BAD
        try:
            from cpos.cards.install import verify_image
            n_pages = verify_image(self, slot, version, inc, nbytes)
        except ValueError:
            return INSTALL_BAD
        self._switch(slot, version, inc, n_pages)
        return INSTALL_OK

    def _switch(self, slot, version, inc, n_pages):
        """Erase the new slot's log, write the commit record, remount. The one atomic step."""
        p = self.page
        self.dev.readblocks(self._img_start(slot), p)
        hdr_crc = rd32(p, PAGE_DATA_END)
        for s in range(self.log_blocks):
            self.dev.ioctl(BLOCK_ERASE, self._log_start(slot) + s)
        rec = bytearray(struct.pack(_SB_FMT, _SB_MAGIC, 1, slot, 0, self._sb_seq + 1, version, inc,
                                    n_pages, 0, hdr_crc, 0))
        seal(rec)
        blk = 1 - self._sb_block
        self.dev.ioctl(BLOCK_ERASE, blk)
        self.dev.writeblocks(blk, rec, 0)
        self.mount()

    def compact(self):
        """Fold the delta overlay into a new image in the other slot and switch to it.

        INSTALL_OK, or INSTALL_BAD if the live table is damaged (needs resync) or the new
        image would not fit. Constant RAM: one page read and one page built at a time.
        Takes seconds on a large table: call it when `needs_compaction` and idle.
        """
        from cpos.cards.install import compact
        return compact(self)
