"""The purchase record codec: one 64-byte, checksummed journal record.

Owns the byte layout of a purchase record (docs/formats.md, "Purchase journal"):
encoding into a caller's preallocated buffer, checking, and decoding to a dict
(for the uplink, the rescue tool and tests) or to the few fields the POS `LAST`
reply names (`outcome`). No I/O; runs on both runtimes.

Layout (little-endian, 64 bytes, CRC-32 over bytes 0..59 at 60):
  0 u8  type (0x50 'P')        1 u8  flags: bit0 place, bit1 kind, bit2 topup,
                                         bit3 time unknown (t is the floor), bits4-7 uid length
  2 u8  reason                 3 u8  item length in bytes (0..22)
  4 u32 seq                    8 u32 t (UTC epoch seconds)
 12 u32 account               16 u32 terminal
 20 i32 amount (øre)          24 i32 balance_after (øre)
 28 10B uid (zero padded)     38 22B item, UTF-8 (zero padded)
 60 u32 crc32
"""
import struct

from cpos.compat import const
from cpos.crc import seal, sealed_ok
from cpos.money import MAX_ORE
from cpos.uid import UID_LENGTHS, UID_MAX

SIZE = const(64)
TYPE = const(0x50)
ITEM_MAX = const(22)
_CRC_AT = const(60)
_HEAD = "<BBBBIIIIii"  # type, flags, reason, item length, seq, t, account, terminal, amount, balance
_UID_AT = const(28)
_ITEM_AT = const(38)
_U32 = 0xFFFFFFFF
_ZEROS = bytes(UID_MAX + ITEM_MAX)

FIELDS = ("seq", "t", "uid", "account", "amount", "place", "kind", "terminal", "item",
          "balance_after", "reason", "topup")  # and "time_unknown": True, only on a record flagged so
UNTIMED = const(8)  # flags bit3: made while the terminal's time was unknown (cpos.timekeeper)


def fit_item(item):
    """UTF-8 bytes of `item` (str or bytes), truncated to ITEM_MAX on a character boundary."""
    b = item.encode() if isinstance(item, str) else item  # bytes: no copy unless truncated
    if len(b) <= ITEM_MAX:
        return b
    n = ITEM_MAX
    while n > 0 and (b[n] & 0xC0) == 0x80:  # b[n] continues a character: cut before it
        n -= 1
    return bytes(b[:n])


def _u32(v, what):
    if type(v) is not int or v < 0 or v > _U32:
        raise ValueError(what + " must be an unsigned 32-bit int")


def encode_into(buf, seq, t, uid, account, amount, place, kind, terminal, item,
                balance_after, reason, topup, untimed=False):
    """Fill `buf` (64 bytes, reused) with a complete record. Raises ValueError, writing
    nothing to flash, for a field outside the format."""
    _u32(seq, "seq")
    _u32(t, "t")
    _u32(account, "account")
    _u32(terminal, "terminal")
    if len(uid) not in UID_LENGTHS:
        raise ValueError("uid must be 4, 7 or 10 bytes")
    if type(amount) is not int or not 0 <= amount <= MAX_ORE:
        raise ValueError("amount must be int øre in 0..MAX_ORE")
    if type(balance_after) is not int or not -MAX_ORE <= balance_after <= MAX_ORE:
        raise ValueError("balance_after must be int øre within ±MAX_ORE")
    if place not in (0, 1) or kind not in (0, 1):
        raise ValueError("place and kind must be 0 or 1")
    if type(reason) is not int or not 0 <= reason <= 255:
        raise ValueError("reason must be a reason code 0..255")
    it = fit_item(item)
    flags = place | (kind << 1) | ((1 if topup else 0) << 2) | (UNTIMED if untimed else 0) | (len(uid) << 4)
    struct.pack_into(_HEAD, buf, 0, TYPE, flags, reason, len(it), seq, t, account, terminal,
                     amount, balance_after)
    buf[_UID_AT:_CRC_AT] = _ZEROS  # zero padding for uid and item
    buf[_UID_AT:_UID_AT + len(uid)] = uid
    buf[_ITEM_AT:_ITEM_AT + len(it)] = it
    seal(buf, _CRC_AT)


def is_valid(buf):
    """True if `buf` holds a whole purchase record whose checksum matches."""
    if len(buf) < SIZE or buf[0] != TYPE:
        return False
    if (buf[1] >> 4) not in UID_LENGTHS or buf[3] > ITEM_MAX:
        return False
    return sealed_ok(buf, _CRC_AT)


def seq_of(buf):
    """The sequence number of a record (check `is_valid` first)."""
    return struct.unpack_from("<I", buf, 4)[0]


def outcome(buf):
    """(seq, t, amount, balance_after, reason) of a record (check `is_valid` first);
    uid and item are left undecoded."""
    _, _, reason, _, seq, t, _, _, amount, balance_after = struct.unpack_from(_HEAD, buf, 0)
    return seq, t, amount, balance_after, reason


def decode(buf):
    """A valid record as a dict with the FIELDS names (`uid` as bytes, `item` as str), plus
    `time_unknown: True` when flags bit3 is set.
    Raises ValueError for a torn or foreign record."""
    if not is_valid(buf):
        raise ValueError("not a valid purchase record")
    (_, flags, reason, ilen, seq, t, account, terminal, amount,
     balance_after) = struct.unpack_from(_HEAD, buf, 0)
    ulen = flags >> 4
    raw = bytes(buf[_ITEM_AT:_ITEM_AT + ilen])
    try:
        item = raw.decode()
    except UnicodeError:  # valid checksum but not UTF-8: written by something else; keep it visible
        item = repr(raw)
    rec = {
        "seq": seq, "t": t, "uid": bytes(buf[_UID_AT:_UID_AT + ulen]), "account": account,
        "amount": amount, "place": flags & 1, "kind": (flags >> 1) & 1, "terminal": terminal,
        "item": item, "balance_after": balance_after, "reason": reason,
        "topup": bool(flags & 4),
    }
    if flags & UNTIMED:  # absent otherwise: every other record keeps its bytes on the wire
        rec["time_unknown"] = True
    return rec


def to_json_obj(rec):
    """A decoded record with `uid` as lowercase hex, ready for json.dumps."""
    out = dict(rec)
    out["uid"] = "".join("%02x" % b for b in rec["uid"])
    return out
