"""Receiving a snapshot image beside the live table, checked page by page as it lands.

Imported by cpos.cards.table only when an install starts, so its code takes no RAM
until then. A `Receiver` writes each chunk to the other slot, and as soon as a block is
complete reads it back and checks it: the header first (version, watermark, page
count, index), then every page and every record in it, in table order across pages.
So each chunk costs at most one erase, its programs and one block read and check, and
`finish` only compares counts: no step walks the whole image.
"""
import struct

from cpos.blockdev import BLOCK_ERASE
from cpos.cards import layout
from cpos.cards.layout import PAGE, PAGE_HDR, PAGE_DATA_END, rd16, sort_key
from cpos.rules import CardRecord, Spends


class Receiver:
    def __init__(self, t, slot, version, inc, total):
        self.t = t
        self.slot = slot
        self.version = version
        self.inc = inc
        self.total = total
        self.got = 0  # chunks written
        self.pos = 0  # bytes written
        self.done = 0  # blocks checked (0: not even the header)
        self.start = t._img_start(slot)
        self.n_pages = -1
        self.n_cards = 0
        self.index = None
        self.keys = None
        self.tag = struct.pack("<I", version & 0xFFFFFFFF)
        self.last = None
        self.count = 0
        self._card = CardRecord()
        self._spends = Spends()

    def chunk(self, data):
        """Write one chunk and check every block it completes; ValueError if bad."""
        t = self.t
        pos = self.pos
        if pos + len(data) > t._img_blocks * PAGE:
            raise ValueError("image too large for a slot")
        mv = memoryview(data)
        i = 0
        while i < len(data):
            blk = self.start + (pos + i) // PAGE
            o = (pos + i) % PAGE
            if o == 0:
                t.dev.ioctl(BLOCK_ERASE, blk)
            k = min(PAGE - o, len(data) - i)
            t.dev.writeblocks(blk, mv[i:i + k], o)
            i += k
        self.pos = pos + len(data)
        self.got += 1
        while (self.done + 1) * PAGE <= self.pos:
            self._check(self.done)
            self.done += 1

    def _check(self, n):
        t = self.t
        p = t.page  # the live table reads into it too: this check finishes before any tap
        t.dev.readblocks(self.start + n, p)
        if n == 0:
            hv, hi, keys, n_pages, n_cards = layout.decode_header(p)
            if hv != self.version or hi != self.inc or n_pages < 1 or n_pages > t.max_pages:
                raise ValueError("header does not match the install")
            self.n_pages = n_pages
            self.n_cards = n_cards
            self.keys = keys
            self.index = bytes(p[layout.HDR_FIXED:layout.HDR_FIXED + 2 * n_pages])
            return
        pn = n - 1
        if pn >= self.n_pages:
            raise ValueError("image longer than its header says")
        if not layout.page_ok(p, pn, self.tag):
            raise ValueError("page damaged")
        cnt = rd16(p, 2)
        fill = rd16(p, 10)
        if cnt < 1 or fill > PAGE_DATA_END - 2 * cnt or fill < PAGE_HDR:
            raise ValueError("page header")
        index = self.index
        lo = rd16(index, 2 * pn)
        hi = rd16(index, 2 * pn + 2) if pn + 1 < self.n_pages else 0x10000
        prev = PAGE_HDR
        cur = t._cur
        for i in range(cnt):
            off = layout.dir_entry(p, i)
            end = layout.record_end(p, i, cnt)
            if off != prev or end <= off or end > fill:
                raise ValueError("page directory")
            k = layout.decode_record_into(p, off, end, cur, self._card, self._spends, self.keys)
            if cur.pos != end:
                raise ValueError("record length")
            key = sort_key(p[off + 1:off + 1 + k])
            pref = key[0] >> 8
            if (self.last is not None and key <= self.last) or pref < lo or pref >= hi \
                    or (i == 0 and pref != lo):
                raise ValueError("record order")
            self.last = key
            prev = end
        if prev != fill:
            raise ValueError("page fill")
        self.count += cnt

    def finish(self):
        """The page count, once every chunk arrived and checked; ValueError otherwise."""
        if self.got != self.total or self.n_pages < 1:
            raise ValueError("install incomplete")
        if self.pos != (1 + self.n_pages) * PAGE or self.done != 1 + self.n_pages:
            raise ValueError("image length")
        if self.count != self.n_cards:
            raise ValueError("card count")
        return self.n_pages
