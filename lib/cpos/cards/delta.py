"""Card-table deltas: the binary encoding (backend side) and its strict decoder (terminal side).

Owns the delta layout in docs/formats.md ("Card table", "Deltas"). The same bytes
travel in a downlink message and are kept, unchanged, in the table's change store on flash.
Runtime-neutral; decoding garbage raises ValueError, never anything else.

    magic 'D' | format 1 | kind | version u32 | included_seq u32 | payload | crc32 u32

A JUMP (kind 10, payload the u32 version it jumps from) changes no card: it moves a table
that holds exactly `from` to its own version, ahead of a catch-up (docs/protocol.md, "Catch-up
from the ledger's changes").
"""
import struct

from cpos.compat import const
from cpos.cards import layout as cardfmt
from cpos.cards.layout import Cursor
from cpos.crc import seal, sealed_ok
from cpos.rules import CardRecord, Spends, NO_LIMIT
from cpos.uid import UID_MAX, uid_kind

MAGIC = const(0x44)
FORMAT = const(1)
HEAD = const(11)
MAX_DELTA = const(200)  # bytes; anything longer is malformed

BALANCE = const(1)  # account, synced balance (absolute, øre)
BLOCK = const(2)  # uid
UNBLOCK = const(3)  # uid
NEW_CARD = const(4)  # uid, account, account state
REPLACE = const(5)  # old uid, new uid, account, account state
LIMITS = const(6)  # account, 6 limits
PLACES = const(7)  # account, places mask
ENROL = const(8)  # account, enrolled, top-up amount (kr)
TOTALS = const(9)  # account, 3 window keys, 6 totals
JUMP = const(10)  # from version u32 (< version): a table at exactly `from` moves to version
KINDS = const(10)

NAMES = ("", "balance", "block", "unblock", "new_card", "replace", "limits", "places", "enrol", "totals", "jump")
_NO_REF = (0, 0, 0)


def _acct(out, account):
    if type(account) is not int or not 0 <= account <= cardfmt.MAX_ACCOUNT:
        raise ValueError("bad account id")
    out.extend(struct.pack("<I", account)[:3])


def _uid(out, uid):
    if uid_kind(len(uid)) < 0:
        raise ValueError("UID must be 4, 7 or 10 bytes")
    out.append(len(uid))
    out.extend(uid)


def with_included(d, included_seq):
    """Delta `d` with its included_seq (header bytes 7..10) replaced: the same change, told
    with another watermark (the backend's last delta of a pass, cpos docs/protocol.md)."""
    out = bytearray(d)
    struct.pack_into("<I", out, 7, included_seq)
    seal(out)  # the CRC covers the header too
    return bytes(out)


def encode(version, included_seq, kind, uid=None, uid2=None, account=0, value=None):
    """Encode one delta. `value` per kind: BALANCE int øre; LIMITS 6 ints; PLACES int;
    ENROL (enrolled, kr); TOTALS (keys3, totals6); NEW_CARD / REPLACE an account tuple;
    JUMP the version jumped from (below `version`)."""
    if not (type(version) is int and 0 <= version <= 0xFFFFFFFF):
        raise ValueError("bad version")
    if not (type(included_seq) is int and 0 <= included_seq <= 0xFFFFFFFF):
        raise ValueError("bad included_seq")
    out = bytearray(struct.pack("<BBBII", MAGIC, FORMAT, kind, version, included_seq))
    if kind == BALANCE:
        _acct(out, account)
        if type(value) is not int or abs(value) > cardfmt.MAX_AMOUNT:
            raise ValueError("bad balance")
        cardfmt._zigzag(out, value)
    elif kind in (BLOCK, UNBLOCK):
        _uid(out, uid)
    elif kind == NEW_CARD:
        _uid(out, uid)
        _acct(out, account)
        cardfmt.encode_account(out, value, _NO_REF)
    elif kind == REPLACE:
        _uid(out, uid)
        _uid(out, uid2)
        if bytes(uid) == bytes(uid2):
            raise ValueError("a card cannot replace itself")
        _acct(out, account)
        cardfmt.encode_account(out, value, _NO_REF)
    elif kind == LIMITS:
        _acct(out, account)
        a = (0, 0, list(value), False, 0, [0, 0, 0], [0] * 6)
        cardfmt.check_account(a)
        m = 0
        for i in range(6):
            if value[i] != NO_LIMIT:
                m |= 1 << i
        out.append(m)
        for i in range(6):
            if m & (1 << i):
                cardfmt._varint(out, value[i])
    elif kind == PLACES:
        _acct(out, account)
        if value not in (0, 1, 2, 3):
            raise ValueError("bad places")
        out.append(value)
    elif kind == ENROL:
        _acct(out, account)
        enrolled, kr = value
        if enrolled not in (True, False, 0, 1) or type(kr) is not int or not 0 <= kr <= 10000000:
            raise ValueError("bad enrolment")
        out.append(1 if enrolled else 0)
        cardfmt._varint(out, kr)
    elif kind == TOTALS:
        _acct(out, account)
        keys, totals = value
        cardfmt.check_account((0, 0, [NO_LIMIT] * 6, False, 0, list(keys), list(totals)))
        for w in range(3):
            cardfmt._varint(out, keys[w])
        for i in range(6):
            cardfmt._zigzag(out, totals[i])
    elif kind == JUMP:
        if type(value) is not int or not 0 <= value < version:
            raise ValueError("a jump goes up from a lower version")
        out.extend(struct.pack("<I", value))
    else:
        raise ValueError("unknown delta kind")
    out.extend(b"\0\0\0\0")
    seal(out)
    if len(out) > MAX_DELTA:
        raise ValueError("delta too long")
    return bytes(out)


