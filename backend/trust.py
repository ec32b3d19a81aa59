"""What the backend checks before it believes a terminal (docs/security.md, "The backend").

Owns three guards, each small enough to read at once:

- `RecordChecks`: every new journal record that would move money or start a top-up is
  checked against the ledger before it is booked: the account exists, the card belongs
  to it, the amount is above 0 and below a cap, the time lies within a window around the
  server's time, the balances stay inside the record format's range, and the place and
  kind are the terminal's own. A refused record books nothing; it is kept for staff in
  `refused_records` (capped per terminal, the overflow counted) and logged.
- `RecordChecks.batch_refusal`: a batch may not move a terminal's watermark further than
  that terminal's journal could ever hold past it.
- `RateLimit`: per-terminal token buckets for the messages that cost the backend work but
  carry no money (sync requests, health reports), so one terminal's flood cannot delay
  every other terminal's acknowledgements.

No I/O beyond the caller's SQLite connection; the clock is the caller's.
"""
from cpos.money import MAX_ORE

SCHEMA = """
CREATE TABLE IF NOT EXISTS refused_records (      -- records checked and not booked, for staff
    terminal INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    why TEXT NOT NULL,
    record TEXT NOT NULL,                         -- the record as received (JSON)
    received INTEGER NOT NULL,                    -- UTC s
    PRIMARY KEY (terminal, seq)
);
CREATE TABLE IF NOT EXISTS refused_overflow (     -- refused records not kept: over the cap
    terminal INTEGER PRIMARY KEY,
    dropped INTEGER NOT NULL
);
"""

MAX_AMOUNT = 100000  # øre: 1,000 kr, far above any canteen or vending purchase
MAX_AGE_S = 62 * 86400  # a record may be this old: a terminal offline over a long holiday
MAX_AHEAD_S = 600  # and this far ahead of the server's clock
JOURNAL_RECORDS = 4096  # slots of the shipped 256 KB journal partition (host_tools/partitions)
KEEP_REFUSED = 1000  # refused records kept per terminal; beyond, only counted


class RecordChecks:
    """The checks on one terminal's records; the limits are settings of the site.
    `max_age_s=None`: no lower bound on a record's time (`cpos rescue` of an old journal)."""

    def __init__(self, max_amount=MAX_AMOUNT, max_age_s=MAX_AGE_S, max_ahead_s=MAX_AHEAD_S,
                 journal_records=JOURNAL_RECORDS, keep_refused=KEEP_REFUSED):
        self.max_amount = max_amount
        self.max_age_s = max_age_s
        self.max_ahead_s = max_ahead_s
        self.journal_records = journal_records
        self.keep_refused = keep_refused

    def batch_refusal(self, watermark, lo, hi):
        """Why a batch covering lo..hi may not be applied at `watermark`, or None."""
        if hi > watermark + self.journal_records:
            return ("batch reaches seq %d, more than a journal of %d records past the watermark %d"
                    % (hi, self.journal_records, watermark))
        return None

    def refusal(self, db, terminal, r, now):
        """Why record `r` (decoded, of terminal row `terminal` = (place, kind) or None)
        may not be booked, or None. Only records that book money or raise a top-up
        trigger are checked: a plain refusal changes no balance."""
        if r["reason"] != 0 and not r["topup"]:
            return None
        account = r["account"]
        row = db.execute("SELECT balance FROM accounts WHERE id = ?", (account,)).fetchone()
        if row is None:
            return "unknown account %d" % account
        card = db.execute("SELECT account FROM cards WHERE uid = ?", (r["uid"].lower(),)).fetchone()
        if card is None:
            return "unknown card %s" % r["uid"].lower()
        if card[0] != account:
            return "card %s belongs to account %d, not %d" % (r["uid"].lower(), card[0], account)
        if r["amount"] <= 0:
            return "amount %d øre is not positive" % r["amount"]
        if r["amount"] > self.max_amount:
            return "amount %d øre is over the cap of %d" % (r["amount"], self.max_amount)
        too_old = self.max_age_s is not None and r["t"] < now - self.max_age_s
        if too_old or r["t"] > now + self.max_ahead_s:
            return "time %d is outside %d-%d s around the server's %d" % (
                r["t"], self.max_age_s, self.max_ahead_s, now)
        if not -MAX_ORE <= r["balance_after"] <= MAX_ORE:
            return "balance_after %d øre is outside the format" % r["balance_after"]
        if r["reason"] == 0 and row[0] - r["amount"] < -MAX_ORE:
            return "booking would take account %d below the format's range" % account
        if terminal is not None:
            place, kind = terminal
            if place is not None and r["place"] != place:
                return "place %d is not the terminal's %d" % (r["place"], place)
            if kind is not None and r["kind"] != kind:
                return "kind %d is not the terminal's %d" % (r["kind"], kind)
        return None

    def keep(self, db, number, seq, why, record_json, now):
        """Keep a refused record for staff (inside the caller's transaction). True if it is
        new; a resent refused record is a duplicate. Over the cap it is only counted."""
        if db.execute("SELECT 1 FROM refused_records WHERE terminal = ? AND seq = ?", (number, seq)).fetchone():
            return False
        kept = db.execute("SELECT count(*) FROM refused_records WHERE terminal = ?", (number,)).fetchone()[0]
        if kept >= self.keep_refused:
            db.execute("INSERT INTO refused_overflow VALUES (?, 1) "
                       "ON CONFLICT (terminal) DO UPDATE SET dropped = dropped + 1", (number,))
            return True
        db.execute("INSERT INTO refused_records VALUES (?, ?, ?, ?, ?)", (number, seq, why, record_json, now))
        return True


def is_refused(db, number, seq):
    """True if (terminal, seq) was refused before (kept)."""
    return db.execute("SELECT 1 FROM refused_records WHERE terminal = ? AND seq = ?", (number, seq)).fetchone() \
        is not None


class RateLimit:
    """Token buckets, one per key: `burst` messages at once, then `per_s` a second.

    `allow(key)` is True when the message may be handled; a refused one is counted in
    `dropped[key]`. Time comes from `clock` (UTC seconds, float), so a test can freeze it."""

    def __init__(self, burst, per_s, clock):
        self.burst = burst
        self.per_s = per_s
        self.clock = clock
        self._tokens = {}  # key -> (tokens, at)
        self.dropped = {}

    def allow(self, key):
        now = self.clock()
        tokens, at = self._tokens.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.per_s)
        if tokens >= 1:
            self._tokens[key] = (tokens - 1, now)
            return True
        self._tokens[key] = (tokens, now)
        self.dropped[key] = self.dropped.get(key, 0) + 1
        return False
