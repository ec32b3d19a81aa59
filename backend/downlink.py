"""The backend's downlink: the ledger's changes as per-terminal, versioned, signed messages.

Owns one stream per terminal (docs/protocol.md "Downlink"): the card-table version the
terminal should hold, which `changes` rows are already in its stream, and every message
sent on it (kept, so a terminal that missed some gets the same bytes again, and a
restarted backend continues the same versions). Deltas describe the ledger's state
at the moment they are made and carry the terminal's own watermark as `included_seq`:
the balance in a delta is the account's balance minus this terminal's purchases above
that watermark (booked, but not yet contiguous), so the terminal's
`synced balance - own purchases above included_seq` never counts one twice.

No I/O here: `pump()` and `on_request()` return (topic, payload) lists for the MQTT
service (backend.service) to publish, after the stream is committed.
"""
import struct

from cpos import localtime, rules
from cpos.cards import delta as carddelta
from cpos.cards import layout
from cpos.net import signing
from cpos.net import messages as protocol

SCHEMA = """
CREATE TABLE IF NOT EXISTS dl_streams (           -- one downlink stream per terminal
    terminal INTEGER PRIMARY KEY,
    version INTEGER NOT NULL DEFAULT 0,           -- the card-table version of the last message
    change_id INTEGER NOT NULL DEFAULT 0,         -- changes up to this id are in the stream
    included INTEGER NOT NULL DEFAULT 0,          -- the included_seq last sent
    reported INTEGER,                             -- the version the terminal last said it holds
    reported_state INTEGER,                       -- and its table state (0 empty, 1 ok, 2 broken)
    reported_t INTEGER                            -- when (UTC epoch s)
);
CREATE TABLE IF NOT EXISTS dl_sent (              -- every delta message sent; NULL payload: a snapshot
    terminal INTEGER NOT NULL,
    version INTEGER NOT NULL,                     -- the (last) delta's version
    payload BLOB,
    first INTEGER,                                -- a DELTAS message: its first delta's version
    jump_from INTEGER,                            -- a message opening with a JUMP: the version it is from
    PRIMARY KEY (terminal, version)
);
CREATE TABLE IF NOT EXISTS dl_marks (             -- where a catch-up may start: kept by age, not by count
    terminal INTEGER NOT NULL,
    version INTEGER NOT NULL,                     -- from this version on (to the next mark) a terminal's table
    change_id INTEGER NOT NULL,                   -- holds every change up to this id (at least),
    included INTEGER NOT NULL,                    -- and the deltas carry this included_seq
    t INTEGER NOT NULL,                           -- when it was made (UTC epoch s, the ledger's clock)
    PRIMARY KEY (terminal, version)
);
"""

CHUNK = signing.MAX_BODY  # one image block per message
_STATUS = {"active": rules.ACTIVE, "blocked": rules.BLOCKED, "replaced": rules.REPLACED}
_ACCOUNT_KINDS = ("balance", "limits", "places", "enrol", "totals")
_LONGEST_WINDOW = 31 * 86400  # no day, ISO week or month spans more than this
SKIP = b""  # _delta: the change tells this terminal nothing
MAX_VERSION = 0xFFF00000  # versions are u32; a stream never gets this close to wrapping
MARK_EVERY = 64  # versions between catch-up marks of a stream whose included_seq stays put
MARK_DAYS = 3  # catch-up marks kept this long: a terminal away longer gets a snapshot
_PER_CARD = 22  # image bytes per card to estimate a snapshot before any was built (docs/formats.md)
_LEAST = 20  # bytes: the shortest delta (a balance, 19 B) and its length byte in a DELTAS message
CATCH_UP_CARDS = 24  # card changes a catch-up may carry: the card overlay (32 slots with the downlink
# on, firmware/app.py) asks for a snapshot at 3/4 full and refuses at 7/8 (cpos.cards.overlay)


def provisioned(ledger, number, version=1):
    """Terminal `number` was given a table image made from the ledger as it is now, at
    `version`, outside the downlink (the simulator installs one before the first boot): its
    stream starts there, as if that snapshot had been sent, so the terminal's first sync
    request names a version the backend knows it sent."""
    db = ledger.db
    _schema(db)
    with ledger._tx():
        last = db.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0]
        db.execute("INSERT OR REPLACE INTO dl_streams (terminal, version, change_id, included) VALUES (?, ?, ?, 0)",
                   (number, version, last))
        db.execute("INSERT OR REPLACE INTO dl_sent (terminal, version) VALUES (?, ?)", (number, version))
        db.execute("DELETE FROM dl_marks WHERE terminal = ?", (number,))
        _mark(db, number, version, last, 0, int(ledger.clock()))


