"""The terminal application: asyncio tasks around one decision path.

Owns the order of things on the device. At start: configuration, journal recovery
(before the first tap), card table mount, own pending purchases rebuilt from the
journal. Then tasks: reader (PN532 polls -> taps), POS (till or vending machine
requests over the line protocol, served by `cpos.pos.server` over the board's POS link;
the app answers `LAST`: the newest journaled decision, for a till that lost a reply),
feedback (LED, buzzer, display), health (figures
for logs and the uplink), watchdog (fed only while every task is alive), and, when
configured, MQTT uplink and card-table sync. If any task raises, the app logs it,
stops every task and returns to main.py, which restarts it (journal recovery again:
nothing recorded is lost, nothing is recorded twice).

The tap path, `decide`: look up the card (one flash block read), apply this
terminal's own pending purchases, run the rules (and the offline-exposure cap when
the config has one, docs/offline.md), append to the journal (durable
before anything is signalled), then reply to the POS and queue the feedback. It
allocates nothing in the steady state on MicroPython except the POS reply line.
"""
import asyncio

from cpos import feedback, purchase, reasons, rules
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
_WDT_FEED_MS = const(1000)  # the watchdog task feeds this often; a compaction at most this often
_READER_STALL_MS = const(8000)  # the reader task must report a poll at least this often
_IDLE_COMPACT_MS = const(20000)  # no card and no open request this long: a quiet moment (compact, erase ahead)
_ACC_SLOTS = const(64)  # account overlay slots of the card table with the downlink on
_CARD_SLOTS = const(32)  # card overlay slots of the card table with the downlink on


