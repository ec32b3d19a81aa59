"""The card table's card overlay: which cards changed since the table's image, in RAM.

Owns one fixed-size open-addressing table in a preallocated bytearray, keyed by card
UID: a card's status (blocked, unblocked, replaced) and, for a card the image does not
hold (new, or the replacement of a lost card), the account it belongs to. Each field
keeps the version of the delta that set it, so rebuilding the overlay at mount from the
change store (cpos.cards.changes) in any order gives the newest value. Account state
is not here: it lives in the change store on flash. Lookups read the table without
allocating; its size does not depend on the number of cards.
"""
from cpos.compat import const
from cpos.cards.layout import uid_hash
from cpos.cards.delta import BLOCK, UNBLOCK, NEW_CARD, REPLACE
from cpos.rules import ACTIVE, BLOCKED, REPLACED
from cpos.uid import uid_kind

# card entry: flags(1) uid(10) account(3) status_version(4) account_version(4)
CARD = const(22)
C_STATUS = const(0x10)
C_ACCOUNT = const(0x20)  # a full card (new or replacing): the image is not consulted


def _rd32(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


def _wr32(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


def is_card_kind(k):
    """True for the delta kinds that change a card (and so the overlay)."""
    return k == BLOCK or k == UNBLOCK or k == NEW_CARD or k == REPLACE


class Overlay:
    def __init__(self, card_slots):
        self.card_cap = card_slots
        self.cards = bytearray(CARD * card_slots)
        self.clear()

    def clear(self):
        c = self.cards
        for i in range(len(c)):
            c[i] = 0xFF
        self.card_n = 0

    def nearly_full(self):
        """Three quarters full: time to ask for a snapshot (card changes are rare)."""
        return self.card_n * 4 >= self.card_cap * 3

    def card_account(self, i):
        c = self.cards
        o = i * CARD
        return c[o + 11] | (c[o + 12] << 8) | (c[o + 13] << 16)

    def card_find(self, uid, n, kind, h, create=False):
        c = self.cards
        cap = self.card_cap
        i = h % cap
        for _ in range(cap):
            o = i * CARD
            f = c[o]
            if f == 0xFF:
                if not create:
                    return -1
                c[o] = kind
                for j in range(n):
                    c[o + 1 + j] = uid[j]
                for j in range(14, 22):
                    c[o + j] = 0
                self.card_n += 1
                return i
            if f & 3 == kind:
                j = 0
                while j < n and c[o + 1 + j] == uid[j]:
                    j += 1
                if j == n:
                    return i
            i = (i + 1) % cap
        return -1

    def _need(self, uid, n):
        return 1 if self.card_find(uid, n, uid_kind(n), uid_hash(uid, 0, n)) < 0 else 0

    def room(self, d):
        """True if the overlay can take delta `d` (kept at most 7/8 full)."""
        k = d.kind
        if not is_card_kind(k):
            return True
        need = self._need(d.uid, d.uid_len)
        if k == REPLACE:
            need += self._need(d.uid2, d.uid2_len)
        return self.card_n + need <= self.card_cap * 7 // 8

    def _set(self, uid, n, status, account, version):
        i = self.card_find(uid, n, uid_kind(n), uid_hash(uid, 0, n), True)
        o = i * CARD
        c = self.cards
        f = c[o]
        if status >= 0 and (not f & C_STATUS or version > _rd32(c, o + 14)):
            f = (f & ~0x0C) | (status << 2) | C_STATUS
            _wr32(c, o + 14, version)
        if account >= 0 and (not f & C_ACCOUNT or version > _rd32(c, o + 18)):
            f |= C_ACCOUNT
            c[o + 11] = account & 0xFF
            c[o + 12] = (account >> 8) & 0xFF
            c[o + 13] = account >> 16
            _wr32(c, o + 18, version)
        c[o] = f

    def apply(self, d):
        """Apply a card-kind delta (others are ignored); newest version wins per field."""
        k = d.kind
        v = d.version
        if k == BLOCK or k == UNBLOCK:
            self._set(d.uid, d.uid_len, BLOCKED if k == BLOCK else ACTIVE, -1, v)
        elif k == NEW_CARD:
            self._set(d.uid, d.uid_len, ACTIVE, d.account, v)
        elif k == REPLACE:
            self._set(d.uid, d.uid_len, REPLACED, -1, v)
            self._set(d.uid2, d.uid2_len, ACTIVE, d.account, v)
