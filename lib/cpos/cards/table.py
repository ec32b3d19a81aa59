"""The card table on flash: lookups, deltas, atomic snapshot installs.

Owns the table's flash region (one block device, e.g. an `esp32.Partition`, a
`cpos.blockfile.BlockFile` or `simulator.norflash.NorFlash`) and the small RAM state
that goes with it: one page buffer, the page index, the card overlay and the change
store's bucket map. RAM does not grow with the number of cards. Layout and formats:
docs/formats.md ("Card table").

    block 0, 1      commit records (the newest valid one names the live slot)
    slot 0, slot 1  each one image: a header block with the page index, then the pages
    change area     the change store (cpos.cards.changes): buckets of deltas by account

A lookup reads the card's page and its account's bucket; a delta is appended to one
bucket (one program, no erase); a bucket that fills is rewritten alone (one erase),
in a bounded `step` between messages. A snapshot install writes the other slot one
chunk at a time, checks each page as it lands, and switches by writing one commit
record, so a power cut leaves the old table or the new one; taps are served from the
old table until then. No step rewrites the whole table.
"""
import struct

from cpos.blockdev import BLOCK_COUNT, BLOCK_ERASE, BLOCK_SIZE
from cpos.compat import const
from cpos.cards import layout
from cpos.cards.layout import PAGE, PAGE_DATA_END, Cursor, uid_hash, rd16, rd32
from cpos.crc import seal, sealed_ok
from cpos.cards.delta import Delta, BALANCE, BLOCK, UNBLOCK, NEW_CARD, REPLACE, LIMITS, PLACES, ENROL, TOTALS, JUMP, KINDS
from cpos.cards.overlay import Overlay, CARD, C_STATUS, C_ACCOUNT, is_card_kind
from cpos.cards import changes
from cpos.cards.changes import ChangeStore, HDR as _CHG_HDR, NONE as _NONE
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
NO_SPACE = const(4)  # card overlay or a bucket full of live changes: needs a snapshot

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

# _changes_into keeps the newest record of each kind that sets an account's state: a slot per
# kind, a new card and a replacement sharing one (each sets all of it); 0xFF: not kept
_SLOT = b"\xff\x00\xff\xff\x01\x01\x02\x03\x04\x05\xff"  # by kind: BALANCE 1 .. JUMP 10 (KINDS)
_SLOTS = const(6)
_SB_BLOCKS = const(2)
_SB_MAGIC = b"CPSB"
_SB_FMT = "<4sBBHIIIHHII"  # magic fmt(2) slot 0 seq version included_seq n_pages 0 hdr_crc crc
_SB_LEN = const(32)
_SB_FORMAT = const(2)  # format 2: slots hold only images; deltas live in the change store


