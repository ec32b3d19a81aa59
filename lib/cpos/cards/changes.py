"""The card table's change store: every delta since the image, on flash, by account.

Owns the change area of the card-table partition (docs/formats.md, "Card table",
"Change store"): `nb` buckets, each one flash block holding length-prefixed deltas
(the bytes the backend sent), plus `ns` spare blocks. A delta about an account goes to
its account's bucket (a card block/unblock to its UID's), appended in place: NOR
programs 1 -> 0, so an append is one program and no erase. A bucket that fills is
refreshed: the deltas that newer ones in the same bucket fully override are dropped
and the rest are written, in order, to a spare block (one erase), whose sealed header
is its commit; the old block becomes the next spare. Work per delta: one program,
plus one block rewrite per bucket-full of deltas; RAM: 6 bytes per bucket and one
bit per block.

A JUMP delta (a catch-up's version jump) names no account: it goes to bucket JUMP_BUCKET,
and a refresh drops a JUMP only for a newer JUMP, so the newest one stays while it may be
the newest version in the store (the table's version at mount is the newest delta's).

Block: magic 'C' | format 2 | bucket u16 | seq u32 | tag u32 | base_end u16 | FFFF | crc32
(of the 16 bytes before it and of the records up to base_end), records from byte 20.
`tag` is the table's commit sequence (16 bits, twice): a new image makes every older bucket stale.
Format 2 may hold JUMP deltas, which format 1 did not; a format-1 block is not read (the
table mounts BROKEN and asks for a snapshot).
"""
from binascii import crc32

from cpos.compat import const
from cpos.cards.delta import MAX_DELTA, BALANCE, BLOCK, UNBLOCK, NEW_CARD, REPLACE, LIMITS, PLACES, ENROL, TOTALS, JUMP
from cpos.cards.layout import PAGE, rd16, rd32, uid_hash
from cpos.crc import sealed_ok

MAGIC = const(0x43)  # 'C'
FORMAT = const(2)  # 2: JUMP deltas may be in a bucket (docs/formats.md, "Change store")
HDR = const(20)
NONE = const(0xFFFF)
REFRESH_AT = const(3072)  # a bucket filled past this is refreshed in the next maintenance step
JUMP_BUCKET = const(0)  # where every JUMP delta goes: it names no account

_ACC_FIELDS = {BALANCE: 1, PLACES: 2, LIMITS: 4, ENROL: 8, TOTALS: 16, NEW_CARD: 31, REPLACE: 31}


