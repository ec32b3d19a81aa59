"""Reversals: a failed vend or a till's void gives back the money of one own recent approval.

    r = Refunds(journal, terminal_no, window_s)
    code = r.check(orig_seq, now)        # reasons.APPROVED, or why it may not be reversed
    rev_seq = r.record(now, balance_after, cause)   # durable on return (after an APPROVED check)

Owns the rule of when a purchase may be reversed and the writing of the reversal record
(cpos.purchase type R, one journal slot that names the purchase). The application
(`App.reverse`, firmware/app.py) adds what the terminal does around it: the balance the
record states, the own not-yet-included purchases (cpos.cards.unincluded), the uplink
kick, the display. docs/rules.md ("Reversals") is the spec; docs/formats.md the record.

The journal is the only memory, so nothing can disagree with it after a power cut:
- the purchase must still be readable in this terminal's journal (acknowledged records
  stay readable until the ring reuses their sector), be a purchase (not a reversal), be
  approved (not a refusal journaled for its top-up trigger) and carry this terminal's
  number; it must be at most `window_s` seconds old;
- it is reversed already when a reversal naming it is in the journal. A reversal is
  newer than its purchase and the ring erases oldest first, so while the purchase is
  readable, so is every reversal of it: the check needs no second store;
- the reversal is one 64-byte slot programmed once: a power cut leaves it whole (the
  purchase is reversed) or torn (it fails its CRC, counts as absent: not reversed). So
  after any cut there is no reversal or exactly one, and `check` answers accordingly.

Cost: `check` reads the purchase and then every record after it (64 bytes each), i.e. the
records of at most one refund window; nothing on the tap path. Runs on both runtimes.
"""
from cpos import purchase, reasons


class Refunds:
    """The reversal rule over one journal (cpos.journal.Journal) of terminal `terminal_no`."""

    def __init__(self, journal, terminal_no, window_s):
        self.journal = journal
        self.terminal_no = terminal_no
        self.window_s = window_s
        self.orig = bytearray(purchase.SIZE)  # the purchase the last APPROVED check found
        self._scan = bytearray(purchase.SIZE)
        self._orig_seq = 0  # which purchase `orig` holds, 0 after anything but an APPROVED check
        self.scanned = 0  # records read by the last already-reversed scan (a figure for tests)

    def check(self, orig_seq, now):
        """May purchase `orig_seq` be reversed at `now` (UTC s)? Returns reasons.APPROVED (its
        record is then in `self.orig`, see `original()`), PURCHASE_NOT_FOUND, NOT_REVERSIBLE,
        REVERSAL_TOO_LATE or ALREADY_REVERSED. Reads only."""
        self._orig_seq = 0
        j = self.journal
        if type(orig_seq) is not int or orig_seq < 1 or orig_seq >= j.next_seq:
            return reasons.PURCHASE_NOT_FOUND
        buf = self.orig
        if j.read(orig_seq, buf, True) != orig_seq:
            return reasons.PURCHASE_NOT_FOUND  # never written (torn), or its sector reused
        if purchase.is_reversal(buf):
            return reasons.NOT_REVERSIBLE
        rec = purchase.decode(buf)
        if rec["reason"] != reasons.APPROVED or rec["terminal"] != self.terminal_no:
            return reasons.NOT_REVERSIBLE
        if now - rec["t"] > self.window_s:
            return reasons.REVERSAL_TOO_LATE
        if self.reversal_of(orig_seq):
            return reasons.ALREADY_REVERSED
        self._orig_seq = orig_seq
        return reasons.APPROVED

    def original(self):
        """The purchase the last APPROVED `check` found, decoded (cpos.purchase.decode)."""
        if not self._orig_seq:
            raise ValueError("no purchase checked")
        return purchase.decode(self.orig)

    def reversal_of(self, orig_seq):
        """The seq of the reversal in the journal that names purchase `orig_seq`, or 0.
        Reads every record after it (torn ones are skipped by the journal)."""
        j = self.journal
        buf = self._scan
        s = orig_seq + 1
        n = 0
        found = 0
        while True:
            got = j.read(s, buf, True)
            if got is None:
                break
            n += 1
            if purchase.reverses(buf) == orig_seq:
                found = got
                break
            s = got + 1
        self.scanned = n
        return found

    def record(self, now, balance_after, cause):
        """Write the reversal of the purchase the last `check` approved; returns its seq once
        it is durable. `balance_after`: the account's available money with this refund.
        Raises cpos.journal.JournalFull or ValueError with nothing written."""
        r = self.original()
        seq = self.journal.append_reversal(now, r["uid"], r["account"], r["amount"], r["place"], r["kind"],
                                           r["terminal"], r["item"], balance_after, self._orig_seq, r["t"], cause)
        self._orig_seq = 0  # a second record needs a second check
        return seq
