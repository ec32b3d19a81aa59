"""The journal record codec: one 64-byte, checksummed record, a purchase or a reversal.

Owns the byte layout of the records the journal holds (docs/formats.md, "Purchase
journal", record format 2): encoding into a caller's preallocated buffer, checking,
and decoding to a dict (for the uplink, the rescue tool and tests) or to the few fields
the POS `LAST` reply names (`outcome`). No I/O; runs on both runtimes.

Purchase (type 0x50 'P'; little-endian, 64 bytes, CRC-32 over bytes 0..59 at 60):
  0 u8  type                   1 u8  flags: bit0 place, bit1 kind, bit2 topup,
                                     bit3 time unknown (t is the floor), bits4-7 uid length
  2 u8  reason                 3 u8  item length in bytes (0..22)
  4 u32 seq                    8 u32 t (UTC epoch seconds)
 12 u32 account               16 u32 terminal
 20 i32 amount (øre)          24 i32 balance_after (øre)
 28 10B uid (zero padded)     38 22B item, UTF-8 (zero padded)
 60 u32 crc32

Reversal (type 0x52 'R', cpos.refund): the same bytes 0..37 (account, terminal, uid,
place, kind and amount copied from the purchase it reverses; seq and t its own; reason
`reasons.REVERSED`; topup 0; balance_after with the money back), then
 38 u32 orig_seq (the purchase reversed)   42 u32 orig_t (that purchase's time)
 46 u8  cause (1 vend failure, 2 void)     47 13B item, UTF-8 (zero padded)
 60 u32 crc32
"""
import struct

from cpos import reasons
from cpos.compat import const
from cpos.crc import seal, sealed_ok
from cpos.money import MAX_ORE
from cpos.uid import UID_LENGTHS, UID_MAX

SIZE = const(64)
TYPE = const(0x50)  # 'P': a purchase
TYPE_REVERSAL = const(0x52)  # 'R': the reversal of one purchase
ITEM_MAX = const(22)
REVERSAL_ITEM_MAX = const(13)
CAUSE_VEND_FAILURE = const(1)  # the vending machine reported VEND FAILURE after the approval
CAUSE_VOID = const(2)  # the till voided its own purchase (POS `VOID`)
CAUSES = ("", "vend_failure", "void")  # JSON names, index = cause byte
_CRC_AT = const(60)
_HEAD = "<BBBBIIIIii"  # type, flags, reason, item length, seq, t, account, terminal, amount, balance
_UID_AT = const(28)
_ITEM_AT = const(38)
_ORIG_AT = const(38)  # reversal: u32 orig_seq, u32 orig_t, u8 cause
_RITEM_AT = const(47)
_U32 = 0xFFFFFFFF
_ZEROS = bytes(UID_MAX + ITEM_MAX)

FIELDS = ("seq", "t", "uid", "account", "amount", "place", "kind", "terminal", "item",
          "balance_after", "reason", "topup")  # and "time_unknown": True, only on a record flagged so
UNTIMED = const(8)  # flags bit3: made while the terminal's time was unknown (cpos.timekeeper)


def fit_item(item, most=ITEM_MAX):
    """UTF-8 bytes of `item` (str or bytes), truncated to `most` bytes on a character boundary."""
    b = item.encode() if isinstance(item, str) else item  # bytes: no copy unless truncated
    if len(b) <= most:
        return b
    n = most
    while n > 0 and (b[n] & 0xC0) == 0x80:  # b[n] continues a character: cut before it
        n -= 1
    return bytes(b[:n])


def _u32(v, what):
    if type(v) is not int or v < 0 or v > _U32:
        raise ValueError(what + " must be an unsigned 32-bit int")


def _check_common(seq, t, uid, account, amount, place, kind, terminal, balance_after):
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


def encode_into(buf, seq, t, uid, account, amount, place, kind, terminal, item,
                balance_after, reason, topup, untimed=False):
    """Fill `buf` (64 bytes, reused) with a complete purchase record (`untimed`: flags bit3,
    made while the terminal's time was unknown). Raises ValueError,
    writing nothing to flash, for a field outside the format."""
    _check_common(seq, t, uid, account, amount, place, kind, terminal, balance_after)
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


