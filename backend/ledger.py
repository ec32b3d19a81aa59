"""The reference backend's ledger: the card system's state in SQLite (stdlib sqlite3).

Owns the schema (accounts, cards, allowed places, limits, top-up enrolments, terminals,
received journal records, records that conflict with them, the ledger, top-up triggers,
rejected batches, the terminals' latest health reports), applying one
uplink batch in one transaction with exactly-once effect, the per-terminal watermark,
and the per-card statement in the portal guide's shape. Portal actions (top up, block,
replace, ...) are methods here so that issue 8 can extend the same object.

Exactly once: every journal record lands in `uplink` under PRIMARY KEY (terminal, seq)
and every approved purchase in `ledger` under UNIQUE (terminal, seq); a repeated or
reordered batch inserts nothing twice. A record is a duplicate only if it is identical to
the one stored under its (terminal, seq); a different record under a seq already taken (the
terminal's journal was wiped or replaced and its seqs restarted at 1) is a conflict: it is
kept in `uplink_conflicts`, booked nowhere, and listed for staff (`conflicts()`). The
watermark is the highest seq W such that every batch range covering 1..W has been applied
(docs/protocol.md).

Reversals (a failed vend, a till's void: records with `reverses`) land in `reversals` and
are booked as one `deposited` ledger row under their own (terminal, seq) once the purchase
they name is here, in whichever order the two arrive; a partial unique index books at most
one reversal per purchase, and one that does not match its purchase books nothing and is
kept `refused` for staff (`reversals()`). The statement shows it as `Indsat`, "Tilbageført: <item>".
"""
import json
import sqlite3
import time

