"""The card table's on-flash format: UID hash, card records, pages and the image header.

Owns the byte layout described in docs/formats.md ("Card table") and nothing else:
encoding (builder side, may allocate) and allocation-free decoding into a
`cpos.rules.CardRecord` / `cpos.rules.Spends` (tap side). Runtime-neutral: the
CPython reference backend and the terminal use this same module, so an image built
on either runtime is the same bytes.

An account state, wherever the builder or a delta carries one, is a plain tuple
    (balance, places, limits, enrolled, topup_kr, keys, totals)
with `limits` 6 ints (NO_LIMIT for none), `keys` 3 window keys, `totals` 6 ints.
"""
import struct

from cpos.compat import const
from cpos.crc import seal, sealed_ok
from cpos.rules import NO_LIMIT, REPLACED
from cpos.uid import UID_LENGTHS, uid_kind

PAGE = const(4096)  # one table page is one flash block (erase sector)
PAGE_HDR = const(12)
PAGE_DATA_END = const(4092)  # the CRC takes the last 4 bytes
PAGE_MAGIC = const(0x50)  # 'P'
FORMAT = const(1)
HDR_MAGIC = b"CPCT"
HDR_FIXED = const(36)
MAX_PAGES = const(2028)  # (4092 - 36) // 2 index entries in the header sector
MAX_ACCOUNT = const(0xFFFFFE)  # 0xFFFFFF marks an empty overlay slot
MAX_AMOUNT = const(0x1FFFFFFF)  # |balance|, limits, totals in øre (5.3 million kr): zigzag < 2**30

# account tuple fields
A_BALANCE = const(0)
A_PLACES = const(1)
A_LIMITS = const(2)
A_ENROLLED = const(3)
A_TOPUP_KR = const(4)
A_KEYS = const(5)
A_TOTALS = const(6)

# account-blob flag bits
_F_ENROLLED = const(4)
_F_LIMITS = const(8)
_F_TOTALS = const(16)
_F_KEYS = const(32)
_F_RESERVED = const(0xC0)

def uid_hash(uid, off, n):
    """24-bit hash of the `n` UID bytes at uid[off:]; small ints only (no heap on a 32-bit port)."""
    h = 0x9E37 ^ n
    for i in range(off, off + n):
        h = ((h ^ uid[i]) * 47) & 0xFFFFFF
    h ^= h >> 11
    h = (h * 37) & 0xFFFFFF
    h ^= h >> 13
    return h


def sort_key(uid):
    """The order of records in a table: hash, then length, then UID bytes."""
    return (uid_hash(uid, 0, len(uid)), len(uid), bytes(uid))


# -- varints (builder side) -------------------------------------------------------
def _varint(out, v):
    if v < 0:
        raise ValueError("varint of a negative number")
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _zigzag(out, v):
    _varint(out, v * 2 if v >= 0 else -v * 2 - 1)


def _check_int(v, lo, hi, what):
    if type(v) is not int or v < lo or v > hi:
        raise ValueError("bad " + what)


def check_account(a):
    """Raise ValueError unless `a` is a well-formed account tuple."""
    if not isinstance(a, tuple) or len(a) != 7:
        raise ValueError("account state must be a 7-tuple")
    _check_int(a[A_BALANCE], -MAX_AMOUNT, MAX_AMOUNT, "balance")
    _check_int(a[A_PLACES], 0, 3, "places")
    if len(a[A_LIMITS]) != 6 or len(a[A_KEYS]) != 3 or len(a[A_TOTALS]) != 6:
        raise ValueError("limits/keys/totals have the wrong length")
    for v in a[A_LIMITS]:
        if v != NO_LIMIT:
            _check_int(v, 0, MAX_AMOUNT, "limit")
    if a[A_ENROLLED] not in (True, False, 0, 1):
        raise ValueError("bad enrolled")
    _check_int(a[A_TOPUP_KR], 0, 10000000, "topup amount")
    for v in a[A_KEYS]:
        _check_int(v, 0, 0x3FFFFFFF, "window key")
    for v in a[A_TOTALS]:
        _check_int(v, -MAX_AMOUNT, MAX_AMOUNT, "total")


