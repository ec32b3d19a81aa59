"""This terminal's own purchases that the synced card table does not yet include.

Owns invariant 4 of the architecture: the money a terminal may spend for an
account is `synced balance - own purchases not yet included`, and its window
totals are `backend totals + own purchases not yet included`. The card table says
up to which of this terminal's sequence numbers the backend has included
(`included_seq`); every journaled approval above it counts here, exactly once, and so
does every own reversal above it (cpos.refund), with the opposite sign: its money back,
and its amount out of the windows of the purchase it reverses (that purchase's time).

Memory: one entry per account with pending purchases (a balance sum and a 6-slot
window Spends), bounded by the journal's capacity; rebuilt from the journal at boot,
and moved forward record by record as the synced table includes more (`advance`).
"""
from cpos import purchase, reasons, rules
from cpos.localtime import window_key


class _Entry:
    def __init__(self):
        self.amount = 0
        self.n = 0
        self.spends = rules.Spends()


class Unincluded:
    """Own approved purchases above the synced table's included_seq, summed per account."""

    def __init__(self):
        self._by_account = {}
        self.included_seq = 0
        self.count = 0
        self._buf = None

    def clear(self, included_seq):
        self._by_account = {}
        self.included_seq = included_seq
        self.count = 0

    def rebuild(self, journal, included_seq):
        """Forget everything and count again every approved purchase in `journal`
        (cpos.journal) above `included_seq`: at boot, and whenever a synced delta or
        snapshot moves the table's included_seq (cpos.net.sync), so a purchase the backend
        has included stops counting at the same moment the synced balance starts to."""
        self.clear(included_seq)
        self._walk(journal, included_seq, 0xFFFFFFFF, self.add, self.add_reversal)

    def add(self, seq, account, place, amount, t):
        """Count an approved purchase with journal sequence `seq` (ignored if included)."""
        if seq <= self.included_seq:
            return
        e = self._by_account.get(account)
        if e is None:
            e = self._by_account[account] = _Entry()
        e.amount += amount
        e.n += 1
        e.spends.add(place, amount, t)
        self.count += 1

    def add_reversal(self, seq, account, place, amount, orig_t):
        """Count an own reversal with journal sequence `seq` (ignored if included): `amount`
        back to the account, and out of the window totals of the purchase it reverses,
        made at `orig_t`. The purchase itself may be counted here or already included."""
        if seq <= self.included_seq:
            return
        e = self._by_account.get(account)
        if e is None:
            e = self._by_account[account] = _Entry()
        e.amount -= amount
        e.n += 1
        sp = e.spends
        for w in range(rules.WINDOWS):
            k = window_key(orig_t, w)
            if sp.keys[w] == k:
                sp.totals[rules.slot(place, w)] -= amount
            elif sp.keys[w] < k:  # nothing counted in that window yet here: start it
                sp.keys[w] = k
                for p in range(rules.PLACE_KINDS):
                    sp.totals[rules.slot(p, w)] = 0
                sp.totals[rules.slot(place, w)] = -amount
            # else: newer purchases moved this window on; the purchase's window is over
        self.count += 1

    def advance(self, journal, included_seq):
        """The synced table now includes own purchases up to `included_seq`: stop counting
        those. Reads only the newly included records, where `rebuild` reads every pending
        one: a drain after an outage moves included_seq once per batch, and rebuilding
        each time would cost the backlog squared (seconds per delta on an ESP32, in the
        task that also serves taps). Call before the journal may release them. Moving
        backwards (a restored backend) counts everything again."""
        if included_seq < self.included_seq:
            self.rebuild(journal, included_seq)
            return
        self._walk(journal, self.included_seq, included_seq, self._forget, self._forget_reversal)
        self.included_seq = included_seq

    def _walk(self, journal, after, upto, fn, fn_reversal):
        """Call fn(seq, account, place, amount, t) for each approved purchase and
        fn_reversal(seq, account, place, amount, orig_t) for each reversal in `journal`
        with after < seq <= upto, oldest first (torn records are skipped by the journal)."""
        if self._buf is None:
            self._buf = bytearray(purchase.SIZE)
        buf = self._buf
        seq = after + 1
        while seq <= upto:
            s = journal.read(seq, buf, True)
            if s is None or s > upto:
                break
            rec = purchase.decode(buf)
            if "reverses" in rec:
                fn_reversal(s, rec["account"], rec["place"], rec["amount"], rec["orig_t"])
            elif rec["reason"] == reasons.APPROVED:
                fn(s, rec["account"], rec["place"], rec["amount"], rec["t"])
            seq = s + 1

    def _forget(self, seq, account, place, amount, t):
        e = self._by_account.get(account)
        if e is None:
            return
        e.amount -= amount
        e.n -= 1
        self.count -= 1
        if e.n <= 0:
            del self._by_account[account]
            return
        sp = e.spends
        for w in range(rules.WINDOWS):
            if sp.keys[w] == window_key(t, w):  # a total rolled past its window forgot it already
                sp.totals[rules.slot(place, w)] -= amount

    def _forget_reversal(self, seq, account, place, amount, orig_t):
        """A reversal leaves the count: the opposite of forgetting its purchase, in the
        purchase's windows."""
        self._forget(seq, account, place, -amount, orig_t)

    def amount(self, account):
        e = self._by_account.get(account)
        return e.amount if e is not None else 0

    def apply_to(self, card, spends, now):
        """Adjust a looked-up card and its backend window totals by own pending purchases."""
        e = self._by_account.get(card.account)
        if e is None:
            return
        card.balance -= e.amount
        spends.add_from(e.spends, now)

    def accounts(self):
        return len(self._by_account)