class Delta:
    """A decoded delta; one instance is reused by the table for every delta it applies."""

    def __init__(self):
        self.card = CardRecord()  # account state of NEW_CARD / REPLACE, limits of LIMITS
        self.spends = Spends()  # keys and totals of NEW_CARD / REPLACE / TOTALS
        self.uid = bytearray(UID_MAX)
        self.uid_len = 0
        self.uid2 = bytearray(UID_MAX)
        self.uid2_len = 0
        self._cur = Cursor()
        self.clear()

    def clear(self):
        self.version = self.included_seq = self.kind = 0
        self.account = 0
        self.value = 0  # BALANCE balance, PLACES places, JUMP the version jumped from
        self.uid_len = self.uid2_len = 0

    def decode(self, buf, off=0, n=-1, check=True):
        """Fill this Delta from buf[off:off + n] (n < 0: to the end); ValueError if the bytes
        are not exactly one good delta. `check=False` skips the CRC (and its memoryview), for
        a record the table verified when it wrote or mounted it: the tap path allocates nothing."""
        self.clear()
        if n < 0:
            n = len(buf) - off
        if n < HEAD + 4 + 1 or n > MAX_DELTA or off + n > len(buf):
            raise ValueError("delta length")
        if check and not (sealed_ok(buf) if off == 0 and n == len(buf) else sealed_ok(memoryview(buf)[off:off + n])):
            raise ValueError("delta checksum")
        if buf[off] != MAGIC or buf[off + 1] != FORMAT:
            raise ValueError("not a card-table delta of this format")
        kind = buf[off + 2]
        if kind < 1 or kind > KINDS:
            raise ValueError("unknown delta kind")
        self.kind = kind
        self.version = cardfmt.rd32(buf, off + 3)
        self.included_seq = cardfmt.rd32(buf, off + 7)
        cur = self._cur
        cur.buf = buf
        cur.pos = off + HEAD
        cur.end = off + n - 4
        if kind in (BLOCK, UNBLOCK, NEW_CARD, REPLACE):
            self.uid_len = self._uid(cur, self.uid)
        if kind == REPLACE:
            self.uid2_len = self._uid(cur, self.uid2)
            if self.uid_len == self.uid2_len and self.uid[:self.uid_len] == self.uid2[:self.uid2_len]:
                raise ValueError("a card cannot replace itself")
        if kind not in (BLOCK, UNBLOCK, JUMP):
            self.account = cur.byte() | (cur.byte() << 8) | (cur.byte() << 16)
            if self.account > cardfmt.MAX_ACCOUNT:
                raise ValueError("bad account id")
        card = self.card
        card.clear()
        self.spends.clear()
        if kind == BALANCE:
            self.value = cur.zigzag()
            if self.value > cardfmt.MAX_AMOUNT or self.value < -cardfmt.MAX_AMOUNT:
                raise ValueError("bad balance")
        elif kind in (NEW_CARD, REPLACE):
            cardfmt.decode_account_into(cur, card, self.spends, _NO_REF)
        elif kind == LIMITS:
            m = cur.byte()
            if m & 0xC0:
                raise ValueError("bad limit mask")
            for i in range(6):
                card.limits[i] = cur.varint() if m & (1 << i) else NO_LIMIT
        elif kind == PLACES:
            self.value = cur.byte()
            if self.value > 3:
                raise ValueError("bad places")
        elif kind == ENROL:
            e = cur.byte()
            if e > 1:
                raise ValueError("bad enrolment flag")
            card.topup_enrolled = bool(e)
            card.topup_amount_kr = cur.varint() if e else 0
            if not e:
                cur.varint()  # an amount without enrolment means nothing
        elif kind == TOTALS:
            for w in range(3):
                self.spends.keys[w] = cur.varint()
            for i in range(6):
                self.spends.totals[i] = cur.zigzag()
        elif kind == JUMP:
            if cur.end - cur.pos != 4:
                raise ValueError("a jump is 4 bytes")
            self.value = cardfmt.rd32(buf, cur.pos)
            cur.pos += 4
            if self.value >= self.version:
                raise ValueError("a jump goes up from a lower version")
        if cur.pos != cur.end:
            raise ValueError("trailing bytes in delta")
        return self

    @staticmethod
    def _uid(cur, into):
        n = cur.byte()
        if uid_kind(n) < 0:
            raise ValueError("bad UID length")
        for i in range(n):
            into[i] = cur.byte()
        return n