def _wr16(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF


def _wr32(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


def account_bucket(acct, nb):
    return (acct ^ (acct >> 7) ^ (acct >> 15)) % nb


def rec_bucket(buf, off, nb):
    """The bucket of the delta at buf[off:] (its account's, its UID's for a block/unblock,
    JUMP_BUCKET for a jump)."""
    k = buf[off + 2]
    if k == JUMP:
        return JUMP_BUCKET
    if k == BLOCK or k == UNBLOCK:
        n = buf[off + 11]
        return uid_hash(buf, off + 12, n) % nb
    if k == NEW_CARD or k == REPLACE:
        o = off + 12 + buf[off + 11]
        if k == REPLACE:
            o += 1 + buf[o]
        return account_bucket(buf[o] | (buf[o + 1] << 8) | (buf[o + 2] << 16), nb)
    return account_bucket(buf[off + 11] | (buf[off + 12] << 8) | (buf[off + 13] << 16), nb)


def rec_account(buf, off):
    """The account a delta at buf[off:] sets state of, or -1 (block/unblock/jump). No allocation."""
    k = buf[off + 2]
    if k == BLOCK or k == UNBLOCK or k == JUMP:
        return -1
    o = off + 11
    if k == NEW_CARD or k == REPLACE:
        o += 1 + buf[o]
        if k == REPLACE:
            o += 1 + buf[o]
    return buf[o] | (buf[o + 1] << 8) | (buf[o + 2] << 16)


class ChangeStore:
    def __init__(self, dev, first, nb, ns, page, delta):
        self.dev = dev
        self.first = first
        self.nb = nb
        self.ns = ns
        self.total = nb + ns
        self.page = page  # shared with the table: one 4 KB buffer
        self._d = delta  # the table's reusable Delta
        self.blk = bytearray(2 * nb)  # block (relative) of each bucket, NONE: no block yet
        self.fill = bytearray(2 * nb)  # end of the valid records; bit 15: a torn append at the
        # end (refresh before the next)
        self.live = bytearray((self.total + 7) // 8)
        self.due = []  # buckets past REFRESH_AT, for `step`
        self.reset(0)

    def reset(self, tag):
        for i in range(2 * self.nb):
            self.blk[i] = 0xFF
            self.fill[i] = 0
        for i in range(len(self.live)):
            self.live[i] = 0
        self.tag = tag
        self.seq = 1
        self.used = 0  # bytes of records in live buckets
        self.cursor = 0
        self.due = []
        self.suspect = False
        self.stale = []  # sealed blocks a newer one replaced: erased in `step`
        self.ready = -1  # a free block `step` erased ahead, so that no delta waits for an erase
        self.rewrites = 0  # buckets refreshed since mount (a figure)
        self.top_version = 0  # the newest delta found at mount, and its included_seq
        self.top_inc = 0

    # -- small helpers ----------------------------------------------------------------
    def block_of(self, b):
        return rd16(self.blk, 2 * b)

    def fill_of(self, b):
        return rd16(self.fill, 2 * b) & 0x7FFF

    def _set_live(self, rel, on):
        if on:
            self.live[rel >> 3] |= 1 << (rel & 7)
        else:
            self.live[rel >> 3] &= ~(1 << (rel & 7)) & 0xFF

    def _is_live(self, rel):
        return self.live[rel >> 3] & (1 << (rel & 7))

    def _header_ok(self, p, tag):
        """(bucket, seq, base_end) if p starts like a bucket header of image `tag`, else None.

        Lenient on purpose, so that one decayed bit cannot hide a live bucket: a block is
        taken for one of ours if its tag matches, or if its magic and format do and its
        tag is one bit off; the CRC then says whether it is sealed (see mount)."""
        t = rd32(p, 8)
        if t != tag:
            x = t ^ tag
            if p[0] != MAGIC or p[1] != FORMAT or x & (x - 1):
                return None
        b = rd16(p, 2)
        end = rd16(p, 12)
        if end < HDR or end > PAGE:
            end = HDR
        return b, rd32(p, 4), end

    def _crc(self, p, end):
        mv = memoryview(p)
        return crc32(mv[HDR:end], crc32(mv[0:16])) & 0xFFFFFFFF

    # -- mount -----------------------------------------------------------------------
    def mount(self, tag, on_record):
        """Find each bucket's newest sealed block of image `tag`, check every delta in it (CRC)
        and call on_record(buf, off, n) for each card change, the Delta decoded; the newest
        version found is `top_version` (with `top_inc`).

        What a power cut can leave is told apart from damage (ValueError: the table
        refuses every card until a snapshot): a refresh writes its header last and the
        block it replaces is erased in the next step, so an unsealed block beside a sealed
        older one is a torn refresh, and an unsealed block alone must be blank past its
        header (a torn first block). A bad delta at a bucket's end, with nothing written
        past where it could end, is a torn append (`suspect`: the table asks for a
        resync, as the delta may be damage); anything past it is damage."""
        self.reset(tag)
        p = self.page
        h = memoryview(p)[0:HDR]  # the header first: a stale or blank block costs 20 bytes read
        bad = []  # (bucket, rel) of unsealed blocks of ours: rare, so a list
        blk = self.blk
        for rel in range(self.total):
            self.dev.readblocks(self.first + rel, h, 0)
            r = self._header_ok(h, tag)
            if r is None:
                continue
            b, seq, end = r
            self.dev.readblocks(self.first + rel, p)
            sealed = (p[0] == MAGIC and p[1] == FORMAT and rd32(p, 8) == tag and b < self.nb
                      and self._crc(p, end) == rd32(p, 16))
            if not sealed:
                if rd16(p, HDR) != 0xFFFF:  # its first delta says which bucket it is
                    try:
                        self._d.decode(p, HDR + 2, rd16(p, HDR))
                        b = rec_bucket(p, HDR + 2, self.nb)
                    except (ValueError, IndexError):
                        pass
                bad.append((b if b < self.nb else 0, rel))
                continue
            if seq >= self.seq:
                self.seq = seq + 1
            old = rd16(blk, 2 * b)
            if old != NONE:  # two sealed blocks of one bucket: the newer wins (no dict: the
                self.dev.readblocks(self.first + old, h, 0)  # heap may be fragmented here)
                if rd32(h, 4) > seq:
                    self.stale.append(rel)
                    continue
                self._set_live(old, False)
                self.stale.append(old)
            _wr16(blk, 2 * b, rel)
            self._set_live(rel, True)
        for b, rel in bad:
            if rd16(blk, 2 * b) == NONE:
                self.dev.readblocks(self.first + rel, p)
                for i in range(HDR, PAGE):
                    if p[i] != 0xFF:
                        raise ValueError("a bucket's only block is damaged")
        bad = None
        d = self._d
        for b in range(self.nb):
            rel = rd16(blk, 2 * b)
            if rel == NONE:
                continue
            self.dev.readblocks(self.first + rel, p)
            end = rd16(p, 12)
            o = HDR
            torn = False
            while o + 2 <= PAGE:
                ln = rd16(p, o)
                if ln == 0xFFFF and o >= end:
                    # the end, if nothing past it was touched: a torn append may have
                    # cleared a few bits further on and none of its length's
                    for i in range(o + 2, min(PAGE, o + 2 + MAX_DELTA)):
                        if p[i] != 0xFF:
                            torn = True
                            self.suspect = True
                            break
                    break
                r = o + 2
                try:
                    # the CRC (C code) and the fixed head; only card changes are decoded
                    # whole (for the overlay): mount time stays a block read and a CRC a delta
                    if ln < 16 or ln > MAX_DELTA or r + ln > PAGE:
                        raise ValueError("record length")
                    k = p[r + 2]
                    if p[r] != 0x44 or p[r + 1] != 1 or k < BALANCE or k > JUMP \
                            or not sealed_ok(memoryview(p)[r:r + ln]):
                        raise ValueError("not a sealed delta")
                    card = k == BLOCK or k == UNBLOCK or k == NEW_CARD or k == REPLACE
                    if card:
                        d.decode(p, r, ln, False)
                    if rec_bucket(p, r, self.nb) != b:
                        raise ValueError("record in the wrong bucket")
                except (ValueError, IndexError):
                    if o < end:  # inside the sealed part: cannot be a torn append
                        raise
                    for i in range(min(PAGE, o + 2 + MAX_DELTA), PAGE):
                        if p[i] != 0xFF:
                            raise ValueError("damaged delta in a bucket")
                    torn = True
                    self.suspect = True
                    break
                if card:
                    on_record(p, r, ln)
                v = rd32(p, r + 3)
                if v > self.top_version:
                    self.top_version = v
                    self.top_inc = rd32(p, r + 7)
                o += 2 + ln
            _wr16(self.fill, 2 * b, o)
            if torn:
                self.fill[2 * b + 1] |= 0x80
            self.used += o - HDR
            if o > REFRESH_AT:
                self.due.append(b)

    # -- appends -----------------------------------------------------------------------
    def room(self, b, n):
        """True if a record of n bytes can go to bucket b without a refresh."""
        if self.fill[2 * b + 1] & 0x80:
            return False
        if self.block_of(b) == NONE:
            return HDR + 2 + n <= PAGE
        return self.fill_of(b) + 2 + n <= PAGE

    def append(self, b, buf):
        """Program delta `buf` at the end of bucket b (room() must be true). Durable on return."""
        n = len(buf)
        if self.block_of(b) == NONE:
            self._start(b)
        f = self.fill_of(b)
        rec = bytearray(2 + n)
        rec[0] = n & 0xFF
        rec[1] = n >> 8
        rec[2:] = buf
        self.dev.writeblocks(self.first + self.block_of(b), rec, f)
        _wr16(self.fill, 2 * b, f + 2 + n)
        self.used += 2 + n
        if f + 2 + n > REFRESH_AT and f <= REFRESH_AT:
            self.due.append(b)

    def _take(self):
        """A spare block (relative), erased: the one erased ahead if there is one."""
        rel = self.ready
        if rel >= 0 and not self._is_live(rel):
            self.ready = -1
            return rel
        for i in range(self.total):
            rel = (self.cursor + i) % self.total
            if not self._is_live(rel):
                self.cursor = (rel + 1) % self.total
                if rel in self.stale:
                    self.stale.remove(rel)
                from cpos.blockdev import BLOCK_ERASE
                self.dev.ioctl(BLOCK_ERASE, self.first + rel)
                return rel
        raise ValueError("no spare block in the change area")

    def _seal_into(self, b, end):
        """Write self.page[HDR:end] as bucket b's new block, header last; switch to it."""
        p = self.page
        rel = self._take()
        p[0] = MAGIC
        p[1] = FORMAT
        _wr16(p, 2, b)
        _wr32(p, 4, self.seq)
        _wr32(p, 8, self.tag)
        _wr16(p, 12, end)
        p[14] = p[15] = 0xFF
        _wr32(p, 16, self._crc(p, end))
        mv = memoryview(p)
        blk = self.first + rel
        if end > HDR:
            self.dev.writeblocks(blk, mv[HDR:end], HDR)
        self.dev.writeblocks(blk, mv[0:HDR], 0)  # the commit
        self.seq += 1
        old = self.block_of(b)
        if old != NONE:
            self.rewrites += 1
            self._set_live(old, False)
            self.stale.append(old)  # erased in the next step: see mount
            self.used -= self.fill_of(b) - HDR
        self._set_live(rel, True)
        _wr16(self.blk, 2 * b, rel)
        _wr16(self.fill, 2 * b, end)
        self.used += end - HDR

    def _start(self, b):
        self._seal_into(b, HDR)

    # -- refresh -------------------------------------------------------------------------
    def refresh(self, b):
        """Rewrite bucket b without the deltas that newer ones in it fully override (one
        erase, one block programmed); of JUMP deltas the newest stays. Returns the bytes
        free after it."""
        blk = self.block_of(b)
        if blk == NONE:
            return PAGE - HDR
        p = self.page
        self.dev.readblocks(self.first + blk, p)
        f = self.fill_of(b)
        n = 0
        o = HDR
        while o < f:
            n += 1
            o += 2 + rd16(p, o)
        # a few single allocations, sized by this bucket (the heap may be fragmented by now):
        # record offsets, keep flags, and an open-addressing table of account -> fields seen
        offs = bytearray(2 * n)
        keep = bytearray(n)
        cap = 8
        while cap < 2 * n:
            cap *= 2
        seen = bytearray(b"\xff" * (4 * cap))  # account u24 (FFFFFF: empty), fields u8
        uids = None  # card changes are rare: a dict only when there are some
        o = HDR
        for i in range(n):
            _wr16(offs, 2 * i, o)
            o += 2 + rd16(p, o)
        d = self._d
        jumped = False  # a newer JUMP was kept: older ones say less
        for i in range(n - 1, -1, -1):
            o = rd16(offs, 2 * i) + 2
            d.decode(p, o, rd16(p, o - 2))  # checked: a decayed bit stops here, loudly
            k = d.kind
            new = False
            if k == JUMP:
                new = not jumped
                jumped = True
            acct = rec_account(p, o)
            if acct >= 0:
                m = _ACC_FIELDS[k]
                j = (acct * 7) & (cap - 1)
                while True:
                    e = 4 * j
                    a = seen[e] | (seen[e + 1] << 8) | (seen[e + 2] << 16)
                    if a == 0xFFFFFF or a == acct:
                        break
                    j = (j + 1) & (cap - 1)
                had = 0 if a == 0xFFFFFF else seen[e + 3]
                if m & ~had:
                    new = True
                    seen[e] = acct & 0xFF
                    seen[e + 1] = (acct >> 8) & 0xFF
                    seen[e + 2] = acct >> 16
                    seen[e + 3] = had | m
            if k == BLOCK or k == UNBLOCK or k == NEW_CARD or k == REPLACE:
                if uids is None:
                    uids = {}
                for uid, want in ((bytes(d.uid[:d.uid_len]), 3 if k == NEW_CARD else 1),
                                  (bytes(d.uid2[:d.uid2_len]) if k == REPLACE else None, 3)):
                    if uid is None:
                        continue
                    had = uids.get(uid, 0)
                    if want & ~had:
                        new = True
                        uids[uid] = had | want
            keep[i] = 1 if new else 0
        w = HDR
        for i in range(n):
            if not keep[i]:
                continue
            o = rd16(offs, 2 * i)
            ln = 2 + rd16(p, o)
            if o != w:
                p[w:w + ln] = p[o:o + ln]
            w += ln
        seen = offs = keep = uids = None
        self._seal_into(b, w)
        return PAGE - w

    def step(self):
        """One bounded piece of upkeep: erase one replaced block, or refresh one bucket
        filled past REFRESH_AT. True if it did something."""
        from cpos.blockdev import BLOCK_ERASE
        while self.due:
            b = self.due.pop()
            if self.fill_of(b) > REFRESH_AT and self.block_of(b) != NONE:
                self.refresh(b)
                return True
        if self.stale:
            rel = self.stale.pop()
            self.dev.ioctl(BLOCK_ERASE, self.first + rel)
            if self.ready < 0 and not self._is_live(rel):
                self.ready = rel
            return True
        if self.ready < 0:
            for i in range(self.total):
                rel = (self.cursor + i) % self.total
                if not self._is_live(rel):
                    self.cursor = (rel + 1) % self.total
                    self.dev.ioctl(BLOCK_ERASE, self.first + rel)
                    self.ready = rel
                    return True
        return False

    def wants_step(self):
        return bool(self.due or self.stale) or self.ready < 0

    def full(self):
        """More than half the change area holds live deltas: time for a snapshot."""
        return self.used * 2 > self.nb * (PAGE - HDR)