from backend import trust
from cpos.net import messages
from cpos.localtime import format_local
from cpos.money import format_kr

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    name TEXT,
    balance INTEGER NOT NULL DEFAULT 0,          -- øre
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed'))
);
CREATE TABLE IF NOT EXISTS cards (
    uid TEXT PRIMARY KEY,                         -- hex, lower case, 4/7/10 bytes
    number TEXT NOT NULL UNIQUE,                  -- printed card number, case-sensitive
    account INTEGER NOT NULL REFERENCES accounts(id),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked', 'replaced')),
    issued INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS places (               -- kinds of unit where an account may buy
    account INTEGER NOT NULL REFERENCES accounts(id),
    place INTEGER NOT NULL CHECK (place IN (0, 1)),  -- 0 school, 1 club
    PRIMARY KEY (account, place)
);
CREATE TABLE IF NOT EXISTS limits (               -- till purchases only
    account INTEGER NOT NULL REFERENCES accounts(id),
    place INTEGER NOT NULL CHECK (place IN (0, 1)),
    window INTEGER NOT NULL CHECK (window IN (0, 1, 2)),  -- day, ISO week, month
    amount INTEGER NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (account, place, window)
);
CREATE TABLE IF NOT EXISTS enrolments (           -- automatic top-up
    account INTEGER PRIMARY KEY REFERENCES accounts(id),
    amount_kr INTEGER NOT NULL CHECK (amount_kr > 0),
    payment_ref TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'cancelled')),
    since INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS terminals (
    number INTEGER PRIMARY KEY,
    tid TEXT NOT NULL UNIQUE,
    site TEXT NOT NULL,
    place INTEGER,
    kind INTEGER,
    watermark INTEGER NOT NULL DEFAULT 0,
    online INTEGER,
    status_t INTEGER
);
CREATE TABLE IF NOT EXISTS health (               -- each terminal's latest health report (up/health)
    terminal INTEGER PRIMARY KEY,
    t INTEGER NOT NULL,                           -- the terminal's clock (UTC s)
    table_version INTEGER NOT NULL,               -- the card-table version it holds
    report TEXT NOT NULL                          -- the whole report (JSON)
);
CREATE TABLE IF NOT EXISTS ranges (               -- applied batch ranges above the watermark
    terminal INTEGER NOT NULL,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    PRIMARY KEY (terminal, lo, hi)
);
CREATE TABLE IF NOT EXISTS uplink (               -- every journal record as received
    terminal INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t INTEGER NOT NULL,
    uid TEXT NOT NULL,
    account INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    place INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    item TEXT NOT NULL,
    balance_after INTEGER NOT NULL,
    reason INTEGER NOT NULL,
    topup INTEGER NOT NULL,
    received INTEGER NOT NULL,
    PRIMARY KEY (terminal, seq)
);
-- an account's purchases by time: the window totals of every TOTALS delta and snapshot record
CREATE INDEX IF NOT EXISTS uplink_account ON uplink (account, t);
CREATE TABLE IF NOT EXISTS uplink_conflicts (     -- records whose (terminal, seq) holds a different record
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    terminal INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t INTEGER NOT NULL,
    uid TEXT NOT NULL,
    account INTEGER NOT NULL,
    amount INTEGER NOT NULL,                      -- øre
    place INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    item TEXT NOT NULL,
    balance_after INTEGER NOT NULL,
    reason INTEGER NOT NULL,
    topup INTEGER NOT NULL,
    received INTEGER NOT NULL,                    -- when it first arrived (UTC s)
    UNIQUE (terminal, seq, t, uid, account, amount, place, kind, item, balance_after, reason, topup)
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account INTEGER NOT NULL,
    card TEXT,                                    -- uid; NULL for account-level entries
    t INTEGER NOT NULL,                           -- UTC epoch seconds
    type TEXT NOT NULL CHECK (type IN ('withdrawn', 'deposited')),
    amount INTEGER NOT NULL CHECK (amount >= 0),  -- øre
    text TEXT NOT NULL,
    terminal INTEGER,                             -- purchases: (terminal, seq) unique
    seq INTEGER,
    UNIQUE (terminal, seq)
);
CREATE INDEX IF NOT EXISTS ledger_account ON ledger (account, t, id);
CREATE TABLE IF NOT EXISTS reversals (            -- reversal records: a failed vend, a till's void
    terminal INTEGER NOT NULL,
    seq INTEGER NOT NULL,                         -- the reversal's own journal seq
    orig_seq INTEGER NOT NULL,                    -- the purchase it reverses (same terminal)
    orig_t INTEGER NOT NULL,                      -- that purchase's time, as the terminal states it
    cause TEXT NOT NULL,                          -- vend_failure, void
    status TEXT NOT NULL CHECK (status IN ('waiting', 'booked', 'refused')),
    why TEXT,                                     -- refused: why it books no money
    PRIMARY KEY (terminal, seq)
);
-- A purchase is given back at most once, whatever a terminal sends.
CREATE UNIQUE INDEX IF NOT EXISTS one_reversal_per_purchase ON reversals (terminal, orig_seq) WHERE status = 'booked';
CREATE TABLE IF NOT EXISTS topup_triggers (       -- issue 8 acts on them
    terminal INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    account INTEGER NOT NULL,
    t INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',       -- pending, inflight, done, failed, skipped
    reason TEXT,                                  -- why failed / skipped / done (backend/topup.py)
    attempt INTEGER,                              -- topup_attempts.id that answered it
    PRIMARY KEY (terminal, seq)
);
CREATE TABLE IF NOT EXISTS topup_attempts (       -- charges of a stored payment card
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account INTEGER NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),   -- øre
    payment_ref TEXT NOT NULL,
    order_id TEXT UNIQUE,                         -- the provider's idempotency key
    status TEXT NOT NULL CHECK (status IN ('inflight', 'done', 'failed')),
    reason TEXT,
    started INTEGER NOT NULL,
    finished INTEGER
);
-- At most one attempt per account in flight, whoever and however many processors run.
CREATE UNIQUE INDEX IF NOT EXISTS one_inflight_topup ON topup_attempts (account) WHERE status = 'inflight';
CREATE TABLE IF NOT EXISTS changes (              -- what the downlink must tell terminals, in order
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,                           -- cpos.cards.delta.NAMES: balance, block, unblock,
                                                  -- new_card, replace, limits, places, enrol, totals
    account INTEGER,
    uid TEXT,                                     -- block/unblock/new_card: the card; replace: the old card
    uid2 TEXT,                                    -- replace: the new card (NULL: none issued yet)
    t INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tid TEXT,
    received INTEGER NOT NULL,
    error TEXT NOT NULL,
    payload BLOB
);
"""

TYPE_TEXT = {"withdrawn": "Hævet", "deposited": "Indsat"}
REVERSAL_TEXT = "Tilbageført: "  # a reversal's statement line: this, then the purchase's item text


# The fields of a journal record as stored in `uplink` and `uplink_conflicts`, in column order.
RECORD_FIELDS = ("t", "uid", "account", "amount", "place", "kind", "item", "balance_after", "reason", "topup")


def _stored(r):
    """A decoded record's fields as the database holds them (RECORD_FIELDS order)."""
    return (r["t"], r["uid"].lower(), r["account"], r["amount"], r["place"], r["kind"], r["item"],
            r["balance_after"], r["reason"], int(r["topup"]))