def encode_reversal_into(buf, seq, t, uid, account, amount, place, kind, terminal, item,
                         balance_after, orig_seq, orig_t, cause):
    """Fill `buf` (64 bytes) with a complete reversal record of purchase `orig_seq` (made
    at `orig_t`); `amount` is what goes back (the purchase's amount). ValueError, writing
    nothing, for a field outside the format."""
    _check_common(seq, t, uid, account, amount, place, kind, terminal, balance_after)
    _u32(orig_t, "orig_t")
    if type(orig_seq) is not int or not 0 < orig_seq < seq:
        raise ValueError("orig_seq must name an earlier record")
    if cause not in (CAUSE_VEND_FAILURE, CAUSE_VOID):
        raise ValueError("cause must be CAUSE_VEND_FAILURE or CAUSE_VOID")
    it = fit_item(item, REVERSAL_ITEM_MAX)
    flags = place | (kind << 1) | (len(uid) << 4)
    struct.pack_into(_HEAD, buf, 0, TYPE_REVERSAL, flags, reasons.REVERSED, len(it), seq, t, account,
                     terminal, amount, balance_after)
    buf[_UID_AT:_CRC_AT] = _ZEROS
    buf[_UID_AT:_UID_AT + len(uid)] = uid
    struct.pack_into("<IIB", buf, _ORIG_AT, orig_seq, orig_t, cause)
    buf[_RITEM_AT:_RITEM_AT + len(it)] = it
    seal(buf, _CRC_AT)


def is_valid(buf):
    """True if `buf` holds a whole record (purchase or reversal) whose checksum matches."""
    if len(buf) < SIZE or (buf[1] >> 4) not in UID_LENGTHS:
        return False
    if buf[0] == TYPE:
        if buf[3] > ITEM_MAX:
            return False
    elif buf[0] == TYPE_REVERSAL:
        if buf[3] > REVERSAL_ITEM_MAX or buf[46] not in (CAUSE_VEND_FAILURE, CAUSE_VOID):
            return False
    else:
        return False
    return sealed_ok(buf, _CRC_AT)


def is_reversal(buf):
    """True if a valid record (check `is_valid` first) is a reversal."""
    return buf[0] == TYPE_REVERSAL


def reversal_of(buf):
    """(orig_seq, orig_t, cause) of a valid reversal record (check `is_reversal` first)."""
    return struct.unpack_from("<IIB", buf, _ORIG_AT)


def reverses(buf):
    """The purchase seq a valid record reverses, or 0 for a purchase. Allocates nothing."""
    if buf[0] != TYPE_REVERSAL:
        return 0
    return buf[38] | (buf[39] << 8) | (buf[40] << 16) | (buf[41] << 24)


def seq_of(buf):
    """The sequence number of a record (check `is_valid` first)."""
    return struct.unpack_from("<I", buf, 4)[0]


def outcome(buf):
    """(seq, t, amount, balance_after, reason) of a record (check `is_valid` first);
    uid and item are left undecoded."""
    _, _, reason, _, seq, t, _, _, amount, balance_after = struct.unpack_from(_HEAD, buf, 0)
    return seq, t, amount, balance_after, reason


def decode(buf):
    """A valid record as a dict with the FIELDS names (`uid` as bytes, `item` as str); a
    reversal adds `reverses` (orig seq), `orig_t` and `cause` (a CAUSES name); a record
    flagged so adds `time_unknown: True`.
    Raises ValueError for a torn or foreign record."""
    if not is_valid(buf):
        raise ValueError("not a valid journal record")
    (typ, flags, reason, ilen, seq, t, account, terminal, amount,
     balance_after) = struct.unpack_from(_HEAD, buf, 0)
    ulen = flags >> 4
    at = _ITEM_AT if typ == TYPE else _RITEM_AT
    raw = bytes(buf[at:at + ilen])
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
    if typ == TYPE_REVERSAL:
        orig_seq, orig_t, cause = reversal_of(buf)
        rec["reverses"] = orig_seq
        rec["orig_t"] = orig_t
        rec["cause"] = CAUSES[cause]
    if flags & UNTIMED:  # absent otherwise: every other record keeps its bytes on the wire
        rec["time_unknown"] = True
    return rec


def to_json_obj(rec):
    """A decoded record with `uid` as lowercase hex, ready for json.dumps."""
    out = dict(rec)
    out["uid"] = "".join("%02x" % b for b in rec["uid"])
    return out
