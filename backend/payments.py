"""A simulated payment provider: the acquirer that charges the portal's stored payment cards.

Owns the provider's own records (SQLite, apart from the ledger: it is another party):
stored cards (reference -> expiry month, money available) and every order it answered.
A charge ends one of five ways, the ones the portal guide names:

- APPROVED   the money is taken;
- DECLINED   not enough money on the payment card (manglende dækning);
- EXPIRED    the card's expiry month has passed (gamle kreditkort oplysninger);
- IDENTICAL  the same amount on the same card was approved less than `identical_window_s`
             ago ("Identisk Transaktion": the guide says wait 10-15 minutes, so 15 by default);
- UNKNOWN    no stored card under that reference.

Orders are idempotent by `order_id`: asking again with an order id the provider has seen
returns the first answer and charges nothing, which is what lets a restarted top-up
processor find out what happened to a charge it sent before it died.
"""
import sqlite3
import threading
import time

APPROVED = "approved"
DECLINED = "declined"
EXPIRED = "expired"
IDENTICAL = "identical"
UNKNOWN = "unknown_card"

IDENTICAL_WINDOW_S = 15 * 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cards (
    ref TEXT PRIMARY KEY,
    expiry TEXT NOT NULL,                 -- 'YYYY-MM': valid through the end of that month (UTC)
    funds INTEGER NOT NULL CHECK (funds >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    ref TEXT NOT NULL,
    amount INTEGER NOT NULL,
    t INTEGER NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_ref ON orders (ref, amount, t);
"""


class Charge:
    """One answer of the provider."""

    __slots__ = ("order_id", "outcome", "amount", "t")

    def __init__(self, order_id, outcome, amount, t):
        self.order_id = order_id
        self.outcome = outcome
        self.amount = amount
        self.t = t

    @property
    def ok(self):
        return self.outcome == APPROVED

    def __repr__(self):
        return "Charge(%s, %s, %d)" % (self.order_id, self.outcome, self.amount)


def _expired(expiry, now):
    """True once the UTC month after `expiry` ('YYYY-MM') has begun."""
    y, m = int(expiry[:4]), int(expiry[5:7])
    first_after = (y + m // 12, m % 12 + 1)
    tm = time.gmtime(now)
    return (tm.tm_year, tm.tm_mon) >= first_after


class PaymentProvider:
    def __init__(self, path=":memory:", identical_window_s=IDENTICAL_WINDOW_S, clock=time.time):
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        self.db.executescript(_SCHEMA)
        self.identical_window_s = identical_window_s
        self.clock = clock
        self._lock = threading.Lock()

    def close(self):
        self.db.close()

    def add_card(self, ref, expiry, funds):
        """Store a payment card: `expiry` 'YYYY-MM', `funds` øre available on it."""
        if not (isinstance(expiry, str) and len(expiry) == 7 and expiry[4] == "-" and expiry[:4].isdigit()
                and expiry[5:].isdigit() and 1 <= int(expiry[5:]) <= 12):
            raise ValueError("expiry must be YYYY-MM, not %r" % (expiry,))
        if type(funds) is not int or funds < 0:
            raise ValueError("funds must be non-negative øre")
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO cards VALUES (?, ?, ?)", (ref, expiry, funds))

    def funds(self, ref):
        row = self.db.execute("SELECT funds FROM cards WHERE ref = ?", (ref,)).fetchone()
        return None if row is None else row[0]

    def orders(self, ref=None):
        """(order_id, ref, amount, t, outcome) in the order answered."""
        q = "SELECT order_id, ref, amount, t, outcome FROM orders"
        if ref is None:
            return self.db.execute(q + " ORDER BY rowid").fetchall()
        return self.db.execute(q + " WHERE ref = ? ORDER BY rowid", (ref,)).fetchall()

    def charge(self, ref, amount, order_id):
        """Charge `amount` øre to stored card `ref` under `order_id`; returns a Charge."""
        if type(amount) is not int or amount <= 0:
            raise ValueError("amount must be positive øre")
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                seen = db.execute("SELECT amount, t, outcome FROM orders WHERE order_id = ?", (order_id,)).fetchone()
                if seen is not None:
                    db.execute("COMMIT")
                    return Charge(order_id, seen[2], seen[0], seen[1])
                now = int(self.clock())
                outcome = self._decide(ref, amount, now)
                if outcome == APPROVED:
                    db.execute("UPDATE cards SET funds = funds - ? WHERE ref = ?", (amount, ref))
                db.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", (order_id, ref, amount, now, outcome))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return Charge(order_id, outcome, amount, now)

    def _decide(self, ref, amount, now):
        card = self.db.execute("SELECT expiry, funds FROM cards WHERE ref = ?", (ref,)).fetchone()
        if card is None:
            return UNKNOWN
        expiry, funds = card
        if _expired(expiry, now):
            return EXPIRED
        if self.db.execute("SELECT 1 FROM orders WHERE ref = ? AND amount = ? AND outcome = ? AND t > ?",
                           (ref, amount, APPROVED, now - self.identical_window_s)).fetchone():
            return IDENTICAL
        if funds < amount:
            return DECLINED
        return APPROVED
