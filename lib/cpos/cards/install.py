"""Card table installs that run off the tap path: checking a received image, compaction.

Imported by cpos.cards.table only when needed, so its code takes no RAM until then.
`verify_image` reads back a snapshot written beside the live table and checks every
block and record; `compact` folds the overlay into a new image in the other slot.
"""
import struct

from cpos.cards import layout
from cpos.cards.layout import PAGE, PAGE_HDR, PAGE_DATA_END, rd16, sort_key
from cpos.cards.overlay import CARD, C_STATUS, C_ACCOUNT
from cpos.rules import CardRecord, Spends
from cpos.uid import UID_LENGTHS

_OK = 0  # cpos.cards.table.INSTALL_OK (not imported: table imports this module)
_BAD = 3  # cpos.cards.table.INSTALL_BAD
_TABLE_OK = 1  # cpos.cards.table.OK


def verify_image(t, slot, version, inc, nbytes):
    """Check a received image in `slot` block by block and record by record; its page count."""
    p = t.page
    start = t._img_start(slot)
    t.dev.readblocks(start, p)
    hv, hi, keys, n_pages, n_cards = layout.decode_header(p)
    if hv != version or hi != inc or n_pages < 1 or n_pages > t.max_pages:
        raise ValueError("header does not match the install")
    if nbytes != (1 + n_pages) * PAGE:
        raise ValueError("image length")
    index = bytes(p[layout.HDR_FIXED:layout.HDR_FIXED + 2 * n_pages])
    tag = struct.pack("<I", version & 0xFFFFFFFF)
    card = CardRecord()
    spends = Spends()
    cur = t._cur
    last = None
    count = 0
    for pn in range(n_pages):
        t.dev.readblocks(start + 1 + pn, p)
        if not layout.page_ok(p, pn, tag):
            raise ValueError("page damaged")
        cnt = rd16(p, 2)
        fill = rd16(p, 10)
        if cnt < 1 or fill > PAGE_DATA_END - 2 * cnt or fill < PAGE_HDR:
            raise ValueError("page header")
        lo = rd16(index, 2 * pn)
        hi = rd16(index, 2 * pn + 2) if pn + 1 < n_pages else 0x10000
        prev = PAGE_HDR
        for i in range(cnt):
            off = layout.dir_entry(p, i)
            end = layout.record_end(p, i, cnt)
            if off != prev or end <= off or end > fill:
                raise ValueError("page directory")
            n = layout.decode_record_into(p, off, end, cur, card, spends, keys)
            if cur.pos != end:
                raise ValueError("record length")
            key = sort_key(p[off + 1:off + 1 + n])
            pref = key[0] >> 8
            if (last is not None and key <= last) or pref < lo or pref >= hi or (i == 0 and pref != lo):
                raise ValueError("record order")
            last = key
            prev = end
        if prev != fill:
            raise ValueError("page fill")
        count += cnt
    if count != n_cards:
        raise ValueError("card count")
    return n_pages


def compact(t):
    """Fold the delta overlay into a new image in the other slot and switch to it.

    INSTALL_OK, or INSTALL_BAD if the live table is damaged (needs resync) or the new
    image would not fit. Constant RAM: one page read and one page built at a time.
    """
    if t.state != _TABLE_OK:
        return _BAD
    t._inst = None  # the other slot is about to be rewritten: a pending install restarts
    slot = 1 - t.slot
    start = t._img_start(slot)
    keys = t.ref_keys
    card = CardRecord()
    spends = Spends()
    news = []
    c = t.ov.cards
    for i in range(t.ov.card_cap):
        o = i * CARD
        f = c[o]
        if f != 0xFF and f & C_ACCOUNT:
            uid = bytes(c[o + 1:o + 1 + UID_LENGTHS[f & 3]])
            acct = c[o + 11] | (c[o + 12] << 8) | (c[o + 13] << 16)
            card.clear()
            spends.clear()
            t.ov.acc_apply(t.ov.acc_find(acct), card, spends)
            rec = layout.encode_record(uid, acct, (f >> 2) & 3, layout.card_account(card, spends), keys)
            news.append((sort_key(uid), rec))
    news.sort()
    written = [0]
    img_blocks = t._img_blocks

    def emit(page):
        if written[0] + 2 > img_blocks:
            raise ValueError("compacted table does not fit")
        t.dev.writeblocks(start + 1 + written[0], page)
        written[0] += 1

    packer = layout.PagePacker(t.version & 0xFFFFFFFF, emit)
    j = 0
    pg = t.page
    cur = t._cur
    try:
        for pn in range(t.n_pages):
            if not t._read_page(pn):
                raise ValueError("damaged page")
            cnt = rd16(pg, 2)
            for i in range(cnt):
                off = layout.dir_entry(pg, i)
                end = layout.record_end(pg, i, cnt)
                n = layout.decode_record_into(pg, off, end, cur, card, spends, keys)
                uid = bytes(pg[off + 1:off + 1 + n])
                key = sort_key(uid)
                while j < len(news) and news[j][0] < key:
                    packer.add(news[j][1])
                    j += 1
                ce = t.ov.card_find(uid, n, pg[off] & 3, key[0])
                f = t.ov.cards[ce * CARD] if ce >= 0 else 0
                if f & C_ACCOUNT:
                    continue  # the overlay's full card takes its place, from `news`
                if f & C_STATUS:
                    card.status = (f >> 2) & 3
                ai = t.ov.acc_find(card.account)
                if ai >= 0:
                    t.ov.acc_apply(ai, card, spends)
                packer.add(layout.encode_record(uid, card.account, card.status,
                                                 layout.card_account(card, spends), keys))
            if t.progress is not None:
                t.progress()
        while j < len(news):
            packer.add(news[j][1])
            j += 1
        n_pages = packer.close()
        if n_pages < 1:
            raise ValueError("a table needs at least one card")
        hdr = layout.encode_header(t.version, t.included_seq, keys, n_pages, packer.cards,
                                    packer.index)
    except ValueError:
        return _BAD
    t.dev.writeblocks(start, hdr)
    resync = t.needs_resync  # a gap seen before compacting still needs its resync
    t._switch(slot, t.version, t.included_seq, n_pages)
    t.needs_resync = t.needs_resync or resync
    return _OK