def encode_account(out, a, ref_keys):
    """Append the account blob of account tuple `a` to bytearray `out`."""
    check_account(a)
    limits, totals, keys = a[A_LIMITS], a[A_TOTALS], a[A_KEYS]
    lmask = tmask = 0
    for i in range(6):
        if limits[i] != NO_LIMIT:
            lmask |= 1 << i
        if totals[i]:
            tmask |= 1 << i
    flags = a[A_PLACES]
    if a[A_ENROLLED]:
        flags |= _F_ENROLLED
    if lmask:
        flags |= _F_LIMITS
    explicit = tmask and tuple(keys) != tuple(ref_keys)
    if tmask:
        flags |= _F_TOTALS
        if explicit:
            flags |= _F_KEYS
    out.append(flags)
    _zigzag(out, a[A_BALANCE])
    if lmask:
        out.append(lmask)
        for i in range(6):
            if lmask & (1 << i):
                _varint(out, limits[i])
    if a[A_ENROLLED]:
        _varint(out, a[A_TOPUP_KR])
    if tmask:
        out.append(tmask)
        if explicit:
            for w in range(3):
                _varint(out, keys[w])
        for i in range(6):
            if tmask & (1 << i):
                _zigzag(out, totals[i])


def encode_record(uid, account, status, a, ref_keys):
    """One card record: header byte, UID, 3-byte account id, account blob."""
    kind = uid_kind(len(uid))
    if kind < 0:
        raise ValueError("UID must be 4, 7 or 10 bytes")
    _check_int(account, 0, MAX_ACCOUNT, "account id")
    _check_int(status, 0, 2, "status")
    out = bytearray()
    out.append(kind | (status << 2))
    out.extend(uid)
    out.extend(struct.pack("<I", account)[:3])
    encode_account(out, a, ref_keys)
    return bytes(out)


# -- decoding (tap side: no allocation) ----------------------------------------------
class Cursor:
    """A read position in a buffer; decoding helpers advance `pos` and check `end`."""

    def __init__(self):
        self.buf = None
        self.pos = 0
        self.end = 0

    def byte(self):
        p = self.pos
        if p >= self.end:
            raise ValueError("record runs past its end")
        self.pos = p + 1
        return self.buf[p]

    def varint(self):
        v = 0
        shift = 0
        while True:
            b = self.byte()
            if shift == 28 and b > 3:
                raise ValueError("varint too large")
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7
            if shift > 28:
                raise ValueError("varint too long")

    def zigzag(self):
        v = self.varint()
        return (v >> 1) if not v & 1 else -((v + 1) >> 1)


def decode_account_into(cur, card, spends, ref_keys):
    """Decode an account blob at `cur` into CardRecord `card` and Spends `spends`."""
    flags = cur.byte()
    if flags & _F_RESERVED or (flags & _F_KEYS and not flags & _F_TOTALS):
        raise ValueError("reserved account flag bits set")
    card.places = flags & 3
    card.balance = cur.zigzag()
    limits = card.limits
    if flags & _F_LIMITS:
        m = cur.byte()
        if m & 0xC0 or not m:
            raise ValueError("bad limit mask")
        for i in range(6):
            limits[i] = cur.varint() if m & (1 << i) else NO_LIMIT
    else:
        for i in range(6):
            limits[i] = NO_LIMIT
    card.topup_enrolled = bool(flags & _F_ENROLLED)
    card.topup_amount_kr = cur.varint() if flags & _F_ENROLLED else 0
    keys = spends.keys
    totals = spends.totals
    for w in range(3):
        keys[w] = ref_keys[w]
    if flags & _F_TOTALS:
        m = cur.byte()
        if m & 0xC0 or not m:
            raise ValueError("bad totals mask")
        if flags & _F_KEYS:
            for w in range(3):
                keys[w] = cur.varint()
        for i in range(6):
            totals[i] = cur.zigzag() if m & (1 << i) else 0
    else:
        for i in range(6):
            totals[i] = 0


def decode_record_into(buf, pos, end, cur, card, spends, ref_keys):
    """Decode the card record at buf[pos:end] into `card` and `spends`; returns the UID length."""
    cur.buf = buf
    cur.pos = pos
    cur.end = end
    h = cur.byte()
    kind = h & 3
    status = (h >> 2) & 3
    if kind > 2 or status > REPLACED or h & 0xF0:
        raise ValueError("bad record header")
    n = UID_LENGTHS[kind]
    cur.pos += n
    card.status = status
    card.account = cur.byte() | (cur.byte() << 8) | (cur.byte() << 16)
    decode_account_into(cur, card, spends, ref_keys)
    return n