def geometry(nblocks, change_blocks=0):
    """(slot_len, first change block, buckets, spares) of a partition of `nblocks` blocks.

    The change area defaults to a fifth of the partition (at least 2 blocks), an eighth
    of it spare. The same block count always gives the same geometry."""
    if change_blocks <= 0:
        change_blocks = max(2, nblocks // 5)
    ns = max(1, change_blocks // 8)
    nb = change_blocks - ns
    slot_len = (nblocks - _SB_BLOCKS - change_blocks) // 2
    if nb < 1 or slot_len < 2:
        raise ValueError("block device too small for a card table")
    return slot_len, _SB_BLOCKS + 2 * slot_len, nb, ns


class CardTable:
    """The terminal's card table. `lookup` is the tap path; the rest is the sync path."""

    def __init__(self, dev, card_slots=24, change_blocks=0):
        if dev.ioctl(BLOCK_SIZE, 0) != PAGE:
            raise ValueError("the card table needs 4096-byte blocks")
        nblocks = dev.ioctl(BLOCK_COUNT, 0)
        self.dev = dev
        self._slot_len, first, nb, ns = geometry(nblocks, change_blocks)
        self._img_blocks = self._slot_len
        self.max_pages = min(layout.MAX_PAGES, self._img_blocks - 1)
        self.page = bytearray(PAGE)
        self.index = bytearray(2 * self.max_pages)
        self.ov = Overlay(card_slots)
        self._cur = Cursor()
        self._delta = Delta()
        self._newest = [-1] * _SLOTS  # _changes_into: the newest record of each kind
        self.chg = ChangeStore(dev, first, nb, ns, self.page, self._delta)
        self._tag = bytearray(4)
        self.ref_keys = [0, 0, 0]
        self._inst = None
        self.mount()

    # -- geometry -------------------------------------------------------------------
    def _img_start(self, slot):
        return _SB_BLOCKS + slot * self._slot_len

    def ram_bytes(self):
        """Bytes of preallocated buffers the table holds (page, index, overlay, bucket map)."""
        c = self.chg
        return (len(self.page) + len(self.index) + len(self.ov.cards) + len(c.blk) + len(c.fill)
                + len(c.live) + 4)

    # -- mounting -------------------------------------------------------------------
    def mount(self):
        """(Re)read the commit records, the live header and index, and the change store."""
        self.state = EMPTY
        self.needs_resync = False
        self.version = 0
        self.included_seq = 0
        self.slot = 1  # so the first install goes to slot 0
        self.n_pages = 0
        self.n_cards = 0
        self._sb_seq = 0
        self._sb_block = 1
        self.ov.clear()
        self.chg.reset(0)
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
            if f[1] != _SB_FORMAT or f[2] > 1:
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
            self._broken()
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
        try:
            # the store's tag: the commit sequence twice over, so that the tags of two
            # images differ in at least two bits and one decayed bit is told apart
            self.chg.mount((seq & 0xFFFF) | ((seq & 0xFFFF) << 16), self._replayed)
        except ValueError:
            self._broken()
            return
        # the table's version is the newest delta's: each was durable before the next was
        # taken, so every older one is on flash (or overridden by a newer one in its bucket)
        if self.chg.top_version > self.version:
            self.version = self.chg.top_version
            self.included_seq = self.chg.top_inc
        if self.chg.suspect:
            self.needs_resync = True

    def _replayed(self, buf, off, n):
        """A card change found in the change store at mount (the Delta decoded), into the
        overlay; buckets come in any order, the overlay keeps the newest per field."""
        d = self._delta
        if not self.ov.room(d):
            raise ValueError("more card changes than the overlay holds")
        self.ov.apply(d)

    def _blank(self, p, o):
        """True if p[o:] is erased; allocates nothing (mount runs on a tight heap)."""
        for i in range(o, PAGE):
            if p[i] != 0xFF:
                return False
        return True

    def _broken(self):
        self.state = BROKEN
        self.needs_resync = True

    # -- the tap path ---------------------------------------------------------------
    def lookup(self, uid, card, spends):
        """Fill `card` (CardRecord) and `spends` (Spends) for `uid`; FOUND, NOT_FOUND or CORRUPT.

        Reads the card's page and its account's bucket (two block reads) and allocates
        nothing in the steady state. Never raises: damage of any kind gives CORRUPT and
        sets `needs_resync`. `card.balance` is the synced balance (as of `version`).
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
            if self._changes_into(card.account, card, spends) == 0 and f & C_ACCOUNT:
                raise ValueError("new card without its account state")
            return FOUND
        except Exception:
            self.needs_resync = True
            return CORRUPT

    def _changes_into(self, acct, card, spends):
        """Apply the account's deltas in its bucket; how many there were.

        A bucket holds every change to its accounts since its last refresh: in a rush that is
        a hundred balance changes of one account (REFRESH_AT). Each kind replaces what it
        carries, and a new card or replacement replaces all of it, so only the newest record
        of each kind counts: one pass notes where those are, then they are decoded and
        applied oldest first (at most six decodes, not one per change)."""
        c = self.chg
        b = changes.account_bucket(acct, c.nb)
        blk = c.block_of(b)
        if blk == _NONE:
            return 0
        p = self.page
        self.dev.readblocks(c.first + blk, p)
        end = c.fill_of(b)
        o = _CHG_HDR
        newest = self._newest  # offset of the newest record of each kind (_SLOT), -1: none
        for i in range(_SLOTS):
            newest[i] = -1
        got = 0
        a0 = acct & 0xFF
        a1 = (acct >> 8) & 0xFF
        a2 = acct >> 16
        while o < end:
            ln = p[o] | (p[o + 1] << 8)
            r = o + 2
            k = p[r + 2]
            # balance, totals and the other account kinds carry the account at byte 11 (a
            # jump has its `from` version there)
            if (p[r + 11] == a0 and p[r + 12] == a1 and p[r + 13] == a2 and k != BLOCK and k != UNBLOCK
                    and k != NEW_CARD and k != REPLACE and k != JUMP) or \
                    ((k == NEW_CARD or k == REPLACE) and changes.rec_account(p, r) == acct):
                i = _SLOT[k] if k <= KINDS else 0xFF
                if i != 0xFF:
                    newest[i] = o
                got += 1
            o = r + ln
        d = self._delta
        while True:  # the noted records, oldest first
            o = -1
            for i in range(_SLOTS):
                if newest[i] >= 0 and (o < 0 or newest[i] < newest[o]):
                    o = i
            if o < 0:
                return got
            r = newest[o] + 2
            newest[o] = -1
            d.decode(p, r, p[r - 2] | (p[r - 1] << 8), False)  # verified when written or mounted
            k = d.kind
            if k == BALANCE:
                card.balance = d.value
            elif k == NEW_CARD or k == REPLACE:
                dc = d.card
                card.balance = dc.balance
                card.places = dc.places
                card.topup_enrolled = dc.topup_enrolled
                card.topup_amount_kr = dc.topup_amount_kr
                for i in range(6):
                    card.limits[i] = dc.limits[i]
                self._totals(d, spends)
            elif k == LIMITS:
                for i in range(6):
                    card.limits[i] = d.card.limits[i]
            elif k == PLACES:
                card.places = d.value
            elif k == ENROL:
                card.topup_enrolled = d.card.topup_enrolled
                card.topup_amount_kr = d.card.topup_amount_kr
            elif k == TOTALS:
                self._totals(d, spends)

    def _totals(self, d, spends):
        for w in range(3):
            spends.keys[w] = d.spends.keys[w]
        for i in range(6):
            spends.totals[i] = d.spends.totals[i]

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

        Durable (in the change store) before it returns APPLIED, and seen by the next
        lookup. Flash work: one append; now and then one bucket rewrite (one erase) when
        the delta's bucket is full. NO_SPACE (and `needs_snapshot`) when the card overlay
        or the bucket is full of live changes: only a snapshot helps.

        A JUMP applies only to a table at exactly its `from` version (then the table is at
        the JUMP's version, with its included_seq); at or below the table's version it is a
        DUPLICATE, otherwise a GAP. It is kept in the change store like any delta, so a
        reboot mounts at the jumped version."""
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
        if d.version != self.version + 1 if d.kind != JUMP else d.value != self.version:
            self.needs_resync = True
            return GAP
        if not self.ov.room(d):
            return NO_SPACE
        c = self.chg
        b = changes.rec_bucket(buf, 0, c.nb)
        n = len(buf)
        if not c.room(b, n):
            try:
                free = c.refresh(b)
            except ValueError:
                self._broken()
                return GAP
            if free < 2 + n:
                return NO_SPACE
            d.decode(buf)  # the refresh reused the Delta
        c.append(b, buf)
        if is_card_kind(d.kind):
            self.ov.apply(d)
        self.version = d.version
        self.included_seq = d.included_seq
        return APPLIED

    @property
    def installing(self):
        """True while a snapshot is arriving."""
        return self._inst is not None

    @property
    def needs_snapshot(self):
        """True when the change store is half full of live changes, or the card overlay
        three quarters full: the next sync request asks for a snapshot, which folds them."""
        return self.state == OK and (self.chg.full() or self.ov.nearly_full())

    @property
    def wants_step(self):
        """True when `step` has upkeep to do (a bucket past its refresh mark, a block to erase,
        no spare block erased ahead)."""
        return self.state == OK and self.chg.wants_step()

    def step(self):
        """One bounded piece of upkeep between messages: refresh one filled bucket (one block
        read, one erase, one block programmed), or erase one block (a replaced one, or a
        spare ahead of need). True if it did something."""
        if self.state != OK:
            return False
        try:
            return self.chg.step()
        except ValueError:
            self._broken()
            return False

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
        from cpos.cards.install import Receiver
        self._inst = Receiver(self, 1 - self.slot, version, included_seq, total_chunks)
        return INSTALL_OK

    def install_chunk(self, index, data):
        """Write chunk `index` (0-based, in order) beside the live table; each page is read
        back and checked as soon as it is complete (one page per chunk of 4 KB)."""
        st = self._inst
        if st is None:
            return INSTALL_IDLE
        if type(index) is not int or index >= st.total:
            return INSTALL_OUT_OF_ORDER
        if index < st.got:
            return INSTALL_DUPLICATE
        if index != st.got:
            return INSTALL_OUT_OF_ORDER
        try:
            st.chunk(data)
        except ValueError:
            self._inst = None
            return INSTALL_BAD
        return INSTALL_OK

    def install_abort(self):
        self._inst = None

    def install_commit(self):
        """Check the received image is whole and switch to it in one step; INSTALL_OK or INSTALL_BAD."""
        st = self._inst
        self._inst = None
        if st is None:
            return INSTALL_IDLE
        try:
            n_pages = st.finish()
        except ValueError:
            return INSTALL_BAD
        self._switch(st.slot, st.version, st.inc, n_pages)
        return INSTALL_OK

    def _switch(self, slot, version, inc, n_pages):
        """Write the commit record naming the new image, then remount: the one atomic step.
        Every bucket of the change store belongs to the old image's commit sequence, so the
        new image starts with an empty store without erasing anything."""
        p = self.page
        self.dev.readblocks(self._img_start(slot), p)
        hdr_crc = rd32(p, PAGE_DATA_END)
        rec = bytearray(struct.pack(_SB_FMT, _SB_MAGIC, _SB_FORMAT, slot, 0, self._sb_seq + 1, version,
                                    inc, n_pages, 0, hdr_crc, 0))
        seal(rec)
        blk = 1 - self._sb_block
        self.dev.ioctl(BLOCK_ERASE, blk)
        self.dev.writeblocks(blk, rec, 0)
        self.mount()
