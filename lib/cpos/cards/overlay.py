"""The card table's delta overlay: what the deltas since the table's image changed, in RAM.

Owns two fixed-size open-addressing tables in preallocated bytearrays, one keyed by
account id (balance, places, limits, top-up, window totals; each with a "set" bit) and
one keyed by card UID (status, and for new cards the account they belong to). Lookups
read them without allocating; their size does not depend on the number of cards.
"""
from cpos.compat import const
from cpos.cards.layout import uid_hash
from cpos.cards.delta import BALANCE, BLOCK, UNBLOCK, NEW_CARD, REPLACE, LIMITS, PLACES, ENROL, TOTALS
from cpos.rules import ACTIVE, BLOCKED, REPLACED
from cpos.uid import uid_kind

# account overlay entry: acct(3) mask(1) balance(4) places(1) enrolled(1) topup(4)
# limits(6x4) keys(3x4) totals(6x4); signed fields are sign-magnitude (small ints only)
ACC = const(74)
_M_BAL = const(1)
_M_PLACES = const(2)
_M_LIMITS = const(4)
_M_TOPUP = const(8)
_M_TOTALS = const(16)
_M_ALL = const(31)
# card overlay entry: flags(1) uid(10) account(3) spare(2); flags 0xFF = empty
CARD = const(16)
C_STATUS = const(0x10)
C_ACCOUNT = const(0x20)  # a full card (new or replacing): the base table is not consulted


def _put_s(b, o, v):
    m = -v if v < 0 else v
    b[o] = m & 0xFF
    b[o + 1] = (m >> 8) & 0xFF
    b[o + 2] = (m >> 16) & 0xFF
    b[o + 3] = ((m >> 24) & 0x3F) | (0x80 if v < 0 else 0)


def _get_s(b, o):
    m = b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | ((b[o + 3] & 0x3F) << 24)
    return -m if b[o + 3] & 0x80 else m



class Overlay:
    def __init__(self, acc_slots, card_slots):
        self.acc_cap = acc_slots
        self.card_cap = card_slots
        self.acc = bytearray(ACC * acc_slots)
        self.cards = bytearray(CARD * card_slots)
        self.clear()

    def clear(self):
        for i in range(len(self.acc)):
            self.acc[i] = 0xFF
        for i in range(len(self.cards)):
            self.cards[i] = 0xFF
        self.acc_n = 0
        self.card_n = 0

    def half_full(self):
        return self.acc_n * 2 > self.acc_cap or self.card_n * 2 > self.card_cap

    def card_account(self, i):
        c = self.cards
        o = i * CARD
        return c[o + 11] | (c[o + 12] << 8) | (c[o + 13] << 16)

    def acc_find(self, acct, create=False):
        a = self.acc
        cap = self.acc_cap
        i = (acct ^ (acct >> 9)) % cap
        for _ in range(cap):
            o = i * ACC
            if a[o] == 0xFF and a[o + 1] == 0xFF and a[o + 2] == 0xFF:
                if not create:
                    return -1
                a[o] = acct & 0xFF
                a[o + 1] = (acct >> 8) & 0xFF
                a[o + 2] = acct >> 16
                a[o + 3] = 0
                self.acc_n += 1
                return i
            if a[o] | (a[o + 1] << 8) | (a[o + 2] << 16) == acct:
                return i
            i = (i + 1) % cap
        return -1

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

    def room(self, d):
        """True if the overlay can take delta `d` (keeps it at most 7/8 full)."""
        k = d.kind
        need_acc = 0 if k in (BLOCK, UNBLOCK) or self.acc_find(d.account) >= 0 else 1
        need_cards = 0
        if k in (BLOCK, UNBLOCK, NEW_CARD, REPLACE):
            n = d.uid_len
            if self.card_find(d.uid, n, uid_kind(n), uid_hash(d.uid, 0, n)) < 0:
                need_cards += 1
        if k == REPLACE:
            n = d.uid2_len
            if self.card_find(d.uid2, n, uid_kind(n), uid_hash(d.uid2, 0, n)) < 0:
                need_cards += 1
        return (self.acc_n + need_acc <= self.acc_cap * 7 // 8
                and self.card_n + need_cards <= self.card_cap * 7 // 8)

    def set_card(self, uid, n, status, account):
        i = self.card_find(uid, n, uid_kind(n), uid_hash(uid, 0, n), True)
        o = i * CARD
        c = self.cards
        f = (c[o] & (3 | C_ACCOUNT)) | (status << 2) | C_STATUS
        if account >= 0:
            f |= C_ACCOUNT
            c[o + 11] = account & 0xFF
            c[o + 12] = (account >> 8) & 0xFF
            c[o + 13] = account >> 16
        c[o] = f

    def set_acc(self, acct, mask, card, spends):
        o = self.acc_find(acct, True) * ACC
        a = self.acc
        a[o + 3] |= mask
        if mask & _M_BAL:
            _put_s(a, o + 4, card.balance)
        if mask & _M_PLACES:
            a[o + 8] = card.places
        if mask & _M_TOPUP:
            a[o + 9] = 1 if card.topup_enrolled else 0
            _put_s(a, o + 10, card.topup_amount_kr)
        if mask & _M_LIMITS:
            for i in range(6):
                _put_s(a, o + 14 + 4 * i, card.limits[i])
        if mask & _M_TOTALS:
            for w in range(3):
                _put_s(a, o + 38 + 4 * w, spends.keys[w])
            for i in range(6):
                _put_s(a, o + 50 + 4 * i, spends.totals[i])

    def acc_apply(self, i, card, spends):
        a = self.acc
        o = i * ACC
        mask = a[o + 3]
        if mask & _M_BAL:
            card.balance = _get_s(a, o + 4)
        if mask & _M_PLACES:
            card.places = a[o + 8]
        if mask & _M_TOPUP:
            card.topup_enrolled = a[o + 9] == 1
            card.topup_amount_kr = _get_s(a, o + 10)
        if mask & _M_LIMITS:
            lim = card.limits
            for j in range(6):
                lim[j] = _get_s(a, o + 14 + 4 * j)
        if mask & _M_TOTALS:
            for w in range(3):
                spends.keys[w] = _get_s(a, o + 38 + 4 * w)
            for j in range(6):
                spends.totals[j] = _get_s(a, o + 50 + 4 * j)

    def apply(self, d):
        k = d.kind
        c = d.card
        if k == BALANCE:
            c.balance = d.value
            self.set_acc(d.account, _M_BAL, c, d.spends)
        elif k == BLOCK or k == UNBLOCK:
            self.set_card(d.uid, d.uid_len, BLOCKED if k == BLOCK else ACTIVE, -1)
        elif k == NEW_CARD or k == REPLACE:
            if k == REPLACE:
                self.set_card(d.uid, d.uid_len, REPLACED, -1)
                self.set_card(d.uid2, d.uid2_len, ACTIVE, d.account)
            else:
                self.set_card(d.uid, d.uid_len, ACTIVE, d.account)
            self.set_acc(d.account, _M_ALL, c, d.spends)
        elif k == LIMITS:
            self.set_acc(d.account, _M_LIMITS, c, d.spends)
        elif k == PLACES:
            c.places = d.value
            self.set_acc(d.account, _M_PLACES, c, d.spends)
        elif k == ENROL:
            self.set_acc(d.account, _M_TOPUP, c, d.spends)
        elif k == TOTALS:
            self.set_acc(d.account, _M_TOTALS, c, d.spends)