def card_account(card, spends):
    """The account tuple held in a filled CardRecord and Spends."""
    return (card.balance, card.places, list(card.limits), bool(card.topup_enrolled),
            card.topup_amount_kr, list(spends.keys), list(spends.totals))


# -- pages ---------------------------------------------------------------------------
def rd16(b, o):
    return b[o] | (b[o + 1] << 8)


def rd32(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


def page_ok(page, n, tag):
    """True if `page` is an intact page number `n` of the image whose tag (its version,
    4 bytes little-endian) is `tag`. Allocates nothing in the good case (the tap path)."""
    return (sealed_ok(page) and page[0] == PAGE_MAGIC and page[1] == FORMAT and rd16(page, 4) == n
            and page[6] == tag[0] and page[7] == tag[1] and page[8] == tag[2] and page[9] == tag[3])


def dir_entry(page, i):
    """Offset of record i: the directory grows down from the CRC."""
    return rd16(page, PAGE_DATA_END - 2 * (i + 1))


def record_end(page, i, n):
    """End of record i: the next record's start, or the start of the free space."""
    if i + 1 < n:
        return dir_entry(page, i + 1)
    return rd16(page, 10)


class PagePacker:
    """Packs records, given in table order, into sealed pages; calls `emit(page)` per page.

    A page never starts inside a run of records with the same 16-bit index prefix, so
    every record with a given prefix lives in the page the RAM index names.
    `emit` receives the same bytearray each time: write it out before returning.
    """

    def __init__(self, tag, emit):
        self.tag = tag
        self.emit = emit
        self.page = bytearray(PAGE)
        self.index = bytearray()  # 2 bytes per emitted page
        self.pages = 0
        self.cards = 0
        self._starts = []  # record start offsets in the current page
        self._prefixes = []
        self._fill = PAGE_HDR
        self._last = None  # sort key of the last record added

    def add(self, rec):
        """Add one encoded record (bytes); records must come in strictly increasing order."""
        uid = rec[1:1 + UID_LENGTHS[rec[0] & 3]]
        key = sort_key(uid)
        if self._last is not None and key <= self._last:
            raise ValueError("records out of order or duplicated")
        self._last = key
        prefix = key[0] >> 8
        need = len(rec) + 2
        if PAGE_HDR + need > PAGE_DATA_END:
            raise ValueError("record too large for a page")
        if self._fill + need + 2 * len(self._starts) > PAGE_DATA_END:
            self._spill(prefix)
            if self._fill + need + 2 * len(self._starts) > PAGE_DATA_END:
                raise ValueError("too many records share one index prefix")
        self.page[self._fill:self._fill + len(rec)] = rec
        self._starts.append(self._fill)
        self._prefixes.append(prefix)
        self._fill += len(rec)

    def _spill(self, prefix):
        # cut before the run of records sharing `prefix` at the end of the page
        cut = len(self._starts)
        while cut > 0 and self._prefixes[cut - 1] == prefix:
            cut -= 1
        if cut == 0:
            raise ValueError("too many records share one index prefix")
        tail = bytes(self.page[self._starts[cut]:self._fill]) if cut < len(self._starts) else b""
        tail_starts = [s - self._starts[cut] for s in self._starts[cut:]]
        tail_prefixes = self._prefixes[cut:]
        self._fill = self._starts[cut] if cut < len(self._starts) else self._fill
        del self._starts[cut:]
        del self._prefixes[cut:]
        self._finish()
        self.page[PAGE_HDR:PAGE_HDR + len(tail)] = tail
        self._starts = [PAGE_HDR + s for s in tail_starts]
        self._prefixes = tail_prefixes
        self._fill = PAGE_HDR + len(tail)

    def _finish(self):
        n = len(self._starts)
        if not n:
            return
        if self.pages >= MAX_PAGES:
            raise ValueError("table too large")
        p = self.page
        for i in range(self._fill, PAGE_DATA_END):
            p[i] = 0xFF
        struct.pack_into("<BBHHIH", p, 0, PAGE_MAGIC, FORMAT, n, self.pages, self.tag, self._fill)
        for i in range(n):
            struct.pack_into("<H", p, PAGE_DATA_END - 2 * (i + 1), self._starts[i])
        seal(p)
        self.index.extend(struct.pack("<H", self._prefixes[0]))
        self.emit(p)
        self.pages += 1
        self.cards += n
        self._starts = []
        self._prefixes = []
        self._fill = PAGE_HDR

    def close(self):
        """Finish the last page; returns the number of pages."""
        self._finish()
        return self.pages


def encode_header(version, included_seq, ref_keys, n_pages, n_cards, index):
    """The image's first block: identity, version, watermark, window keys and the RAM index."""
    if n_pages > MAX_PAGES or len(index) != 2 * n_pages:
        raise ValueError("bad page count")
    _check_int(version, 0, 0xFFFFFFFF, "version")
    _check_int(included_seq, 0, 0xFFFFFFFF, "included_seq")
    h = bytearray(PAGE)
    for i in range(HDR_FIXED + len(index), PAGE):
        h[i] = 0xFF
    h[0:4] = HDR_MAGIC
    struct.pack_into("<BBHIIIIIIi", h, 4, FORMAT, 12, n_pages, version, included_seq,
                     ref_keys[0], ref_keys[1], ref_keys[2], n_cards, 0)
    h[HDR_FIXED:HDR_FIXED + len(index)] = index
    seal(h)
    return h


def decode_header(h):
    """(version, included_seq, ref_keys, n_pages, n_cards) of a header block; ValueError if bad."""
    if not sealed_ok(h) or bytes(h[0:4]) != HDR_MAGIC:
        raise ValueError("card table header damaged")
    fmt, psz, n_pages, version, inc, k0, k1, k2, n_cards, _ = struct.unpack_from("<BBHIIIIIIi", h, 4)
    if fmt != FORMAT or psz != 12 or n_pages > MAX_PAGES:
        raise ValueError("card table header of an unknown format")
    return version, inc, (k0, k1, k2), n_pages, n_cards


def sorted_records(cards, accounts, ref_keys=(0, 0, 0)):
    """The encoded records of `cards`, in table order (builder side).

    Each is sorted as one bytes object, hash (3 bytes, big-endian) + UID length +
    UID + record, whose byte order is the table order: a third of the heap of
    (key tuple, record) pairs, which matters when MicroPython builds an image."""
    recs = []
    for uid, acct, status in cards:
        if acct not in accounts:
            raise ValueError("card refers to an unknown account")
        rec = encode_record(uid, acct, status, accounts[acct], ref_keys)
        pre = struct.pack(">IB", uid_hash(uid, 0, len(uid)), len(uid))
        recs.append(pre[1:] + bytes(uid) + rec)
        rec = pre = None
    recs.sort()
    for i in range(len(recs)):
        r = recs[i]
        recs[i] = r[4 + r[3]:]
    return recs


def _drop(page):
    pass


class ImageBuilder:
    """A table image (header block + pages) from plain data, streamed or whole.

    `cards`: iterable of (uid bytes, account id, status); `accounts`: {id: account tuple}.
    Packs twice: the first pass finds the page index the header needs, so `write`
    can hand out blocks in image order holding one page in RAM. The CPython
    reference backend sends these bytes, chunked, to `CardTable.install_*`; the same
    input gives the same bytes on either runtime.
    """

    def __init__(self, cards, accounts, version, included_seq, ref_keys=(0, 0, 0)):
        self.recs = sorted_records(cards, accounts, ref_keys)
        self.tag = version & 0xFFFFFFFF
        p = self._pack(_drop)
        self.n_pages = p.pages
        self.n_cards = p.cards
        self.header = encode_header(version, included_seq, ref_keys, p.pages, p.cards, p.index)

    def _pack(self, emit):
        packer = PagePacker(self.tag, emit)
        for r in self.recs:
            packer.add(r)
        packer.close()
        return packer

    def size(self):
        """Bytes in the image."""
        return (1 + self.n_pages) * PAGE

    def write(self, emit):
        """Call `emit(block)` for the header and every page, in image order (one buffer reused)."""
        emit(self.header)
        self._pack(emit)

    def image(self):
        out = bytearray(self.size())
        pos = [0]

        def put(block):
            out[pos[0]:pos[0] + PAGE] = block
            pos[0] += PAGE
        self.write(put)
        return out


def build_image(cards, accounts, version, included_seq, ref_keys=(0, 0, 0)):
    """A whole table image (header block + pages) as one bytearray (see ImageBuilder)."""
    return ImageBuilder(cards, accounts, version, included_seq, ref_keys).image()
