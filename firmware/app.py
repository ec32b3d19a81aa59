"""The terminal application: asyncio tasks around one decision path.

Owns the order of things on the device. At start: configuration, journal recovery
(before the first tap), card table mount, own pending purchases rebuilt from the
journal. Then tasks: reader (PN532 polls -> taps), POS (till or vending machine
requests over the line protocol, served by `cpos.pos.server` over the board's POS link;
the app answers `LAST`: the newest journaled decision, for a till that lost a reply),
feedback (LED, buzzer, display: drawn after the POS has its reply), health (figures
for logs and the uplink), journal (erases the next sector between customers), watchdog
(fed only while every task is alive), and, when
configured, MQTT uplink and card-table sync. If any task raises, the app logs it,
stops every task and returns to main.py, which restarts it (journal recovery again:
nothing recorded is lost, nothing is recorded twice).

The tap path, `decide`: look up the card (one flash block read), apply this
terminal's own pending purchases, run the rules (and the offline-exposure cap when
the config has one, docs/offline.md), append to the journal (durable
before anything is signalled), then reply to the POS and queue the feedback. It
allocates nothing in the steady state on MicroPython except the POS reply line.

Refunds, `reverse`: a failed vend (the MDB reader) or a till's `VOID` gives back the
money of an own recent approval through one durable reversal record (cpos.refund,
docs/rules.md "Reversals"); the own pending purchases count it at once.
"""
import asyncio

from cpos import feedback, purchase, reasons, refund, rules
from cpos import timekeeper as tk
from cpos.cards import table as cardtable
from cpos.cards import unincluded
from cpos.pos import lines as posproto
from cpos.pos import server as posserver
from cpos.compat import const, sleep_ms, ticks_diff, ticks_ms, ticks_us
from cpos.journal import Journal, JournalFull
from cpos.reader.pn532 import PN532
from cpos.reader.tap import CardReader, TAP

_HEALTH_EVERY_MS = const(30000)  # how often the health task logs (and publishes) its figures
_HEALTH_CHECK_MS = const(1000)  # how often the health task looks for news worth a report
_WDT_FEED_MS = const(1000)  # the watchdog task feeds this often
_READER_STALL_MS = const(8000)  # the reader task must report a poll at least this often
_IDLE_COMPACT_MS = const(20000)  # no card and no open request this long: a quiet moment
_PREPARE_AFTER_MS = const(300)  # ...this long: the journal's next sector may be erased (one erase, ~45 ms on an ESP32)
_PREPARE_CHECK_MS = const(100)  # how often the journal task looks for such a moment
_READER_WAIT_MS = const(1000)  # a pending poll's length when the config does not say (`pn532.wait_ms`)
_CARD_SLOTS = const(32)  # card overlay slots of the card table with the downlink on
_TIME_SETTLE_MS = const(3000)  # after boot, time unknown and a source configured: a tap waits up to this long for it