class BatchRefused(messages.ProtocolError):
    """A well-formed batch the backend will not apply (backend.trust): nothing changed."""


class Applied:
    """What apply_batch did: the new watermark and counts.

    `conflicts` counts the records newly kept in `uplink_conflicts` (their seq held a
    different record), `conflict_seqs` lists their seqs; a resent conflict already kept
    counts as a duplicate."""

    __slots__ = ("watermark", "new_records", "duplicates", "purchases", "triggers", "conflicts", "conflict_seqs",
                 "refused", "reversals")

    def __init__(self, watermark, new_records, duplicates, purchases, triggers=0, conflict_seqs=(), refused=(),
                 reversals=0):
        self.watermark = watermark
        self.new_records = new_records
        self.duplicates = duplicates
        self.purchases = purchases
        self.triggers = triggers  # new automatic top-up triggers
        self.conflict_seqs = list(conflict_seqs)
        self.conflicts = len(self.conflict_seqs)
        self.refused = list(refused)  # (seq, why) of records the checks refused (backend.trust)
        self.reversals = reversals  # reversals booked by this batch (theirs, or waiting ones its purchases settled)

    def __repr__(self):
        return "Applied(w=%d, new=%d, dup=%d, purchases=%d, conflicts=%d)" % (
            self.watermark, self.new_records, self.duplicates, self.purchases, self.conflicts)