class App:
    def __init__(self, board, cfg, log):
        self.board = board
        self.cfg = cfg
        self.log = log
        self.profile = cfg.profile
        self._event = getattr(board, "event", None)  # the unix board reports to the simulator
        self.journal = Journal(board.block_device(cfg.storage["journal"]), log=log)  # logs decay (E)
        # With the downlink on, 64 account and 32 card overlay slots (~5 KB of RAM): a
        # lunch rush changes many balances between compactions; blocks and new cards are
        # rarer (docs/formats.md). Without it no delta ever arrives: the small default.
        slots = (_ACC_SLOTS, _CARD_SLOTS) if cfg.site_key is not None else (16, 24)
        self.table = cardtable.CardTable(board.block_device(cfg.storage["cardtable"]),
                                         acc_slots=slots[0], card_slots=slots[1])
        self.table.progress = self._compacting
        self._last_tap = ticks_ms()
        self._compact_failed = -1  # the table version an idle compaction last failed on
        self._wdt = None
        self._fed = ticks_ms()
        self.unincluded = unincluded.Unincluded()
        self.card = rules.CardRecord()
        self.spends = rules.Spends()
        self.pos = posserver.Server(self.profile.kind, cfg.terminal_id, self.last_line, log)
        self.reader = None
        self.feedback = feedback.Feedback(board.outputs(cfg.feedback), sleep_ms)
        self._fb = asyncio.Event()
        self._fb_what = None
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
        self.table.mount()
        self.rebuild_unincluded()
        used, total = self.journal.fill()
        self.log.info("recovered: next seq %d, acked %d, journal %d/%d, table v%d (%s), %d pending" % (
            nxt, self.journal.watermark, used, total, self.table.version,
            ("empty", "ok", "broken")[self.table.state], self.unincluded.count))
        self.report("boot", next_seq=nxt, acked=self.journal.watermark, table_version=self.table.version,
                    pending=self.unincluded.count)

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
        if code == reasons.APPROVED and self.cfg.offline is not None and self._offline_capped(card, amount, now):
            code = reasons.INSUFFICIENT_FUNDS
        seq = 0
        balance_after = card.balance if found == cardtable.FOUND else 0
        if code == reasons.APPROVED:
            balance_after -= amount
        if code == reasons.APPROVED or topup:
            try:
                seq = self.journal.append(now, uid, card.account, amount, self.profile.place,
                                          self.profile.kind, self.cfg.terminal_no, item,
                                          balance_after, code, topup)
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
        return code, topup, seq, balance_after, (ticks_diff(t1, t0), ticks_diff(t2, t1), ticks_diff(t3, t2))

    def _offline_capped(self, card, amount, now):
        """The offline-exposure policy (docs/offline.md): True when this approval would take
        the card past what it may spend here since the last sync. `card.balance` is already
        the available money (synced balance - own pending); what this terminal let the card
        spend since the last sync is its pending sum. Without the downlink, or before the
        first authentic downlink news since boot, the last sync is unknown (0): capped."""
        last = self.sync.last_contact if self.sync is not None else 0
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
        self._last_tap = tap_ms
        now = self.board.now()
        req = self.pos.request
        if not req.open:
            code, balance = self.balance_of(uid, now)
            self._show(("balance", code, 0, balance))
            self.report("balance", uid=_hex(uid), reason=reasons.name(code), balance=balance)
            return
        if self.sync is not None:
            await self.sync.settled()  # just reconnected: hear what was missed first
            if not req.open:  # cancelled or expired meanwhile
                return
            now = self.board.now()
        writer = req.writer
        ref, amount, item = req.ref, req.amount, req.item
        req.close()
        code, topup, seq, balance_after, timings = self.decide(uid, amount, item, now)
        decided_ms = ticks_ms()
        self._show(("decision", code, amount, balance_after))
        if code == reasons.APPROVED:
            line = posproto.approved(ref, seq, amount, balance_after)
        else:
            line = posproto.refused(ref, reasons.name(code))
        await posserver.send(writer, line)
        self.report("decision", uid=_hex(uid), ref=ref, amount=amount, reason=reasons.name(code),
                    seq=seq, balance_after=balance_after, topup=topup,
                    lookup_us=timings[0], rules_us=timings[1], journal_us=timings[2],
                    tap_to_decision_ms=ticks_diff(decided_ms, tap_ms))

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
        return posproto.last(seq, amount, balance_after, reasons.name(code), t)

    def _show(self, what):
        self._fb_what = what
        self._fb.set()

    # -- tasks -------------------------------------------------------------------
    async def reader_task(self):
        link = self.board.pn532_link(self.cfg.pn532)
        self.reader = reader = CardReader(PN532(link), removal_ms=self.cfg.removal_window_ms)
        poll_ms = reader.poll_ms
        while True:
            result = await reader.step()
            self._beat_reader = ticks_ms()
            if result == TAP:
                await self.on_tap(memoryview(reader.uid)[:reader.uid_len], self._beat_reader)
            await sleep_ms(poll_ms)

    async def feedback_task(self):
        """Shows each decision as it comes; a new one cuts the previous pattern short."""
        fb = self.feedback
        while True:
            await self._fb.wait()
            self._fb.clear()
            kind, code, amount, balance = self._fb_what
            if kind == "decision":
                fb.play(fb.decision(code, amount, balance))
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
            self.compact_if_idle()
            self.prepare_journal_if_idle()
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
                if await c.publish(topic, messages.encode_health(h, self.board.now()), 0):
                    sent_gen, sent_version = gen, version

    def health(self):
        import gc

        used, total = self.journal.fill()
        h = {"decisions": self.decisions, "approvals": self.approvals,
             "journal_used": used, "journal_total": total, "pending": self.journal.pending(),
             "oldest_unacked": self.journal.oldest_unacked(), "table_version": self.table.version,
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
        return h

    async def watchdog_task(self):
        self._wdt = wdt = self.board.watchdog(self.cfg.watchdog_ms)
        while True:
            if self._failed is None and ticks_diff(ticks_ms(), self._beat_reader) < _READER_STALL_MS:
                wdt.feed()
                self._fed = ticks_ms()
            await sleep_ms(_WDT_FEED_MS)

    def compact_if_idle(self):
        """Fold the card table's deltas into a new image at a quiet moment: the overlay or
        the delta log is half full, no request is open, no card for 20 s and no snapshot
        arriving. A compaction holds the loop for seconds on a large table; done here, the
        next delta rarely finds the overlay full in the middle of a queue (docs/formats.md).
        Returns True when it compacted."""
        t = self.table
        if not self._quiet() or t.installing or t.version == self._compact_failed or not t.needs_compaction:
            return False
        t0 = ticks_ms()
        ok = t.compact() == cardtable.INSTALL_OK
        ms = ticks_diff(ticks_ms(), t0)
        if ok:
            self.log.info("card table compacted while idle in %d ms" % ms)
        else:  # not again until the table changes: a delta or snapshot brings the next try
            self._compact_failed = t.version
            self.log.warn("idle compaction of card table v%d failed" % t.version)
        self.report("compacted", ok=ok, ms=ms, table_version=t.version)
        return ok

    def prepare_journal_if_idle(self):
        """Erase the journal's next sector at the same quiet moments (Journal.prepare), so
        the purchase that opens it does not wait for the erase, which stalls an ESP32 for
        tens of ms (docs/formats.md). Returns True when it erased."""
        return self._quiet() and self.journal.prepare()

    def _quiet(self):
        """No open request and no card for _IDLE_COMPACT_MS: slow flash work delays no tap."""
        return not self.pos.request.open and ticks_diff(ticks_ms(), self._last_tap) >= _IDLE_COMPACT_MS

    def _compacting(self):
        """Called per page while the card table compacts, which holds the event loop for
        seconds on a large table (tens on an ESP32 at 100,000 cards, past the watchdog's
        8 s): the watchdog is fed while the compaction makes progress, at most once a
        second, so it does not reset the terminal in the middle of one, again and again."""
        now = ticks_ms()
        if self._wdt is not None and self._failed is None and ticks_diff(now, self._fed) >= _WDT_FEED_MS:
            self._fed = now
            self._wdt.feed()

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
            ("pos", self.pos_task()), ("health", self.health_task()),
            ("watchdog", self.watchdog_task()))]
        for n, c in self.extra_tasks():
            tasks.append(asyncio.create_task(self._guard(n, c)))
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

        self.mqtt = MQTTClient(self.cfg.terminal_id, m["host"], m["port"], m["user"], m["password"],
                               keepalive=m["keepalive"], backoff_max_ms=m["backoff_max_ms"], log=self.log)
        limit = None
        if self.cfg.site_key is not None:
            # A record leaves the journal only once the synced table includes it too:
            # pending purchases are rebuilt from the journal above table.included_seq.
            limit = self._included_seq
        self.feed = JournalFeed(self.journal, ack_limit=limit, log=self.log)
        self.uplink = Uplink(self.feed, self.mqtt, self.cfg.site, self.cfg.terminal_id, batch_size=m["batch"],
                             window=m["window"], ack_timeout_ms=m["ack_timeout_ms"], clock=self.board.now,
                             log=self.log, on_ack=self._on_uplink_ack, key=self.cfg.site_key)
        self.mqtt.will = self.uplink.will()
        tasks = (("mqtt", self._network()), ("uplink", self.uplink.run()))
        if self.cfg.site_key is None:
            return tasks
        from cpos.net.sync import Sync

        self.sync = Sync(self.table, self.mqtt, self.cfg.site, self.cfg.terminal_id, self.cfg.site_key,
                         on_included=self._on_included, log=self.log, clock=self.board.now)
        return tasks + (("sync", self.sync.run()),)

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
        self.report("acked", watermark=watermark, pending=self.uplink.pending())


def _hex(uid):
    return "".join("%02X" % b for b in uid)
