"""Automatic top-up on the backend: terminals' triggers in, charges out, deposits booked.

Owns the life of a trigger (rows of `topup_triggers`, written by `Ledger.apply_batch`) and
of an attempt (rows of `topup_attempts`):

    trigger  pending -> inflight -> done | failed         (or pending -> failed | skipped)
    attempt  inflight -> done | failed

For an account with pending triggers, one short transaction (`_claim`) checks the guide's
conditions (enrolled; the canteen card not blocked or replaced; the backend's balance still
under the threshold, else the trigger is `skipped`: an earlier top-up already answered it)
and records an attempt *in flight* before any money moves. A partial unique index allows
at most one in-flight attempt per account, so however many triggers arrive from however
many terminals, and however many processors run, one charge is out per account at a time.
The charge goes to the payment provider under the attempt's order id; a second transaction
(`_finish`) books the deposit (`Ledger._book`, which notes a `balance` change for the
downlink) and closes the attempt and its triggers with the reason, all or nothing.

A processor that dies between the two leaves the attempt in flight in SQLite: `recover()`
(run at start) re-sends the same order id, which the provider answers without charging
twice, and finishes the attempt. Provider trouble (an exception) leaves the attempt in
flight too; `process_pending` re-drives attempts older than `stale_s`.
"""
import sqlite3
import time

from cpos.money import ORE_PER_KRONE, format_kr
from cpos.rules import DEFAULT_TOPUP_THRESHOLD

TOPUP_TEXT = "1x Automatisk optankning"

REASONS = {
    "approved": "charged %s",
    "declined": "payment card declined: insufficient funds",
    "expired": "payment card expired",
    "identical": "identical transaction: the same amount was charged less than 15 minutes ago",
    "unknown_card": "payment card unknown to the provider",
}


class TopupProcessor:
    def __init__(self, ledger, provider, threshold=DEFAULT_TOPUP_THRESHOLD, clock=time.time, stale_s=30, log=None):
        self.ledger = ledger
        self.db = ledger.db
        self.provider = provider
        self.threshold = threshold
        self.clock = clock
        self.stale_s = stale_s
        self.log = log or (lambda m: None)

    def recover(self):
        """Finish every attempt left in flight (after a crash). Returns how many."""
        return self._redrive(older_than=None)

    def process_pending(self):
        """Answer the pending triggers of every account; returns the attempts finished."""
        done = self._redrive(older_than=self.stale_s)
        accounts = [r[0] for r in self.db.execute(
            "SELECT DISTINCT account FROM topup_triggers WHERE status = 'pending' ORDER BY account")]
        for account in accounts:
            attempt = self._claim(account)
            if attempt is not None:
                done += self._charge_and_finish(attempt)
        return done

    # --- steps ----------------------------------------------------------------------------

    def _redrive(self, older_than):
        q = "SELECT id, account, amount, payment_ref, order_id FROM topup_attempts WHERE status = 'inflight'"
        args = ()
        if older_than is not None:
            q += " AND started <= ?"
            args = (int(self.clock()) - older_than,)
        return sum(self._charge_and_finish(a) for a in self.db.execute(q, args).fetchall())

    def _claim(self, account):
        """One transaction: check the conditions, and either close the account's pending
        triggers with a reason or record an attempt in flight. Returns the attempt or None."""
        now = int(self.clock())
        db = self.db
        try:
            with self.ledger._tx():
                if db.execute("SELECT 1 FROM topup_attempts WHERE account = ? AND status = 'inflight'",
                              (account,)).fetchone():
                    return None  # its triggers stay pending; the attempt's outcome answers them later
                pending = db.execute(
                    "SELECT tr.terminal, tr.seq, c.status FROM topup_triggers tr "
                    "LEFT JOIN uplink u ON u.terminal = tr.terminal AND u.seq = tr.seq "
                    "LEFT JOIN cards c ON c.uid = u.uid "
                    "WHERE tr.account = ? AND tr.status = 'pending'", (account,)).fetchall()
                if not pending:
                    return None
                live = []
                for terminal, seq, card_status in pending:
                    if card_status in ("blocked", "replaced"):
                        self._close(terminal, seq, "failed", "canteen card %s" % card_status, None)
                    else:
                        live.append((terminal, seq))
                if not live:
                    return None
                en = db.execute("SELECT amount_kr, payment_ref FROM enrolments WHERE account = ? AND status = 'active'",
                                (account,)).fetchone()
                if en is None:
                    for terminal, seq in live:
                        self._close(terminal, seq, "failed", "not enrolled in automatic top-up", None)
                    return None
                balance = self.ledger.balance(account) or 0
                if balance >= self.threshold:
                    for terminal, seq in live:
                        self._close(terminal, seq, "skipped", "balance %s is not under %s" % (
                            format_kr(balance), format_kr(self.threshold)), None)
                    return None
                amount = en[0] * ORE_PER_KRONE
                aid = db.execute("INSERT INTO topup_attempts (account, amount, payment_ref, status, started) "
                                 "VALUES (?, ?, ?, 'inflight', ?)", (account, amount, en[1], now)).lastrowid
                order_id = "cpos-topup-%d" % aid
                db.execute("UPDATE topup_attempts SET order_id = ? WHERE id = ?", (order_id, aid))
                for terminal, seq in live:
                    self._close(terminal, seq, "inflight", None, aid)
        except sqlite3.IntegrityError:
            return None  # another processor's attempt for this account is in flight
        return (aid, account, amount, en[1], order_id)

    def _close(self, terminal, seq, status, reason, attempt):
        self.db.execute("UPDATE topup_triggers SET status = ?, reason = ?, attempt = ? WHERE terminal = ? AND seq = ?",
                        (status, reason, attempt, terminal, seq))

    def _charge_and_finish(self, attempt):
        aid, account, amount, ref, order_id = attempt
        try:
            charge = self.provider.charge(ref, amount, order_id)
        except Exception as e:  # the provider did not answer: stays in flight, re-driven later
            self.log("topup: attempt %d for account %d: provider error %s" % (aid, account, e))
            return 0
        return self._finish(attempt, charge)

    def _finish(self, attempt, charge):
        aid, account, amount, _, order_id = attempt
        now = int(self.clock())
        with self.ledger._tx():
            row = self.db.execute("SELECT status FROM topup_attempts WHERE id = ?", (aid,)).fetchone()
            if row is None or row[0] != "inflight":
                return 0  # another processor finished it (recovery racing a slow original)
            reason = REASONS.get(charge.outcome, charge.outcome)
            if charge.ok:
                reason = reason % format_kr(amount)
                self.ledger._book(account, "deposited", amount, now, TOPUP_TEXT)
            status = "done" if charge.ok else "failed"
            self.db.execute("UPDATE topup_attempts SET status = ?, reason = ?, finished = ? WHERE id = ?",
                            (status, reason, now, aid))
            self.db.execute("UPDATE topup_triggers SET status = ?, reason = ? WHERE attempt = ? AND status = 'inflight'",
                            (status, reason, aid))
        self.log("topup: account %d order %s: %s" % (account, order_id, reason))
        return 1