def _schema(db):
    db.executescript(SCHEMA)
    cols = [r[1] for r in db.execute("PRAGMA table_info(dl_sent)")]
    if "first" not in cols:
        db.execute("ALTER TABLE dl_sent ADD COLUMN first INTEGER")  # a ledger made before DELTAS
    if "jump_from" not in cols:
        db.execute("ALTER TABLE dl_sent ADD COLUMN jump_from INTEGER")  # a ledger made before catch-ups


def _mark(db, number, version, change_id, included, t):
    """From `version` on, terminal `number`'s table holds every change up to `change_id` and
    its deltas carry `included` (until the next mark); marks older than MARK_DAYS go, but
    the newest of those stays, so the mark at or below any version still kept is the true one."""
    db.execute("INSERT OR REPLACE INTO dl_marks (terminal, version, change_id, included, t) VALUES (?, ?, ?, ?, ?)",
               (number, version, change_id, included, t))
    db.execute("DELETE FROM dl_marks WHERE terminal = ? AND version < (SELECT max(version) FROM dl_marks "
               "WHERE terminal = ? AND t < ?)", (number, number, t - MARK_DAYS * 86400))


_URGENT = ("block", "unblock", "replace", "new_card")  # never held back to be coalesced


class Downlink:
    def __init__(self, ledger, keys, keep=5000, log=None, coalesce_s=0.0, monotonic=None, mark_every=MARK_EVERY):
        """`keys`: a backend.site_keys.SiteKeys, or {site: master secret bytes}; each
        terminal's messages are signed with its own derived key; terminals of other sites
        get nothing. `coalesce_s`: how long `pump` lets balance-like changes gather before
        sending (one account changed twice in that window sends one delta); a block,
        unblock, replace or new card goes at once. `keep`: messages kept per terminal for
        resending; a terminal behind them catches up from the ledger's changes since a mark
        (`mark_every` versions apart at most) or gets a snapshot, whichever is smaller."""
        from backend.site_keys import SiteKeys

        self.led = ledger
        self.db = ledger.db
        self.keys = keys if isinstance(keys, SiteKeys) else SiteKeys(keys, ledger.db)
        self.keep = keep
        self.mark_every = mark_every
        self.log = log or (lambda m: None)
        _schema(self.db)
        self.coalesce_s = coalesce_s
        if monotonic is None:
            import time

            monotonic = time.monotonic
        self.monotonic = monotonic
        self._waiting_since = None  # when pump first held changes back (monotonic s)
        self.messages = 0  # delta messages made (one DELTA or DELTAS each)
        self.snapshots = 0
        self.deltas = 0
        self.catchups = 0  # catch-ups sent (a JUMP and the deltas since a mark)
        self._per_card = None  # (image bytes, cards) of the last image built: a snapshot's size, estimated
        self.failed = {}  # terminal number -> pumps of its stream that failed
        self.refused = 0  # sync requests refused (a version this backend never sent)

    # --- ledger state as card-table data ---------------------------------------------------

    def _balance_for(self, account, number, w):
        """The account's balance without this terminal's purchases above its watermark."""
        bal = self.led.balance(account) or 0
        above = self.db.execute("SELECT coalesce(sum(CASE type WHEN 'withdrawn' THEN amount ELSE -amount END), 0) "
                                "FROM ledger WHERE account = ? AND terminal = ? AND seq > ?",
                                (account, number, w)).fetchone()[0]  # own reversals above w: counted there too
        return bal + above

    def _totals(self, account, number, w):
        """(keys, totals): what the account spent at tills in the day, week and month holding
        its newest till purchase, per kind of place, less this terminal's purchases above its
        watermark `w` (the terminal counts those itself, cpos.cards.unincluded), as the balance does,
        and less purchases given back by a booked reversal (in the purchase's own window) unless
        that reversal is this terminal's above `w` (which it counts itself too).

        Windows follow the purchases' own times, so a terminal whose clock has moved on to a
        new day, week or month sees older keys and counts them as zero (rules.Spends).
        Vending purchases are not counted: limits are about tills only (docs/rules.md)."""
        keys, totals = [0, 0, 0], [0] * (rules.PLACE_KINDS * rules.WINDOWS)
        rows = self.db.execute(
            "SELECT t, place, amount FROM uplink WHERE account = ? AND reason = 0 AND kind = ? "
            "AND NOT (terminal = ? AND seq > ?) AND NOT EXISTS (SELECT 1 FROM reversals v WHERE "
            "v.terminal = uplink.terminal AND v.orig_seq = uplink.seq AND v.status = 'booked' "
            "AND NOT (v.terminal = ? AND v.seq > ?)) "
            "AND t >= (SELECT max(t) FROM uplink WHERE account = ? "
            "AND reason = 0 AND kind = ? AND NOT (terminal = ? AND seq > ?)) - ? ORDER BY t",
            (account, rules.TILL, number, w, number, w, account, rules.TILL, number, w, _LONGEST_WINDOW)).fetchall()
        if not rows:
            return keys, totals
        newest = rows[-1][0]
        for win in range(rules.WINDOWS):
            keys[win] = localtime.window_key(newest, win)
        for t, place, amount in rows:
            for win in range(rules.WINDOWS):
                if localtime.window_key(t, win) == keys[win]:
                    totals[rules.slot(place, win)] += amount
        return keys, totals

    def _limits(self, account):
        limits = [rules.NO_LIMIT] * 6
        for p, win, amount in self.db.execute("SELECT place, window, amount FROM limits WHERE account = ?",
                                              (account,)):
            limits[rules.slot(p, win)] = amount
        return limits

    def _account(self, account, number, w):
        """The account tuple of cpos.cards.layout. Window totals only where a limit is set:
        without one they cannot change a decision, and they would cost table bytes."""
        db = self.db
        places = 0
        for (p,) in db.execute("SELECT place FROM places WHERE account = ?", (account,)):
            places |= 1 << p
        limits = self._limits(account)
        row = db.execute("SELECT amount_kr FROM enrolments WHERE account = ? AND status = 'active'",
                         (account,)).fetchone()
        kr = row[0] if row else 0
        keys, totals = (0, 0, 0), [0] * 6
        if any(v != rules.NO_LIMIT for v in limits):
            keys, totals = self._totals(account, number, w)
        return (self._balance_for(account, number, w), places, limits, kr > 0, kr, tuple(keys), totals)

    def _delta(self, version, inc, number, w, kind, account, uid, uid2):
        """The delta bytes for one change, from the state now; None when it needs a snapshot,
        SKIP when it changes nothing this terminal decides on."""
        if kind == "balance":
            return carddelta.encode(version, inc, carddelta.BALANCE, account=account,
                                    value=self._account(account, number, w)[0])
        if kind in ("block", "unblock"):
            k = carddelta.BLOCK if kind == "block" else carddelta.UNBLOCK
            return carddelta.encode(version, inc, k, uid=bytes.fromhex(uid))
        if kind == "new_card":
            return carddelta.encode(version, inc, carddelta.NEW_CARD, uid=bytes.fromhex(uid), account=account,
                                    value=self._account(account, number, w))
        if kind == "replace":
            if uid2 is None:
                return None  # a card marked replaced with no new card: no delta says that
            return carddelta.encode(version, inc, carddelta.REPLACE, uid=bytes.fromhex(uid),
                                    uid2=bytes.fromhex(uid2), account=account,
                                    value=self._account(account, number, w))
        if kind == "totals":
            if all(v == rules.NO_LIMIT for v in self._limits(account)):
                return SKIP  # no limit to count against: nothing a terminal needs to know
            return carddelta.encode(version, inc, carddelta.TOTALS, account=account,
                                    value=self._totals(account, number, w))
        a = self._account(account, number, w)
        if kind == "limits":
            return carddelta.encode(version, inc, carddelta.LIMITS, account=account, value=a[2])
        if kind == "places":
            return carddelta.encode(version, inc, carddelta.PLACES, account=account, value=a[1])
        if kind == "enrol":
            return carddelta.encode(version, inc, carddelta.ENROL, account=account, value=(a[3], a[4]))
        raise ValueError("unknown change kind %r" % kind)

    def image(self, version, number, w):
        """A snapshot image of every card for terminal `number` with watermark `w`."""
        cards, accounts = [], {}
        for uid, account, status in self.db.execute("SELECT uid, account, status FROM cards ORDER BY uid"):
            if account not in accounts:
                accounts[account] = self._account(account, number, w)
            cards.append((bytes.fromhex(uid), account, _STATUS[status]))
        img = layout.build_image(cards, accounts, version, w)
        self._per_card = (len(img), len(cards))
        return img

    def snapshot_bytes(self):
        """A snapshot's size now, estimated without building one: the last image's bytes per
        card (any terminal's; they differ in a few balances), else _PER_CARD, times the cards."""
        n = self.db.execute("SELECT count(*) FROM cards").fetchone()[0]
        if self._per_card is not None and self._per_card[1]:
            return self._per_card[0] * n // self._per_card[1]
        return layout.PAGE + _PER_CARD * n

    # --- streams ---------------------------------------------------------------------------

    def _terminal(self, number):
        row = self.db.execute("SELECT tid, site, watermark FROM terminals WHERE number = ?", (number,)).fetchone()
        return row

    def _stream(self, number):
        row = self.db.execute("SELECT version, change_id, included FROM dl_streams WHERE terminal = ?",
                              (number,)).fetchone()
        if row is None:
            self.db.execute("INSERT INTO dl_streams (terminal, version, change_id, included) VALUES (?, 0, 0, 0)",
                            (number,))
            return 0, 0, 0
        return row

    def _seal(self, site, tid, kind, version, body=b"", arg=0, index=0, total=0):
        t = protocol.topic(site, tid, protocol.SYNC_DOWN)
        return t, signing.encode(self.keys.down(site, tid), t.encode(), kind, version, body, arg, index, total)

    def _reseal(self, site, tid, topic, msg):
        """A kept message with the tag of the terminal's current key (its keys may have been
        rotated since it was first sent): the same message, byte for byte, but the tag."""
        body = msg[:len(msg) - signing.TAG]
        return body + self.keys.down(site, tid).tag(topic.encode(), body)

    def _snapshot(self, number, tid, site, w, version):
        """Messages of a snapshot at `version`; the stream jumps to it (caller's transaction)."""
        img = self.image(version, number, w)
        total = (len(img) + CHUNK - 1) // CHUNK
        out = [self._seal(site, tid, signing.CHUNK, version, img[i * CHUNK:(i + 1) * CHUNK], w, i, total)
               for i in range(total)]
        last = self.db.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0]
        self.db.execute("INSERT OR REPLACE INTO dl_sent (terminal, version) VALUES (?, ?)", (number, version))
        self.db.execute("UPDATE dl_streams SET version = ?, change_id = ?, included = ? WHERE terminal = ?",
                        (version, last, w, number))
        _mark(self.db, number, version, last, w, int(self.led.clock()))
        self.snapshots += 1
        self.log("downlink: snapshot v%d for %s: %d cards, %d chunks, included %d" % (
            version, tid, self.db.execute("SELECT count(*) FROM cards").fetchone()[0], total, w))
        return out

    def _pump_one(self, number, tid, site, w):
        version, change_id, included = self._stream(number)
        if version >= MAX_VERSION:
            raise ValueError("stream at v%d: no room for more versions" % version)
        rows = self.led.changes_since(change_id, limit=100000)
        if version == 0:
            return [], False  # no table yet: the terminal's first sync request brings a snapshot
        # Deltas describe the state now, so a change that recurs counts once, at its last place.
        last = {}
        for i, (cid, kind, account, uid, uid2, t) in enumerate(rows):
            last[(kind if kind in _ACCOUNT_KINDS else "card", account if kind in _ACCOUNT_KINDS else uid,
                  kind)] = i
        picked = sorted(last.values())
        if not picked and w > included:
            # The watermark moved with no change to tell (refused taps only): say so anyway.
            row = self.db.execute("SELECT account FROM uplink WHERE terminal = ? AND seq <= ? ORDER BY seq DESC "
                                  "LIMIT 1", (number, w)).fetchone()
            if row is not None:
                rows = rows + [(change_id, "balance", row[0], None, None, 0)]
                picked = [len(rows) - 1]
        # Every delta but the last carries the included_seq the terminal already holds; the
        # last moves it to `w`. A terminal serves taps between the deltas of a message (each
        # is its own step, cpos.net.sync): had the first carried `w`, every account still
        # waiting for its delta would forget the terminal's own purchases up to `w` meanwhile
        # and show more money than it has. This way an account already updated counts some
        # of them twice for that moment: a tap may be refused, never overdrawn.
        ds = []
        for i in picked:
            cid, kind, account, uid, uid2, t = rows[i]
            d = self._delta(version + 1, included, number, w, kind, account, uid, uid2)
            if d is None:
                return self._snapshot(number, tid, site, w, version + 1), True
            if d is SKIP:
                continue
            version += 1
            ds.append(d)
        if ds and included != w:
            ds[-1] = carddelta.with_included(ds[-1], w)
        out = self._pack(number, tid, site, version - len(ds) + 1, ds)
        if ds:
            self._mark_pump(number, version - len(ds) + 1, change_id, included if len(ds) > 1 else w)
            if len(ds) > 1:
                self._mark_pump(number, version, change_id, w)
        top = rows[-1][0] if rows else change_id
        self.db.execute("UPDATE dl_streams SET version = ?, change_id = ?, included = ? WHERE terminal = ?",
                        (version, max(top, change_id), w if out else included, number))
        self.db.execute("DELETE FROM dl_sent WHERE terminal = ? AND version <= ?", (number, version - self.keep))
        self.deltas += len(ds)
        return out, False

    def _mark_pump(self, number, first, change_id, w):
        """A pump sent versions from `first` on, made from the changes after `change_id`, with
        included_seq `w`: a mark when `w` differs from the last mark's (the included_seq at
        every version must be known exactly) or the last is `mark_every` versions back."""
        row = self.db.execute("SELECT version, included FROM dl_marks WHERE terminal = ? ORDER BY version DESC "
                              "LIMIT 1", (number,)).fetchone()
        if row is None or row[1] != w or first - row[0] >= self.mark_every:
            _mark(self.db, number, first, change_id, w, int(self.led.clock()))

    def _catch_up(self, number, tid, site, w, have):
        """Messages that bring a terminal at `have` (behind the kept messages) to the ledger's
        state now: a JUMP from `have` to the stream's version + 1, then one delta per account
        or card changed since the mark at or below `have`, each with its state now. The
        deltas carry the included_seq the terminal holds at `have` (its pending purchases
        still count what the not yet updated accounts lack; the updated ones count some
        twice: refused rather than overdrawn), the last one `w`. None when there is no mark
        at or below `have`, a change needs a snapshot, or a snapshot would be smaller."""
        mark = self.db.execute("SELECT version, change_id, included FROM dl_marks WHERE terminal = ? AND version <= ? "
                               "ORDER BY version DESC LIMIT 1", (number, have)).fetchone()
        if mark is None:
            self.log("downlink: no catch-up for %s from v%d: no mark that old (kept %d days): a snapshot"
                     % (tid, have, MARK_DAYS))
            return None
        _, start, inc = mark
        version, change_id, _ = self._stream(number)
        rows = [r for r in self.led.changes_since(start, limit=-1) if r[0] <= change_id]
        last = {}
        for i, (cid, kind, account, uid, uid2, t) in enumerate(rows):
            last[(kind if kind in _ACCOUNT_KINDS else "card", account if kind in _ACCOUNT_KINDS else uid,
                  kind)] = i
        if version + 1 + len(last) >= MAX_VERSION:
            return None  # no room for its versions below MAX_VERSION: a snapshot takes one
        snap = self.snapshot_bytes()
        least = _LEAST * sum(1 for k in last if k[2] != "totals")  # a totals change may be SKIP
        if least > snap:  # known too big before a delta is made (making them costs queries)
            self.log("downlink: no catch-up for %s from v%d: at least %d B, more than a snapshot (%d B)"
                     % (tid, have, least, snap))
            return None
        jump = carddelta.encode(version + 1, inc, carddelta.JUMP, value=have)
        ds, size, made, cards = [jump], 1 + len(jump), [], 0
        for i in sorted(last.values()):
            cid, kind, account, uid, uid2, t = rows[i]
            d = self._delta(version + 1 + len(ds), inc, number, w, kind, account, uid, uid2)
            if d is None:
                self.log("downlink: no catch-up for %s from v%d: a card replaced with no new card: a snapshot"
                         % (tid, have))
                return None
            if d is SKIP:
                continue
            if kind in _URGENT:
                cards += 1
                if cards > CATCH_UP_CARDS:
                    self.log("downlink: no catch-up for %s from v%d: over %d card changes, more than its card "
                             "overlay holds: a snapshot" % (tid, have, CATCH_UP_CARDS))
                    return None
            size += 1 + len(d)
            if size > snap:
                self.log("downlink: no catch-up for %s from v%d: over %d B, more than a snapshot (%d B)"
                         % (tid, have, size, snap))
                return None
            ds.append(d)
            made.append(i)
        if made and inc != w:  # the last delta moves the terminal to the included_seq now
            ds[-1] = carddelta.with_included(ds[-1], w)
        top = version + len(ds)
        out = self._pack(number, tid, site, version + 1, ds)
        self.db.execute("UPDATE dl_sent SET jump_from = ? WHERE terminal = ? AND first = ?",
                        (have, number, version + 1))
        now = int(self.led.clock())
        _mark(self.db, number, version + 1, start, inc, now)  # a terminal inside the catch-up starts again
        if made:
            _mark(self.db, number, top, change_id, w, now)
        self.db.execute("UPDATE dl_streams SET version = ?, included = ? WHERE terminal = ?",
                        (top, w if made else inc, number))
        self.db.execute("DELETE FROM dl_sent WHERE terminal = ? AND version <= ?", (number, top - self.keep))
        self.deltas += len(ds)
        self.catchups += 1
        self.log("downlink: catch-up for %s from v%d: %d deltas, %d B (a snapshot would be %d B)"
                 % (tid, have, len(made), size, snap))
        return out

    def _pack(self, number, tid, site, first, ds):
        """Messages for deltas `ds` (versions first, first + 1, ...), kept in dl_sent: one
        lone delta as a DELTA message, more as DELTAS messages of up to MAX_BODY bytes each."""
        out = []
        i = 0
        while i < len(ds):
            j, size = i, 0
            while j < len(ds) and size + 1 + len(ds[j]) <= signing.MAX_BODY:
                size += 1 + len(ds[j])
                j += 1
            lo, hi = first + i, first + j - 1
            if j - i == 1:
                msg = self._seal(site, tid, signing.DELTA, hi, ds[i])
            else:
                body = bytearray()
                for d in ds[i:j]:
                    body.append(len(d))
                    body.extend(d)
                msg = self._seal(site, tid, signing.DELTAS, hi, bytes(body))
            self.db.execute("INSERT OR REPLACE INTO dl_sent (terminal, version, payload, first) VALUES (?, ?, ?, ?)",
                            (number, hi, msg[1], lo))
            out.append(msg)
            self.messages += 1
            i = j
        return out

    def _resend(self, number, site, tid, have, version):
        """The kept messages that carry versions have + 1 .. version, byte for byte (a DELTAS
        message the terminal holds part of goes again whole: it skips what it has); None
        when they are not all kept (the caller sends a snapshot)."""
        covered, out = have, []
        t = protocol.topic(site, tid, protocol.SYNC_DOWN)
        rows = self.db.execute("SELECT version, first, payload, jump_from FROM dl_sent WHERE terminal = ? AND "
                               "version > ? ORDER BY version", (number, have)).fetchall()
        for i in range(len(rows) - 1, -1, -1):
            if rows[i][3] == have:  # a catch-up from exactly `have`: what lies before it is not needed
                rows = rows[i:]
                break
        for v, first, p, jf in rows:
            start = v if first is None else first
            if p is None:
                return None
            if jf is not None and covered < start:
                if covered != jf:
                    return None  # a jump from another version: the terminal would not take it
            elif start > covered + 1:
                return None
            out.append((t, self._reseal(site, tid, t, p)))  # the same bytes, the terminal's current tag
            covered = v
        return out if covered == version else None

    def adopt_version(self, number):
        """After the ledger was restored from a backup: take the version terminal `number`
        last reported as this stream's, so its next sync request brings a snapshot above it.
        Returns the adopted version; KeyError when the terminal never reported one."""
        with self.led._tx():
            row = self.db.execute("SELECT version, reported FROM dl_streams WHERE terminal = ?", (number,)).fetchone()
            if row is None or row[1] is None:
                raise KeyError(number)
            if row[1] > MAX_VERSION:
                raise ValueError("v%d leaves no room for later versions" % row[1])
            if row[1] > row[0]:
                self.db.execute("UPDATE dl_streams SET version = ? WHERE terminal = ?", (row[1], number))
                self.db.execute("DELETE FROM dl_sent WHERE terminal = ?", (number,))
                self.db.execute("DELETE FROM dl_marks WHERE terminal = ?", (number,))  # not this ledger's versions
            self.log("downlink: t%04d: stream version %d adopted (was %d)" % (number, max(row), row[0]))
            return max(row)

    def reported(self, number):
        """(version, state, t) the terminal last reported in a sync request, or None."""
        row = self.db.execute("SELECT reported, reported_state, reported_t FROM dl_streams WHERE terminal = ?",
                              (number,)).fetchone()
        return None if row is None or row[0] is None else row

    def pump(self):
        """Turn new changes into deltas for every terminal with a stream; the messages to send.

        Each terminal's stream is pumped in its own transaction: one stream that fails
        (whatever its state) is logged and rolled back alone, and every other terminal
        still gets its deltas."""
        if self._hold_back():
            return []
        out = []
        for number, tid, site in self.led.db.execute(
                "SELECT t.number, t.tid, t.site FROM terminals t JOIN dl_streams s "
                "ON s.terminal = t.number ORDER BY t.number").fetchall():
            if site not in self.keys:
                continue
            try:
                with self.led._tx():
                    w = self._terminal(number)[2]
                    out += self._pump_one(number, tid, site, w)[0]
            except Exception as e:  # this stream only; its changes stay unsent and are tried again
                n = self.failed[number] = self.failed.get(number, 0) + 1
                if n == 1 or n % 100 == 0:
                    self.log("downlink: stream of %s failed (%d times so far), other terminals unaffected: %s"
                             % (tid, n, e))
        return out

    def _hold_back(self):
        """True while new changes are only balance-like and younger than `coalesce_s`."""
        if not self.coalesce_s:
            return False
        low = self.db.execute("SELECT min(change_id) FROM dl_streams WHERE version > 0").fetchone()[0]
        if low is None or not self.db.execute("SELECT 1 FROM changes WHERE id > ? LIMIT 1", (low,)).fetchone():
            self._waiting_since = None
            return False
        now = self.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        urgent = self.db.execute("SELECT 1 FROM changes WHERE id > ? AND kind IN (%s) LIMIT 1"
                                 % ",".join("?" * len(_URGENT)), (low,) + _URGENT).fetchone()
        if urgent is None and now - self._waiting_since < self.coalesce_s:
            return True
        self._waiting_since = None
        return False

    def on_request(self, site, tid, payload):
        """A terminal's sync request (`up/sync`): what to send it, in order, ending with `current`."""
        have, state, resync, nonce = protocol.decode_sync(payload)
        number = protocol.terminal_number(tid)
        if site not in self.keys:
            raise protocol.ProtocolError("no site key for %s" % site)
        with self.led._tx():
            row = self._terminal(number)
            if row is None:
                self.db.execute("INSERT INTO terminals (number, tid, site) VALUES (?, ?, ?)", (number, tid, site))
                row = (tid, site, 0)
            w = row[2]
            self._stream(number)
            self.db.execute("UPDATE dl_streams SET reported = ?, reported_state = ?, reported_t = ? WHERE terminal = ?",
                            (have, state, int(self.led.clock()), number))
            sent = self._stream(number)[0]
            if have > sent:
                # A version this backend never sent: a forged request, or a ledger restored from
                # a backup. Nothing moves; staff can adopt the terminal's version after a restore
                # (`python -m backend adopt-version`). The reply says what the backend holds.
                self.refused += 1
                self.log("downlink: SECURITY: %s says it holds v%d, but its stream was only sent up to v%d: "
                         "refused (after a ledger restore: `python -m backend adopt-version --terminal %d`)"
                         % (tid, have, sent, number))
                return [self._seal(site, tid, signing.CURRENT, sent, arg=nonce)]
            out, snapped = self._pump_one(number, tid, site, w)
            version = self._stream(number)[0]
            if not snapped:
                if resync or state != 1 or have == 0:
                    out = self._snapshot(number, tid, site, w, version + 1)
                elif have < version:
                    out = self._resend(number, site, tid, have, version)
                    if out is None:
                        out = self._catch_up(number, tid, site, w, have)
                    if out is None:
                        out = self._snapshot(number, tid, site, w, self._stream(number)[0] + 1)
                else:
                    out = []  # current already
            version = self._stream(number)[0]
        # The backend's time rides on the answer to the terminal's nonce (docs/time.md).
        now = struct.pack("<I", int(self.led.clock()))
        out.append(self._seal(site, tid, signing.CURRENT, version, body=now, arg=nonce))
        return out