class Ledger:
    def __init__(self, path, synchronous="FULL", clock=time.time, checks=None):
        self.path = path
        self.clock = clock  # UTC seconds for the rows this process stamps (a simulator's scenario clock)
        self.checks = checks or trust.RecordChecks()  # what a record must pass to be booked
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=%s" % synchronous)
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self.db.executescript(trust.SCHEMA)

    def close(self):
        self.db.close()

    def _tx(self):
        return _Tx(self.db)

    def _changed(self, kind, account=None, uid=None, uid2=None):
        """Note, inside the caller's transaction, something terminals must learn (the
        downlink publisher reads `changes` in id order and turns rows into deltas)."""
        self.db.execute("INSERT INTO changes (kind, account, uid, uid2, t) VALUES (?, ?, ?, ?, ?)",
                        (kind, account, uid, uid2, int(self.clock())))

    def changes_since(self, after_id, limit=1000):
        """(id, kind, account, uid, uid2, t) rows with id > after_id, oldest first."""
        return self.db.execute("SELECT id, kind, account, uid, uid2, t FROM changes WHERE id > ? ORDER BY id LIMIT ?",
                               (after_id, limit)).fetchall()

    # --- portal / administration -------------------------------------------------------

    def add_account(self, name, balance=0, account_id=None, t=None):
        with self._tx():
            cur = self.db.execute("INSERT INTO accounts (id, name, balance) VALUES (?, ?, 0)", (account_id, name))
            aid = cur.lastrowid
        if balance:
            self.deposit(aid, balance, t=t, text="Opening balance")
        return aid

    def add_card(self, uid, number, account, status="active", issued=0):
        with self._tx():
            self.db.execute("INSERT INTO cards (uid, number, account, status, issued) VALUES (?, ?, ?, ?, ?)",
                            (uid.lower(), number, account, status, issued))
            self._changed("new_card", account, uid.lower())

    def set_card_status(self, number, status):
        with self._tx():
            cur = self.db.execute("UPDATE cards SET status = ? WHERE number = ?", (status, number))
            if cur.rowcount != 1:
                raise KeyError(number)
            uid, account = self.db.execute("SELECT uid, account FROM cards WHERE number = ?", (number,)).fetchone()
            self._changed({"blocked": "block", "active": "unblock", "replaced": "replace"}[status], account, uid)

    def allow_place(self, account, place, allowed=True):
        with self._tx():
            if allowed:
                self.db.execute("INSERT OR IGNORE INTO places VALUES (?, ?)", (account, place))
            else:
                self.db.execute("DELETE FROM places WHERE account = ? AND place = ?", (account, place))
            self._changed("places", account)

    def set_limit(self, account, place, window, amount):
        with self._tx():
            self._set_limit(account, place, window, amount)

    def _set_limit(self, account, place, window, amount):
        """Inside the caller's transaction: the limit set (None: removed), and the changes
        terminals must learn noted."""
        if amount is None:
            self.db.execute("DELETE FROM limits WHERE account = ? AND place = ? AND window = ?",
                            (account, place, window))
        else:
            self.db.execute("INSERT OR REPLACE INTO limits VALUES (?, ?, ?, ?)", (account, place, window, amount))
        self._changed("limits", account)
        self._changed("totals", account)  # a first limit needs the totals it counts against

    def enrol_topup(self, account, amount_kr, payment_ref, since=0):
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO enrolments VALUES (?, ?, ?, 'active', ?)",
                            (account, amount_kr, payment_ref, since))
            self._changed("enrol", account)

    def cancel_enrolment(self, account):
        with self._tx():
            self.db.execute("UPDATE enrolments SET status = 'cancelled' WHERE account = ?", (account,))
            self._changed("enrol", account)

    def add_terminal(self, number, site, place, kind):
        with self._tx():
            self.db.execute(
                "INSERT INTO terminals (number, tid, site, place, kind) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (number) DO UPDATE SET site = excluded.site, place = excluded.place, kind = excluded.kind",
                (number, messages.terminal_id(number), site, place, kind))

    def deposit(self, account, amount, t=None, text="Indbetaling", card=None):
        """Money in (top-up, transfer in): one ledger row, balance up."""
        if amount <= 0:
            raise ValueError("amount")
        t = int(self.clock()) if t is None else t
        with self._tx():
            self._book(account, "deposited", amount, t, text, card)

    def _book(self, account, type_, amount, t, text, card=None):
        """Inside the caller's transaction: one account-level ledger row (money in or out,
        not a terminal's purchase), the balance moved, and a `balance` change noted."""
        if type(amount) is not int or amount <= 0:
            raise ValueError("amount")
        sign = 1 if type_ == "deposited" else -1
        cur = self.db.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (sign * amount, account))
        if cur.rowcount != 1:
            raise KeyError(account)
        self.db.execute("INSERT INTO ledger (account, card, t, type, amount, text) VALUES (?, ?, ?, ?, ?, ?)",
                        (account, card, t, type_, amount, text))
        self._changed("balance", account)

    # --- uplink -------------------------------------------------------------------------

    def reject(self, tid, error, payload):
        with self._tx():
            self.db.execute("INSERT INTO rejected (tid, received, error, payload) VALUES (?, ?, ?, ?)",
                            (tid, int(self.clock()), error, bytes(payload[:65536])))

    def apply_batch(self, site, tid, payload):
        """Apply one batch message from terminal `tid` in one transaction; return Applied.

        Raises messages.ProtocolError (nothing changed) for a malformed batch or records that
        name another terminal, and BatchRefused (a ProtocolError) for a batch that would move
        the watermark further than the terminal's journal could hold (backend.trust); the
        caller records it with reject() and does not ack it.

        A new record that would book money or raise a top-up trigger must pass the record
        checks (backend.trust.RecordChecks: known account, the card the account's, amount,
        time, format range, the terminal's place and kind). A refused one is booked nowhere,
        kept in `refused_records` for staff (`refused()`), listed in the result's `refused`,
        and the batch is acknowledged as usual: the terminal cannot send it any better.

        A record whose (terminal, seq) already holds a different record is a conflict: it is
        kept in `uplink_conflicts` (once, however often it is resent), books no money and
        raises no top-up trigger, and is counted in the result's `conflicts`. The batch still
        counts as applied for the watermark, so the caller acknowledges it: the record is
        durably stored for staff to settle (`conflicts()`), and withholding the ack would
        wedge the terminal, whose every resend would conflict again.
        """
        number = messages.terminal_number(tid)
        lo, hi, recs = messages.decode_batch(payload)
        checks = self.checks
        for r in recs:
            if r["terminal"] != number:
                raise messages.ProtocolError("record of terminal %d in %s's batch" % (r["terminal"], tid))
        now = int(self.clock())
        db = self.db
        new = dup = purchases = triggers = reversals = 0
        conflicts = []
        refused = []
        touched = set()
        with self._tx():
            row = db.execute("SELECT watermark, place, kind FROM terminals WHERE number = ?", (number,)).fetchone()
            if row is None:
                db.execute("INSERT INTO terminals (number, tid, site) VALUES (?, ?, ?)", (number, tid, site))
                w, term = 0, None
            else:
                w, term = row[0], row[1:]
            why = checks.batch_refusal(w, lo, hi)
            if why is not None:
                raise BatchRefused(why)
            w0 = w
            for r in recs:
                fields = _stored(r)
                if not db.execute("SELECT 1 FROM uplink WHERE terminal = ? AND seq = ?", (number, r["seq"])).fetchone():
                    why = checks.refusal(db, term, r, now)
                    if why is not None:  # booked nowhere; kept for staff, acknowledged
                        if checks.keep(db, number, r["seq"], why, json.dumps(r, sort_keys=True), now):
                            refused.append((r["seq"], why))
                        else:
                            dup += 1
                        continue
                cur = db.execute("INSERT OR IGNORE INTO uplink VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 (number, r["seq"]) + fields + (now,))
                if cur.rowcount == 0:
                    held = db.execute("SELECT %s FROM uplink WHERE terminal = ? AND seq = ?" % ", ".join(RECORD_FIELDS),
                                      (number, r["seq"])).fetchone()
                    if tuple(held) == fields and self._same_reversal(number, r):
                        dup += 1  # the same record again: at-least-once delivery
                    elif db.execute("INSERT OR IGNORE INTO uplink_conflicts (terminal, seq, %s, received) "
                                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" % ", ".join(RECORD_FIELDS),
                                    (number, r["seq"]) + fields + (now,)).rowcount:
                        conflicts.append(r["seq"])  # another record under a seq already taken
                    else:
                        dup += 1  # a conflict already kept, resent
                    continue
                new += 1
                if "reverses" in r:  # a reversal: booked once its purchase is here (any arrival order)
                    db.execute("INSERT INTO reversals (terminal, seq, orig_seq, orig_t, cause, status) "
                               "VALUES (?, ?, ?, ?, ?, 'waiting')",
                               (number, r["seq"], r["reverses"], r["orig_t"], r["cause"]))
                    reversals += self._settle_reversal(number, r["seq"], touched)
                    continue
                if r["topup"]:
                    triggers += db.execute(
                        "INSERT OR IGNORE INTO topup_triggers (terminal, seq, account, t) VALUES (?, ?, ?, ?)",
                        (number, r["seq"], r["account"], r["t"])).rowcount
                if r["reason"] != 0:
                    reversals += self._settle_waiting(number, r["seq"], touched)  # refuses any waiting for it
                    continue
                # An approved purchase that passed the checks (backend.trust): the terminal
                # decided offline, so it is booked whatever the balance is now.
                # Made while the terminal's time was unknown (docs/time.md): its `t` is only a
                # lower bound, so it is booked at its arrival, never before that bound: a window
                # it lands in is the true one or a later one, never an earlier one.
                booked = max(r["t"], now) if r.get("time_unknown") else r["t"]
                db.execute("INSERT INTO ledger (account, card, t, type, amount, text, terminal, seq) "
                           "VALUES (?, ?, ?, 'withdrawn', ?, ?, ?, ?)",
                           (r["account"], r["uid"].lower(), booked, r["amount"], r["item"], number, r["seq"]))
                db.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (r["amount"], r["account"]))
                purchases += 1
                touched.add(r["account"])
                reversals += self._settle_waiting(number, r["seq"], touched)
            if lo <= w + 1:
                w = max(w, hi)
                while True:
                    more = db.execute("SELECT max(hi) FROM ranges WHERE terminal = ? AND lo <= ?",
                                      (number, w + 1)).fetchone()[0]
                    db.execute("DELETE FROM ranges WHERE terminal = ? AND lo <= ?", (number, w + 1))
                    if more is None or more <= w:
                        break
                    w = more
            elif hi > w:
                db.execute("INSERT OR IGNORE INTO ranges VALUES (?, ?, ?)", (number, lo, hi))
            db.execute("UPDATE terminals SET watermark = ? WHERE number = ?", (w, number))
            # Purchases booked earlier, above the old watermark (a later batch that came
            # first), stop being this terminal's own in-flight ones now: their accounts'
            # balances and totals as this terminal sees them change too.
            touched.update(a for (a,) in db.execute(
                "SELECT DISTINCT account FROM ledger WHERE terminal = ? AND seq > ? AND seq <= ?",
                (number, w0, w)))
            for account in sorted(touched):
                self._changed("balance", account)
                self._changed("totals", account)  # window totals for the limits at other tills
        return Applied(w, new, dup, purchases, triggers, conflicts, refused, reversals)

    def _same_reversal(self, number, r):
        """For a record whose uplink fields match the one held under its seq: True unless one
        of the two is a reversal and the other is not, or they reverse different purchases."""
        row = self.db.execute("SELECT orig_seq, orig_t, cause FROM reversals WHERE terminal = ? AND seq = ?",
                              (number, r["seq"])).fetchone()
        if "reverses" not in r:
            return row is None
        return row is not None and tuple(row) == (r["reverses"], r["orig_t"], r["cause"])

    def _settle_waiting(self, number, orig_seq, touched):
        """Inside apply_batch's transaction, purchase `orig_seq` of terminal `number` has just
        arrived: settle the reversals that waited for it. Returns how many were booked."""
        n = 0
        for (seq,) in self.db.execute("SELECT seq FROM reversals WHERE terminal = ? AND orig_seq = ? "
                                      "AND status = 'waiting' ORDER BY seq", (number, orig_seq)).fetchall():
            n += self._settle_reversal(number, seq, touched)
        return n

    def _settle_reversal(self, number, seq, touched):
        """Inside apply_batch's transaction: book reversal `seq` of terminal `number` if its
        purchase is here, is an approved purchase of that terminal with the same account, card,
        amount and time, and is not reversed already: one `deposited` ledger row under the
        reversal's (terminal, seq), the balance back. Otherwise it stays `waiting` (the purchase
        has not arrived) or is `refused` with the reason (kept for staff, `reversals()`).
        Returns 1 when it booked."""
        db = self.db
        orig_seq, orig_t = db.execute("SELECT orig_seq, orig_t FROM reversals WHERE terminal = ? AND seq = ?",
                                      (number, seq)).fetchone()
        orig = db.execute("SELECT t, uid, account, amount, item, reason FROM uplink WHERE terminal = ? AND seq = ?",
                          (number, orig_seq)).fetchone()
        if orig is None:
            return 0  # the purchase is in a batch still on its way
        rev = db.execute("SELECT t, uid, account, amount FROM uplink WHERE terminal = ? AND seq = ?",
                         (number, seq)).fetchone()
        why = None
        if db.execute("SELECT 1 FROM reversals WHERE terminal = ? AND seq = ?", (number, orig_seq)).fetchone():
            why = "reverses a reversal"
        elif orig[5] != 0:
            why = "reverses a refusal"
        elif (orig[0], orig[1], orig[2], orig[3]) != (orig_t, rev[1], rev[2], rev[3]):
            why = "does not match purchase %d" % orig_seq
        else:
            other = db.execute("SELECT seq FROM reversals WHERE terminal = ? AND orig_seq = ? AND status = 'booked'",
                               (number, orig_seq)).fetchone()
            if other is not None:
                why = "purchase %d already reversed by %d" % (orig_seq, other[0])
        if why is not None:
            db.execute("UPDATE reversals SET status = 'refused', why = ? WHERE terminal = ? AND seq = ?",
                       (why, number, seq))
            return 0
        db.execute("INSERT INTO ledger (account, card, t, type, amount, text, terminal, seq) "
                   "VALUES (?, ?, ?, 'deposited', ?, ?, ?, ?)",
                   (rev[2], rev[1], rev[0], rev[3], REVERSAL_TEXT + orig[4], number, seq))
        db.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (rev[3], rev[2]))
        db.execute("UPDATE reversals SET status = 'booked' WHERE terminal = ? AND seq = ?", (number, seq))
        touched.add(rev[2])
        return 1

    def set_status(self, tid, online, t):
        number = messages.terminal_number(tid)
        with self._tx():
            self.db.execute("UPDATE terminals SET online = ?, status_t = ? WHERE number = ?", (int(online), t, number))

    def set_health(self, tid, report):
        """Keep a terminal's latest health report (a dict decoded by messages.decode_health)."""
        number = messages.terminal_number(tid)
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO health (terminal, t, table_version, report) VALUES (?, ?, ?, ?)",
                            (number, report["t"], report["table_version"], json.dumps(report, sort_keys=True)))

    # --- reading ------------------------------------------------------------------------

    def health(self, number):
        """(t, table_version, report dict) of the terminal's latest health report, or None."""
        row = self.db.execute("SELECT t, table_version, report FROM health WHERE terminal = ?", (number,)).fetchone()
        return None if row is None else (row[0], row[1], json.loads(row[2]))

    def watermark(self, number):
        row = self.db.execute("SELECT watermark FROM terminals WHERE number = ?", (number,)).fetchone()
        return row[0] if row else 0

    def terminals(self):
        return self.db.execute("SELECT number, tid, site, watermark FROM terminals ORDER BY number").fetchall()

    def balance(self, account):
        row = self.db.execute("SELECT balance FROM accounts WHERE id = ?", (account,)).fetchone()
        return None if row is None else row[0]

    def purchase_seqs(self, terminal):
        return [r[0] for r in self.db.execute(
            "SELECT seq FROM ledger WHERE terminal = ? AND type = 'withdrawn' ORDER BY seq", (terminal,))]

    def reversals(self, terminal=None):
        """Reversal records received: dicts with terminal, seq, orig_seq, orig_t, cause, status
        (waiting: its purchase has not arrived; booked; refused, with `why`), by terminal and seq."""
        q = "SELECT terminal, seq, orig_seq, orig_t, cause, status, why FROM reversals"
        args = ()
        if terminal is not None:
            q += " WHERE terminal = ?"
            args = (terminal,)
        keys = ("terminal", "seq", "orig_seq", "orig_t", "cause", "status", "why")
        return [dict(zip(keys, row)) for row in self.db.execute(q + " ORDER BY terminal, seq", args)]

    def received_seqs(self, terminal):
        return [r[0] for r in self.db.execute("SELECT seq FROM uplink WHERE terminal = ? ORDER BY seq", (terminal,))]

    def conflicts(self, terminal=None):
        """Records kept in `uplink_conflicts`, oldest first: dicts with `id`, `terminal`,
        `seq`, `received` and the record's fields (RECORD_FIELDS, `topup` a bool), and under
        `stored` the fields of the different record that holds that (terminal, seq) in `uplink`."""
        cols = ", ".join("c." + f for f in RECORD_FIELDS)
        held = ", ".join("u." + f for f in RECORD_FIELDS)
        q = ("SELECT c.id, c.terminal, c.seq, c.received, %s, %s FROM uplink_conflicts c "
             "LEFT JOIN uplink u ON u.terminal = c.terminal AND u.seq = c.seq" % (cols, held))
        args = ()
        if terminal is not None:
            q += " WHERE c.terminal = ?"
            args = (terminal,)
        out = []
        n = len(RECORD_FIELDS)
        for row in self.db.execute(q + " ORDER BY c.id", args):
            d = {"id": row[0], "terminal": row[1], "seq": row[2], "received": row[3]}
            d.update(zip(RECORD_FIELDS, row[4:4 + n]))
            d["topup"] = bool(d["topup"])
            stored = dict(zip(RECORD_FIELDS, row[4 + n:]))
            stored["topup"] = bool(stored["topup"])
            d["stored"] = stored
            out.append(d)
        return out

    def refused(self, terminal=None):
        """Records the checks refused, oldest first: dicts with `terminal`, `seq`, `why`,
        `received` and `record` (as received); and {terminal: dropped} over the cap."""
        q = "SELECT terminal, seq, why, received, record FROM refused_records"
        args = ()
        if terminal is not None:
            q += " WHERE terminal = ?"
            args = (terminal,)
        rows = [{"terminal": r[0], "seq": r[1], "why": r[2], "received": r[3], "record": json.loads(r[4])}
                for r in self.db.execute(q + " ORDER BY received, terminal, seq", args)]
        dropped = dict(self.db.execute("SELECT terminal, dropped FROM refused_overflow"))
        return rows, dropped

    def topup_triggers(self, terminal=None):
        q = "SELECT terminal, seq, account, t, status FROM topup_triggers"
        if terminal is None:
            return self.db.execute(q + " ORDER BY terminal, seq").fetchall()
        return self.db.execute(q + " WHERE terminal = ? ORDER BY seq", (terminal,)).fetchall()

    def statement(self, card_number, start=None, end=None):
        """Lines of the card's statement (kontoudtog), newest first as in the portal:
        dicts with `time` (Copenhagen, `YYYY-MM-DD HH:MM:SS`), `type` (Hævet/Indsat),
        `amount` and `balance` (øre), `text`. The running balance is the account's
        balance after the line, in time order, over all of the account's entries."""
        row = self.db.execute("SELECT uid, account FROM cards WHERE number = ?", (card_number,)).fetchone()
        if row is None:
            raise KeyError(card_number)
        uid, account = row
        rows = self.db.execute(
            "SELECT t, type, amount, text, card FROM ledger WHERE account = ? ORDER BY t, id", (account,)).fetchall()
        bal = self.balance(account) - sum(a if ty == "deposited" else -a for _, ty, a, _, _ in rows)
        lines = []
        for t, ty, amount, text, card in rows:
            bal += amount if ty == "deposited" else -amount
            if card not in (None, uid):
                continue
            if (start is not None and t < start) or (end is not None and t >= end):
                continue
            lines.append({"t": t, "time": format_local(t), "type": TYPE_TEXT[ty], "amount": amount,
                          "balance": bal, "text": text})
        lines.reverse()
        return lines


def format_statement(card_number, lines):
    """The statement as text, like the portal's report."""
    out = ["Kontoudtog", "Kantinekort %s" % card_number, "%-19s  %-6s  %12s  %12s  %s" % ("Dato", "Type", "Beløb", "Saldo", "Tekst")]
    for ln in lines:
        out.append("%-19s  %-6s  %12s  %12s  %s" % (
            ln["time"], ln["type"], format_kr(ln["amount"]), format_kr(ln["balance"]), ln["text"]))
    return "\n".join(out)


class _Tx:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, et, ev, tb):
        if et is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
        return False