class App:
    def __init__(self, board, cfg, log):
        self.board = board
        self.cfg = cfg
        self.log = log
        self.profile = cfg.profile
        self._event = getattr(board, "event", None)  # the unix board reports to the simulator
        self.journal = Journal(board.block_device(cfg.storage["journal"]), log=log)  # logs decay (E)
        # With the downlink on, 32 card overlay slots (704 bytes): blocks and new cards
        # between snapshots; balances live on flash (docs/formats.md, "Card table").
        # Without it no delta ever arrives: the small default.
        self.table = cardtable.CardTable(board.block_device(cfg.storage["cardtable"]),
                                         card_slots=_CARD_SLOTS if cfg.site_key is not None else 24)
        self._last_tap = ticks_ms()
        self._decided = False  # a till's decision answered since the journal last looked for idle work
        self._wdt = None
        self._fed = ticks_ms()
        self.unincluded = unincluded.Unincluded()
        self.card = rules.CardRecord()
        self.spends = rules.Spends()
        self.pos = posserver.Server(self.profile.kind, cfg.terminal_id, self.last_line, log, void=self.void_line)
        self.refunds = refund.Refunds(self.journal, cfg.terminal_no, cfg.refund_window_s)
        self.reader = None
        self.mdb = None  # the MDB cashless reader (cpos.mdb.service) when the config has `mdb`
        self.feedback = feedback.Feedback(board.outputs(cfg.feedback), sleep_ms)
        # Trusted time (docs/time.md): every time the app uses comes from the keeper.
        self.clock = tk.TimeKeeper(board.now, log, cfg.time["step_s"], cfg.time["ahead_s"],
                                   getattr(board, "set_time", None))
        if hasattr(log.sink, "use_clock"):  # the on-flash log (cpos.devlog) stamps with it too
            log.sink.use_clock(self.clock)
        from cpos.timetask import TimeTask

        rtc = board.battery_rtc(cfg.time.get("ds3231")) if hasattr(board, "battery_rtc") else None
        self.time_task = TimeTask(self.clock, cfg.time, rtc=rtc, log=log)
        # SNTP is not authenticated: on a terminal with the signed downlink it sets an unknown
        # time only when a second source agrees; a battery RTC waits for its first answer.
        self.clock.alone[tk.SNTP] = cfg.site_key is None
        cp = getattr(board, "config_path", None)  # the newest backend time is kept beside the config
        self._floor_file = cp().rsplit("/", 1)[0] + "/time_floor" if cp is not None and "/" in cp() else None
        self.clock.persist = self._keep_floor
        self.clock.sntp_due = "sntp" in cfg.time
        self._fb = asyncio.Event()
        self._fb_what = None
        self.capped = False  # the last decision was refused by the offline cap (docs/offline.md)
        self._failed = None
        self._beat_reader = ticks_ms()
        self.uplink = None
        self.mqtt = None
        self.feed = None
        self.sync = None
        self.decisions = 0
        self.approvals = 0
        self._lastrec = bytearray(purchase.SIZE)  # the POS `LAST` request reads into it

    # -- start -------------------------------------------------------------------
    def recover(self):
        """Journal first (before the first tap), then the card table, then the own purchases not yet included."""
        nxt = self.journal.recover()
        self.time_at_boot(nxt)
        self.table.mount()
        self.rebuild_unincluded()
        used, total = self.journal.fill()
        self.log.info("recovered: next seq %d, acked %d, journal %d/%d, table v%d (%s), %d pending" % (
            nxt, self.journal.watermark, used, total, self.table.version,
            ("empty", "ok", "broken")[self.table.state], self.unincluded.count))
        self.report("boot", next_seq=nxt, acked=self.journal.watermark, table_version=self.table.version,
                    pending=self.unincluded.count, time_known=self.clock.known, now=self.clock.now())

    def time_at_boot(self, nxt):
        """Before the first tap: the floor from the newest journal record, then the board's
        clock if it kept time across this start (a soft reset; not after a power-on), then
        the battery RTC. Without any, the time stays unknown until a source answers."""
        k = self.clock
        buf = self._lastrec
        if nxt > 1 and self.journal.read(nxt - 1, buf, True) == nxt - 1:
            k.raise_floor(purchase.outcome(buf)[1], "journal")
        t = self._kept_floor()
        if t:
            k.raise_floor(t, "backend (kept)")
        kept = getattr(self.board, "clock_kept", None)
        if kept is None or kept():  # a board without `clock_kept` has a clock its OS keeps
            k.offer(tk.BOARD, self.board.now())
        else:
            self.log.info("time: the board's clock did not survive this start: unknown until a source answers")
        self.time_task.read_rtc()
        if not k.known and ("sntp" in self.cfg.time or (self.cfg.site_key is not None and self.cfg.mqtt is not None)):
            k.expect(_TIME_SETTLE_MS)

    def _keep_floor(self, t):
        """Write the newest accepted backend time beside the config (a new file renamed over
        the old: a torn write leaves the old one). Backend times come with sync answers, a
        few an hour: no wear to speak of."""
        f = self._floor_file
        if f is None:
            return
        try:
            with open(f + ".new", "w") as out:
                out.write("%d\n" % t)
            import os

            os.rename(f + ".new", f)
        except OSError as e:
            self.log.warn("time: cannot keep the floor in %s: %s" % (f, e))

    def _kept_floor(self):
        """The backend time kept by _keep_floor, or 0 (none, or unreadable: logged)."""
        f = self._floor_file
        if f is None:
            return 0
        try:
            with open(f) as src:
                return int(src.read().strip())
        except OSError:
            return 0  # never kept yet
        except ValueError:
            self.log.warn("time: the kept floor in %s is unreadable: the journal's floor only" % f)
            return 0

    def rebuild_unincluded(self):
        """Count every approved own purchase above the table's included_seq, once."""
        self.unincluded.rebuild(self.journal, self.table.included_seq)

    def report(self, kind, **fields):
        """An event for the simulator (unix board only; nothing on a real board)."""
        if self._event is not None:
            import gc

            fields["terminal"] = self.cfg.terminal_id
            gc.collect()  # live data only, not garbage awaiting collection (unix board only)
            fields["mem_free"] = gc.mem_free()
            self._event(kind, **fields)

    # -- the tap path ------------------------------------------------------------
    def decide(self, uid, amount, item, now):
        """Decide and record one purchase. Returns (code, topup, seq, balance_after, timings)."""
        t0 = ticks_us()
        card, spends = self.card, self.spends
        found = self.table.lookup(uid, card, spends)
        t1 = ticks_us()
        if found == cardtable.CORRUPT:
            d = reasons.NEEDS_UPDATE
        elif found == cardtable.NOT_FOUND:
            d = rules.authorize(None, spends, self.profile, amount, now)
        else:
            self.unincluded.apply_to(card, spends, now)
            d = rules.authorize(card, spends, self.profile, amount, now)
        t2 = ticks_us()
        code = rules.reason(d)
        topup = rules.topup_triggered(d)
        untimed = not self.clock.known
        if untimed and found == cardtable.FOUND:  # docs/rules.md "Time unknown"
            code = tk.untimed_reason(code, card, self.profile, self.cfg.offline is not None)
        self.capped = code == reasons.APPROVED and self.cfg.offline is not None and self._offline_capped(
            card, amount, now)
        if self.capped:  # the student sees the offline page (cpos.feedback); the POS, insufficient funds
            code = reasons.INSUFFICIENT_FUNDS
        seq = 0
        balance_after = card.balance if found == cardtable.FOUND else 0
        if code == reasons.APPROVED:
            balance_after -= amount
        if code == reasons.APPROVED or topup:
            try:
                seq = self.journal.append(now, uid, card.account, amount, self.profile.place,
                                          self.profile.kind, self.cfg.terminal_no, item,
                                          balance_after, code, topup, untimed)
            except JournalFull:
                if code == reasons.APPROVED:
                    code = reasons.TERMINAL_FULL
                    balance_after += amount
                self.log.warn("journal full: purchase refused")
            if seq and code == reasons.APPROVED:
                self.unincluded.add(seq, card.account, self.profile.place, amount, now)
                self.approvals += 1
            if seq and self.uplink is not None:
                self.uplink.kick()
        t3 = ticks_us()
        self.decisions += 1
        if untimed:
            self.log.info("time unknown: %s at the floor %d, seq %d" % (reasons.name(code), now, seq))
        return code, topup, seq, balance_after, (ticks_diff(t1, t0), ticks_diff(t2, t1), ticks_diff(t3, t2))

    def reverse(self, orig_seq, now):
        """Give back the money of this terminal's approved purchase `orig_seq` (a vend that
        failed after its approval, or a till's void). Synchronous; the reversal record is
        durable on flash before it returns. Returns (code, rev_seq, balance_after): code
        reasons.APPROVED with the reversal's own journal seq and the account's available
        money after the refund, or (PURCHASE_NOT_FOUND / ALREADY_REVERSED / NOT_REVERSIBLE /
        REVERSAL_TOO_LATE / TERMINAL_FULL, 0, 0) with nothing written (docs/rules.md)."""
        r = self.refunds
        code = r.check(orig_seq, now)
        if code != reasons.APPROVED:
            self.log.warn("reversal of %r refused: %s" % (orig_seq, reasons.name(code)))
            return code, 0, 0
        orig = r.original()
        amount = orig["amount"]
        card, spends = self.card, self.spends
        if self.table.lookup(orig["uid"], card, spends) == cardtable.FOUND and card.account == orig["account"]:
            self.unincluded.apply_to(card, spends, now)
            balance_after = card.balance + amount
        else:  # the card left the table since (or it is unreadable): the purchase's own figure
            balance_after = orig["balance_after"] + amount
        cause = purchase.CAUSE_VOID if self.profile.kind == rules.TILL else purchase.CAUSE_VEND_FAILURE
        try:
            rev_seq = r.record(now, balance_after, cause)
        except JournalFull:
            self.log.warn("journal full: reversal of %d refused" % orig_seq)
            return reasons.TERMINAL_FULL, 0, 0
        self.unincluded.add_reversal(rev_seq, orig["account"], orig["place"], amount, orig["t"])
        if self.uplink is not None:
            self.uplink.kick()
        self.log.info("reversed purchase %d (%d øre) as %d" % (orig_seq, amount, rev_seq))
        self._show(("decision", reasons.REVERSED, amount, balance_after, False, False))
        self.report("reversal", orig_seq=orig_seq, seq=rev_seq, amount=amount, balance_after=balance_after,
                    cause=purchase.CAUSES[cause])
        return reasons.APPROVED, rev_seq, balance_after

    def void_line(self, ref, orig_seq):
        """The reply to the POS `VOID <ref> <orig_seq>` (docs/pos-protocol.md)."""
        code, rev_seq, balance_after = self.reverse(orig_seq, self.clock.now())
        if code != reasons.APPROVED:
            return posproto.refused(ref, reasons.name(code))
        return posproto.voided(ref, orig_seq, rev_seq, purchase.outcome(self.refunds.orig)[2], balance_after)

    def _offline_capped(self, card, amount, now):
        """The offline-exposure policy (docs/offline.md): True when this approval would take
        the card past what it may spend here since the last sync. `card.balance` is already
        the available money (synced balance - own pending); what this terminal let the card
        spend since the last sync is its pending sum. Without the downlink, or before the
        first authentic downlink news since boot, the last sync is unknown (0): capped."""
        last = self.sync.last_contact if self.sync is not None and self.clock.known else 0
        return amount > self.cfg.offline.limit(card.balance, self.unincluded.amount(card.account), now, last)

    def balance_of(self, uid, now):
        """For a tap without a request: (reason code, available balance)."""
        card, spends = self.card, self.spends
        found = self.table.lookup(uid, card, spends)
        if found == cardtable.CORRUPT:
            return reasons.NEEDS_UPDATE, 0
        if found == cardtable.NOT_FOUND:
            return reasons.UNKNOWN_CARD, 0
        if card.status == rules.REPLACED:
            return reasons.REPLACED, 0
        if card.status == rules.BLOCKED:
            return reasons.BLOCKED, 0
        self.unincluded.apply_to(card, spends, now)
        return reasons.APPROVED, card.balance

    async def on_tap(self, uid, tap_ms):
        tap_us = ticks_us()
        self._last_tap = tap_ms
        now = self.clock.now()
        req = self.pos.request
        if self.mdb is not None and self.mdb.tap(uid, tap_ms):
            return  # the vending machine's session took the card (docs/mdb.md)
        if not req.open:
            code, balance = self.balance_of(uid, now)
            self._show(("balance", code, 0, balance, False, False))
            self.report("balance", uid=_hex(uid), reason=reasons.name(code), balance=balance)
            return
        if self.sync is not None:
            await self.sync.settled()  # just reconnected: hear what was missed first
            if not req.open:  # cancelled or expired meanwhile
                return
        if not self.clock.known:
            await self.clock.settled()  # just booted: a first time is due from a source
            if not req.open:
                return
        now = self.clock.now()
        writer = req.writer
        ref, amount, item = req.ref, req.amount, req.item
        req.close()
        erases = getattr(self.journal.dev, "erases", 0)  # a count on the unix board, for the simulator
        code, topup, seq, balance_after, timings = self.decide(uid, amount, item, now)
        erases = getattr(self.journal.dev, "erases", 0) - erases  # sector erases inside this append
        if code == reasons.APPROVED:
            line = posproto.approved(ref, seq, amount, balance_after)
        else:
            line = posproto.refused(ref, reasons.name(code))
        await posserver.send(writer, line)
        replied_us = ticks_us()
        self._show(("decision", code, amount, balance_after, topup, self.capped))  # drawn after the reply
        self._decided = True  # the journal task may erase its next sector before the next request
        self.report("decision", uid=_hex(uid), ref=ref, amount=amount, reason=reasons.name(code),
                    seq=seq, balance_after=balance_after, topup=topup,
                    lookup_us=timings[0], rules_us=timings[1], journal_us=timings[2],
                    erased=erases,
                    tap_to_reply_us=ticks_diff(replied_us, tap_us))

    def last_line(self):
        """The reply to the POS `LAST` request: the newest journal record, whatever its
        reason (an approval, or a refusal journaled for its top-up trigger), read back
        from flash. `LAST - <newest seq>` when there is none to show: nothing was ever
        recorded (0), or the newest record was acknowledged and its sector erased."""
        j = self.journal
        newest = j.next_seq - 1
        buf = self._lastrec
        if newest < 1 or j.read(newest, buf, True) != newest:
            return posproto.last_none(newest)
        seq, t, amount, balance_after, code = purchase.outcome(buf)
        orig = purchase.reverses(buf)
        if orig:  # a reversal: which purchase it gave back
            return posproto.last_reversal(seq, amount, balance_after, t, orig)
        return posproto.last(seq, amount, balance_after, reasons.name(code), t)

    def _show(self, what):
        self._fb_what = what
        self._fb.set()

    # -- tasks -------------------------------------------------------------------
    async def reader_task(self):
        """Taps in, one step at a time. While no card is seen a step is a pending poll the
        chip answers as soon as a card comes (`pn532.wait_ms`, default 1000; 0: plain polls
        every 30 ms)."""
        link = self.board.pn532_link(self.cfg.pn532)
        self.reader = reader = CardReader(PN532(link), removal_ms=self.cfg.removal_window_ms,
                                          wait_ms=self.cfg.pn532.get("wait_ms", _READER_WAIT_MS))
        while True:
            result = await reader.step()
            self._beat_reader = ticks_ms()
            if result == TAP:
                await self.on_tap(memoryview(reader.uid)[:reader.uid_len], self._beat_reader)
            await sleep_ms(reader.pause_ms)

    async def journal_task(self):
        """Erase the journal's next sector between two customers (prepare_journal_if_idle),
        looking every _PREPARE_CHECK_MS: a look costs nothing once the sector is ready. At a
        quiet moment (_IDLE_COMPACT_MS), record the acknowledgements the feed holds."""
        while True:
            await sleep_ms(_PREPARE_CHECK_MS)
            if self.prepare_journal_if_idle():
                self.report("journal_prepared", erases=getattr(self.journal.dev, "erases", -1))
            else:
                self.release_held_if_quiet()

    async def feedback_task(self):
        """Shows each decision as it comes; a new one cuts the previous pattern short."""
        fb = self.feedback
        while True:
            await self._fb.wait()
            self._fb.clear()
            kind, code, amount, balance, topup, capped = self._fb_what
            if kind == "decision":
                fb.play(fb.decision(code, amount, balance, topup, capped))
            elif code == reasons.APPROVED:
                fb.play(fb.balance(balance))
            else:
                fb.play(fb.unknown_for_balance(code))

    async def pos_task(self):
        """The POS server (`self.pos`) on the link the board builds from the config."""
        await self.pos.run(self.board.pos_link(self.cfg.pos))

    async def health_task(self):
        """Log the health figures every 30 s; with a broker, also publish them (`up/health`,
        QoS 0, docs/protocol.md): every 30 s, after each (re)connect and within a second of
        the card-table version changing, so the backend knows which version is held."""
        last = ticks_ms()
        sent_gen = sent_version = -1
        topic = None
        while True:
            await sleep_ms(_HEALTH_CHECK_MS)
            self.table_upkeep()  # the journal's erase ahead is the journal task's
            due = ticks_diff(ticks_ms(), last) >= _HEALTH_EVERY_MS
            c = self.mqtt
            news = c is not None and c.connected and (c.generation != sent_gen or self.table.version != sent_version)
            if not (due or news):
                continue
            h = self.health()
            if due:
                last = ticks_ms()
                self.log.info("health %r" % (h,))
            if c is not None and c.connected:
                from cpos.net import messages  # loaded already by the uplink: no heap without a broker

                if topic is None:
                    topic = messages.topic(self.cfg.site, self.cfg.terminal_id, messages.HEALTH)
                gen, version = c.generation, self.table.version
                if await c.publish(topic, messages.encode_health(h, self.clock.now()), 0):
                    sent_gen, sent_version = gen, version

    def health(self):
        import gc

        used, total = self.journal.fill()
        up = self.uplink or self.journal  # pending: records the backend has not acknowledged
        h = {"decisions": self.decisions, "approvals": self.approvals,
             "journal_used": used, "journal_total": total, "pending": up.pending(),
             "oldest_unacked": (self.feed or self.journal).oldest_unacked(), "table_version": self.table.version,
             "table_state": self.table.state, "mem_free": gc.mem_free(), "errors": self.log.errors}
        if self.reader is not None:
            r = self.reader
            h["reader_ok"] = r.ready
            h["reader_errors"] = r.errors
            h["reader_reinits"] = r.reinits
        if self.mqtt is not None:
            c, u = self.mqtt, self.uplink
            h["broker_connected"] = c.connected
            h["broker_connects"] = c.connects
            h["broker_error"] = None if c.last_error is None else str(c.last_error)
            h["uplink_acked"] = self.feed.acked
            h["uplink_batches"] = u.batches
            h["uplink_resends"] = u.resends
            h["uplink_bad_acks"] = u.bad_acks
        if self.sync is not None:
            h.update(self.sync.status())
        h.update(self.clock.status())
        if self.mdb is not None:
            h.update(self.mdb.health())
        return h

    async def watchdog_task(self):
        self._wdt = wdt = self.board.watchdog(self.cfg.watchdog_ms)
        while True:
            if self._failed is None and ticks_diff(ticks_ms(), self._beat_reader) < _READER_STALL_MS:
                wdt.feed()
                self._fed = ticks_ms()
            await sleep_ms(_WDT_FEED_MS)

    def table_upkeep(self):
        """One bounded step of card-table upkeep (a bucket refresh or one erase, tens of ms
        on an ESP32), when there is some and no request is open. The sync task does the
        same after each message; this catches what is left when the downlink is quiet.
        Returns True when it did something."""
        t = self.table
        if self.pos.request.open or not t.wants_step:
            return False
        return t.step()

    def prepare_journal_if_idle(self):
        """Erase the journal's next sector (Journal.prepare) once no request is open and no
        card came for _PREPARE_AFTER_MS, or at once after a till's decision was answered and
        shown while no new request is open (the customer is leaving; a till that asks for the
        next payment within a few hundred ms leaves no 300 ms quiet), and never while a
        rhythm's tones play (a stall would stretch them): between two customers, so the purchase that opens
        the sector does not wait for the erase, which stalls an ESP32 for tens of ms
        (docs/formats.md). Once per sector: it returns at once when the next sector is
        ready. Returns True when it erased."""
        if self.feedback.sounding or not self._quiet(0 if self._decided else _PREPARE_AFTER_MS):
            return False  # an erase stalls an ESP32's CPU: not while the student hears the rhythm
        self._decided = False
        return self.journal.prepare()

    def release_held_if_quiet(self):
        """At a quiet moment, record the acknowledgements the uplink's feed holds back while
        customers come (cpos.net.journal_feed, `hold`): one journal slot. True if recorded."""
        if self.feed is None or not self._quiet():
            return False
        return self.feed.release(True)  # writes nothing when nothing is held

    def _quiet(self, ms=_IDLE_COMPACT_MS):
        """No open request, no vend session and no card for `ms`: slow flash work delays no tap."""
        if self.mdb is not None and self.mdb.busy():
            return False
        return not self.pos.request.open and ticks_diff(ticks_ms(), self._last_tap) >= ms

    async def _guard(self, name, coro):
        """Run one task. Every task runs for ever: one that raises, or that returns
        (a loop that ended), is dead, so the watchdog stops being fed and the app stops
        for a clean restart."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every task failure restarts the app
            self.log.error("task %s failed" % name, e)
        else:
            self.log.error("task %s ended" % name)
        self._failed = name
        self._stop.set()

    async def run(self):
        """Run every task until one fails; then stop them all and return its name."""
        self._stop = asyncio.Event()
        tasks = [asyncio.create_task(self._guard(n, c)) for n, c in (
            ("reader", self.reader_task()), ("feedback", self.feedback_task()),
            ("pos", self.pos_task()), ("health", self.health_task()), ("journal", self.journal_task()),
            ("watchdog", self.watchdog_task()))]
        if self.cfg.mdb is not None:
            from cpos.mdb.service import Service
            self.mdb = Service(self, self.cfg.mdb, self.board.mdb_link(self.cfg.mdb.spec), self.log)
            tasks.append(asyncio.create_task(self._guard("mdb", self.mdb.run())))
        for n, c in self.extra_tasks():
            tasks.append(asyncio.create_task(self._guard(n, c)))
        self.time_task.sync = self.sync
        tasks.append(asyncio.create_task(self._guard("time", self.time_task.run())))
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        await sleep_ms(0)
        return self._failed

    def extra_tasks(self):
        """The network tasks when the config has an `mqtt` section: the broker connection
        and the uplink (journal records up, released on the backend's acknowledgement),
        and with a `site_key` the sync (card table kept current over the downlink)."""
        m = self.cfg.mqtt
        if m is None:
            return ()
        from cpos.net.mqtt import MQTTClient
        from cpos.net.uplink import Uplink
        from cpos.net.journal_feed import JournalFeed

        from cpos.net.signing import MAX_MESSAGE

        ctx = None
        if m.get("tls") is not None:  # docs/security.md: the broker verified, this terminal's certificate
            from cpos.net import tls

            ctx = tls.context(m["tls"])
        # nothing the backend sends is larger than a downlink message: refuse more (docs/security.md)
        self.mqtt = MQTTClient(self.cfg.terminal_id, m["host"], m["port"], m["user"], m["password"],
                               keepalive=m["keepalive"], backoff_max_ms=m["backoff_max_ms"], log=self.log,
                               max_packet=MAX_MESSAGE + 256, ssl=ctx,
                               server_hostname=(m.get("tls") or {}).get("server_name"))
        limit = None
        if self.cfg.site_key is not None:
            # A record leaves the journal only once the synced table includes it too:
            # pending purchases are rebuilt from the journal above table.included_seq.
            limit = self._included_seq
        # one release a journal sector's worth of records while customers come (each release
        # takes a slot: docs/formats.md); the rest at the next quiet moment (journal_task)
        self.feed = JournalFeed(self.journal, ack_limit=limit, log=self.log, hold=self.journal.slots)
        self.uplink = Uplink(self.feed, self.mqtt, self.cfg.site, self.cfg.terminal_id, batch_size=m["batch"],
                             window=m["window"], ack_timeout_ms=m["ack_timeout_ms"], clock=self.clock.now,
                             log=self.log, on_ack=self._on_uplink_ack, key=self.cfg.site_key,
                             up_key=self.cfg.up_key)
        self.mqtt.will = self.uplink.will()
        tasks = (("mqtt", self._network()), ("uplink", self.uplink.run()))
        if self.cfg.site_key is None:
            return tasks
        from cpos.net.sync import Sync

        self.sync = Sync(self.table, self.mqtt, self.cfg.site, self.cfg.terminal_id, self.cfg.site_key,
                         on_included=self._on_included, log=self.log, clock=self.clock.now,
                         on_time=self._backend_time, elapsed=self.clock.elapsed)
        return tasks + (("sync", self.sync.run()),)

    def _backend_time(self, t, rtt_ms):
        """The backend's time, in its signed answer to our sync request."""
        self.clock.offer(tk.BACKEND, t, rtt_ms)

    def _included_seq(self):
        return self.table.included_seq

    def _on_included(self, seq):
        """The synced table now includes own purchases up to `seq`: count only those above
        it as pending (reading only the newly included records), and let the journal
        release what both the ack and the table cover."""
        self.unincluded.advance(self.journal, seq)
        self.feed.release()
        self.report("synced", table_version=self.table.version, included_seq=seq, pending=self.unincluded.count)

    async def _network(self):
        up = getattr(self.board, "network_up", None)
        if up is not None:
            await up(self.cfg.wifi)
        await self.mqtt.run()

    def _on_uplink_ack(self, watermark):
        self.report("acked", watermark=watermark, pending=self.uplink.pending(),
                    erases=getattr(self.journal.dev, "erases", -1))  # the device's count (unix board)


def _hex(uid):
    return "".join("%02X" % b for b in uid)
