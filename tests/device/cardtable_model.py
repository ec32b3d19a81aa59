"""Test support for the card table: a plain-dict reference model, data generators and a
JSON-friendly driver (for tests/device/worker.py). Runs on MicroPython and CPython.

The simulated flash keeps its bytes in a file, not in the heap: on a device the
table's flash is not in RAM either, and the tests run under the WROOM heap cap."""
import os
from binascii import hexlify

from simulator.norflash import NorFlash, PowerCut, Xorshift32


class FileMem:
    """NorFlash's `mem` (indexable like a bytearray), kept in an unlinked temporary file
    with one sector cached in RAM, so that 40 KB of simulated flash cost 4 KB of heap."""

    def __init__(self, sectors, size=4096):
        self.size = size
        self.n = sectors * size
        name = "/tmp/cpos_flash_%s.bin" % hexlify(os.urandom(6)).decode()
        self.f = open(name, "w+b")
        os.remove(name)  # the open file stays; nothing is left behind
        blank = b"\xff" * size
        for _ in range(sectors):
            self.f.write(blank)
        self.cache = bytearray(size)
        self.cur = -1
        self.dirty = False

    def __len__(self):
        return self.n

    def _sector(self, s):
        if s != self.cur:
            f = self.f
            if self.dirty:
                f.seek(self.cur * self.size)
                f.write(self.cache)
            f.seek(s * self.size)
            f.readinto(self.cache)
            self.cur = s
            self.dirty = False
        return self.cache

    def readinto(self, start, buf):
        """buf[:] = self[start:start + len(buf)], without a temporary copy."""
        if start < 0 or start + len(buf) > self.n:
            raise IndexError("flash range")
        f = self.f
        if self.dirty:
            f.seek(self.cur * self.size)
            f.write(self.cache)
            self.dirty = False
        f.seek(start)
        if f.readinto(buf) != len(buf):
            raise OSError("short read")

    def _range(self, i):
        a = i.start or 0
        b = self.n if i.stop is None else i.stop
        if a < 0 or b > self.n or a > b:
            raise IndexError("flash range")
        return a, b

    def __getitem__(self, i):
        if isinstance(i, slice):
            a, b = self._range(i)
            out = bytearray(b - a)
            p = a
            while p < b:
                s, o = divmod(p, self.size)
                k = min(b - p, self.size - o)
                out[p - a:p - a + k] = self._sector(s)[o:o + k]
                p += k
            return out
        if i < 0 or i >= self.n:
            raise IndexError("flash address")
        return self._sector(i // self.size)[i % self.size]

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            a, b = self._range(i)
            if len(v) != b - a:
                raise ValueError("flash slices cannot change length")
            p = a
            while p < b:
                s, o = divmod(p, self.size)
                k = min(b - p, self.size - o)
                self._sector(s)[o:o + k] = memoryview(v)[p - a:p - a + k]
                self.dirty = True
                p += k
        else:
            if i < 0 or i >= self.n:
                raise IndexError("flash address")
            self._sector(i // self.size)[i % self.size] = v
            self.dirty = True


class FileFlash(NorFlash):
    """NorFlash over a FileMem: reads go straight into the caller's buffer."""

    def save(self):
        """A copy of the flash contents in another unlinked file (no heap beyond one sector).

        Power-cut sweeps restore the same starting state hundreds of times; rebuilding
        it each time (a fresh image in RAM) fragments MicroPython's capped heap."""
        mem = self.mem
        name = "/tmp/cpos_flash_%s.bin" % hexlify(os.urandom(6)).decode()
        f = open(name, "w+b")
        os.remove(name)
        for s in range(len(self.erase_counts)):
            f.write(mem._sector(s))
        return (f, self._seed)

    def restore(self, snap):
        """Back to the contents of `save()`'s snapshot, counters and power-cut state reset."""
        snap, seed = snap
        self.wipe(seed)
        mem = self.mem
        for s in range(len(self.erase_counts)):
            snap.seek(s * mem.size)
            snap.readinto(mem._sector(s))
            mem.dirty = True

    def readblocks(self, block, buf, offset=0):
        if self.dead:
            raise PowerCut("flash read after a power cut without reboot()")
        self.mem.readinto(block * self.sector + offset, buf)


def flash(sectors):
    dev = FileFlash(4096)
    dev.mem = FileMem(sectors)
    dev.erase_counts = [0] * sectors
    dev.wipe()
    return dev


FLASH = flash(10)

# The geometry the firmware ships: the card partition of the 4 MB layout
# (host_tools/partitions.py, checked by tests/test_partitions.py) and the card
# overlay slots firmware/app.py gives the table with the downlink on.
SHIPPED_BLOCKS = 352
SHIPPED_GEOMETRY = {"card_slots": 32}

import binascii  # noqa: E402

from cpos.cards import layout
from cpos.cards import delta as carddelta
from cpos.cards import table as cardtable
from cpos.rules import CardRecord, Spends, NO_LIMIT, ACTIVE, BLOCKED, REPLACED


def norm(account, status, a):
    """Comparable view of what a lookup returns: totals' keys only matter if a total is set."""
    bal, places, limits, enrolled, kr, keys, totals = a
    has = False
    for t in totals:
        if t:
            has = True
    return [account, status, bal, places, list(limits), bool(enrolled), kr if enrolled else 0,
            list(keys) if has else None, list(totals)]


class Ref:
    """The card table's meaning, as plain dicts."""

    def __init__(self):
        self.cards = {}
        self.accounts = {}
        self.version = 0
        self.included_seq = 0

    def install(self, cards, accounts, version, inc):
        self.cards = {}
        for uid, acct, status in cards:
            self.cards[bytes(uid)] = (acct, status)
        self.accounts = dict(accounts)  # tuples, replaced (never changed) by deltas
        self.version = version
        self.included_seq = inc

    def lookup(self, uid):
        c = self.cards.get(bytes(uid))
        if c is None:
            return None
        return norm(c[0], c[1], self.accounts[c[0]])

    def delta(self, version, inc, kind, uid=None, uid2=None, account=0, value=None):
        """Mirror of CardTable.apply_delta for an in-order delta."""
        self.version = version
        self.included_seq = inc
        a = self.accounts.get(account)
        if kind in (carddelta.BLOCK, carddelta.UNBLOCK):
            c = self.cards.get(bytes(uid))
            if c is not None:
                self.cards[bytes(uid)] = (c[0], BLOCKED if kind == carddelta.BLOCK else ACTIVE)
            return
        if kind in (carddelta.NEW_CARD, carddelta.REPLACE):
            if kind == carddelta.REPLACE:
                c = self.cards.get(bytes(uid))
                if c is not None:
                    self.cards[bytes(uid)] = (c[0], REPLACED)
                uid = uid2
            self.cards[bytes(uid)] = (account, ACTIVE)
            self.accounts[account] = tuple(value)
            return
        if a is None:
            return
        a = list(a)
        if kind == carddelta.BALANCE:
            a[0] = value
        elif kind == carddelta.LIMITS:
            a[2] = list(value)
        elif kind == carddelta.PLACES:
            a[1] = value
        elif kind == carddelta.ENROL:
            a[3] = bool(value[0])
            a[4] = value[1] if value[0] else 0
        elif kind == carddelta.TOTALS:
            a[5] = list(value[0])
            a[6] = list(value[1])
        self.accounts[account] = tuple(a)


# -- deterministic data (both runtimes) ------------------------------------------------
Rng = Xorshift32  # the flash model's generator: the same data on both runtimes


def make_uid(rng, n=None):
    if n is None:
        n = (4, 7, 10)[rng.below(3)]
    return bytes([rng.below(256) for _ in range(n)])


def make_account(rng, fat=False):
    limits = [NO_LIMIT] * 6
    totals = [0] * 6
    keys = [20400 + rng.below(3), 202548, 202511]
    if fat:  # every field set: about 60 bytes a record, so few cards fill several pages
        limits = [1000 + rng.below(9000) for _ in range(6)]
        totals = [1 + rng.below(5000) for _ in range(6)]
        keys = [20399, 202547, 202510]
    elif rng.below(3) == 0:
        limits[rng.below(6)] = rng.below(10000)
    if not fat and rng.below(3) == 0:
        totals[rng.below(6)] = rng.below(5000)
    enrolled = fat or rng.below(4) == 0
    return (rng.below(200000) - 1000, rng.below(4), limits, enrolled, rng.below(500) if enrolled else 0,
            keys, totals)


def make_snapshot(rng, n_cards, fat=False):
    """n_cards cards; accounts share a few state tuples (it is the records that take flash)."""
    pool = [make_account(rng, fat) for _ in range(6)]
    cards = []
    accounts = {}
    seen = {}
    while len(cards) < n_cards:
        uid = make_uid(rng, 10 if fat else None)
        if uid in seen:
            continue
        seen[uid] = 1
        acct = rng.below(max(1, n_cards * 4 // 5))
        if acct not in accounts:
            accounts[acct] = pool[rng.below(len(pool))]
        cards.append((uid, acct, (ACTIVE, ACTIVE, ACTIVE, BLOCKED, REPLACED)[rng.below(5)]))
    return cards, accounts


def install_image(table, img, version, inc, chunk=1500):
    n = (len(img) + chunk - 1) // chunk
    r = table.install_begin(version, inc, n)
    if r != cardtable.INSTALL_OK:
        return r
    for i in range(n):
        r = table.install_chunk(i, img[i * chunk:(i + 1) * chunk])
        if r != cardtable.INSTALL_OK:
            return r
    return table.install_commit()


def install_built(table, builder, version, inc):
    """Install an ImageBuilder's image one block per chunk, never holding the whole image."""
    r = table.install_begin(version, inc, builder.n_pages + 1)
    if r != cardtable.INSTALL_OK:
        return r
    state = [0, cardtable.INSTALL_OK]

    def emit(block):
        if state[1] == cardtable.INSTALL_OK:
            state[1] = table.install_chunk(state[0], block)
        state[0] += 1
    builder.write(emit)
    if state[1] != cardtable.INSTALL_OK:
        table.install_abort()
        return state[1]
    return table.install_commit()


def check_all(table, ref, extra=()):
    """Every card of `ref` (and the UIDs in `extra`) looks up as the reference says."""
    card = CardRecord()
    spends = Spends()
    for uid in list(ref.cards) + list(extra):
        r = table.lookup(uid, card, spends)
        want = ref.lookup(uid)
        if want is None:
            assert r == cardtable.NOT_FOUND, (uid, r)
        else:
            assert r == cardtable.FOUND, (uid, r)
            got = norm(card.account, card.status, layout.card_account(card, spends))
            assert got == want, (uid, got, want)


# -- JSON driver for the worker -----------------------------------------------------
_S = {}


def _unhex(s):
    return binascii.unhexlify(s)


_FLASHES = {}


def reset(card_slots=32, sectors=10):
    """A factory-fresh flash of `sectors` blocks and a table opened on it."""
    dev = FLASH if sectors == 10 else _FLASHES.get(sectors)
    if dev is None:
        dev = _FLASHES[sectors] = flash(sectors)
    dev.wipe()
    _S["t"] = None
    _S["dev"] = dev
    _S["args"] = (card_slots,)
    _S["t"] = cardtable.CardTable(dev, card_slots)
    return info()


def remount():
    """Open the table afresh on the same flash, as after a reboot."""
    a = _S["args"]
    _S["t"] = None
    _S["t"] = cardtable.CardTable(_S["dev"], a[0])
    return info()


def info():
    t = _S["t"]
    return [t.state, t.version, t.included_seq, t.needs_resync, t.n_cards]


def install(version, inc, chunks, total=None, commit=True):
    """install_begin, chunks (hex) in order, then install_commit; the list of result codes.
    `total` > len(chunks) with commit=False leaves an abandoned install behind."""
    t = _S["t"]
    out = [t.install_begin(version, inc, len(chunks) if total is None else total)]
    if out[0] != cardtable.INSTALL_OK:
        return out
    for i in range(len(chunks)):
        out.append(t.install_chunk(i, _unhex(chunks[i])))
    if commit:
        out.append(t.install_commit())
    return out


def begin(version, inc, total):
    return _S["t"].install_begin(version, inc, total)


def chunk(index, hexbytes):
    """One install chunk per call: a worker's input line stays small on a capped heap."""
    return _S["t"].install_chunk(index, _unhex(hexbytes))


def commit():
    return _S["t"].install_commit()


def lookup_many(uids_hex):
    """lookup() of every UID (hex), in one call."""
    return [lookup(u) for u in uids_hex]


def delta(hexbytes):
    return _S["t"].apply_delta(_unhex(hexbytes))


def step():
    return _S["t"].step()


def needs_snapshot():
    return _S["t"].needs_snapshot


def lookup(uid_hex):
    card = CardRecord()
    spends = Spends()
    r = _S["t"].lookup(_unhex(uid_hex), card, spends)
    if r != cardtable.FOUND:
        return [r, None]
    return [r, norm(card.account, card.status, layout.card_account(card, spends))]


def flip(block, offset, bit):
    _S["dev"].mem[block * 4096 + offset] ^= 1 << bit
    return 0


def build_hex(cards_json, accounts_json, version, inc, keys):
    """Build an image on this runtime from JSON data; returns its hex (for the agreement test)."""
    cards = [(_unhex(u), a, s) for u, a, s in cards_json]
    accounts = {}
    for k, a in accounts_json:
        accounts[k] = (a[0], a[1], a[2], a[3], a[4], a[5], a[6])
    return binascii.hexlify(layout.build_image(cards, accounts, version, inc, keys)).decode()


def build_digest(cards_json, accounts_json, version, inc, keys):
    """[size, sha256 hex] of the image this runtime builds, streamed (no whole image in RAM)."""
    import hashlib
    cards = [(_unhex(u), a, s) for u, a, s in cards_json]
    accounts = {}
    for k, a in accounts_json:
        accounts[k] = (a[0], a[1], a[2], a[3], a[4], a[5], a[6])
    b = layout.ImageBuilder(cards, accounts, version, inc, keys)
    cards = accounts = None
    h = hashlib.sha256()
    size = [0]

    def emit(block):
        h.update(block)
        size[0] += len(block)
    b.write(emit)
    return [size[0], binascii.hexlify(h.digest()).decode()]


def delta_hex(version, inc, kind, uid_hex, uid2_hex, account, value):
    uid = _unhex(uid_hex) if uid_hex else None
    uid2 = _unhex(uid2_hex) if uid2_hex else None
    if kind in (carddelta.NEW_CARD, carddelta.REPLACE):
        value = tuple(value)
    elif kind in (carddelta.ENROL, carddelta.TOTALS):
        value = tuple(value)
    return binascii.hexlify(carddelta.encode(version, inc, kind, uid, uid2, account, value)).decode()


def heap():
    """[allocated, free] heap bytes after a collection (MicroPython's view of the cap)."""
    import gc
    gc.collect()
    try:
        return [gc.mem_alloc(), gc.mem_free()]
    except AttributeError:  # CPython
        return [0, 0]
