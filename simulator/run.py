"""Play a scenario against simulated terminals and report what happened, tap by tap.

Owns the run: building the unix-board bundle, provisioning each terminal's card table
from the scenario, starting the terminals, replaying the timeline in real time
(payment requests, taps, removals, power cuts, boots), pairing each tap with the
decision the POS received, and checking the journals afterwards: every approval the
POS heard is in the terminal's journal exactly once, and nothing is charged twice.
"""
import asyncio
import json
import os
import shutil
import tempfile
import time

from cpos import purchase, reasons, texts
from cpos.blockfile import BlockFile
from cpos.journal import Journal
from host_tools import bundle
from simulator import cardsync
from simulator import scenario as scen
from simulator.site import Site
from simulator.sntp_server import SNTPServer
from simulator.terminal import HEAP_CAP_KB, ScenarioClock, SimTerminal, micropython

# How long the simulated till waits for a reply while the terminal runs (a power cut
# ends the wait at once). Generous: on a loaded machine the MicroPython process may get
# little CPU, and a decision that comes late must not count as none (a real customer
# holds the card for as long). A reply that does not come starts the lost-reply procedure.
REPLY_TIMEOUT_S = 10.0
LOST_REPLY_TIMEOUT_S = 30.0  # the lost-reply procedure: a till waits longer before giving up


def shown(reason):
    """(Danish, English): the text a student saw on the display for a reason name."""
    code = reasons.NAMES.index(reason) if reason in reasons.NAMES else -1
    return texts.danish(code), texts.english(code)


class Tap:
    __slots__ = ("terminal", "uid", "card", "amount", "ref", "item", "placed_at", "at", "t", "decision", "reason",
                 "seq", "balance_after", "latency_ms", "device", "topup", "recovered")

    def __init__(self, terminal, uid, card, amount, ref, placed_at, item=None, at=None, t=None):
        self.terminal, self.uid, self.card, self.amount, self.ref = terminal, uid, card, amount, ref
        self.item = item
        self.placed_at = placed_at
        self.at = at  # seconds into the scenario (its events' `at` axis)
        self.t = t  # the scenario's clock, UTC seconds (the terminals' and the ledger's)
        self.decision = "pending"
        self.reason = None
        self.seq = None
        self.balance_after = None
        self.latency_ms = None
        self.device = {}
        self.topup = None  # the decision raised an automatic top-up trigger (from the firmware)
        self.recovered = False  # the decision was learned through CANCEL + LAST, not heard

    def as_json(self):
        da, en = shown(self.reason) if self.reason in reasons.NAMES else (None, None)
        return {"at": None if self.at is None else round(self.at, 3), "t": self.t,
                "terminal": self.terminal, "card": self.card, "uid": self.uid.hex().upper(),
                "ref": self.ref, "item": self.item, "amount": self.amount,
                "decision": self.decision, "reason": self.reason, "text_da": da, "text_en": en,
                "seq": self.seq, "balance_after": self.balance_after, "topup": self.topup,
                "tap_to_decision_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
                "device_us": self.device or None, "recovered_by_last": self.recovered}


class Run:
    def __init__(self, scenario, workdir=None, json_out=None, keep=False, quiet=False, progress=None):
        """`progress`: an observer (simulator/progress.py) told of taps and events as they
        happen; by default, unless `quiet`, plain lines."""
        self.scenario = scenario
        self.t_play = None  # clock.elapsed() when the timeline began (its `at` 0)
        self.site_events = []  # (at, what, state): broker/backend down/up, as played
        self.keep = keep or workdir is not None
        self.workdir = workdir or tempfile.mkdtemp(prefix="cpos-sim-")
        os.makedirs(self.workdir, exist_ok=True)
        # the world's time: terminals (through its file), ledger and SNTP server share it
        self.clock = ScenarioClock(scenario.start, os.path.join(self.workdir, "clock.json"))
        self.sntp = None  # the site's SNTP server on loopback (simulator/sntp_server.py)
        self.json_out = json_out
        self.quiet = quiet
        self.terminals = {}
        self.taps = []
        self.voids = []  # (terminal id, orig seq, reply line) of each `void` event (a till's VOID)
        self._open = {}  # terminal id -> (ref, amount, item) of the open request
        self._ref = 0
        self.reply_timeout_s = REPLY_TIMEOUT_S
        self._card_names = {c["uid"]: c["number"] for c in scenario.cards}
        self.site = None  # broker + backend, when the scenario has the uplink on
        self.drained = None  # after settle(): did every journal reach the ledger in time
        if progress is None and not quiet:
            from simulator.progress import PlainProgress

            progress = PlainProgress()
        self.progress = progress

    # -- set-up ------------------------------------------------------------------
    def _say(self, text):
        if self.progress is not None:
            self.progress.say(text)

    def at(self):
        """Seconds into the timeline (negative before it began)."""
        return self.clock.elapsed() - (self.t_play if self.t_play is not None else self.clock.elapsed())

    def _note(self, term_id, text):
        if self.progress is not None:
            self.progress.event(self.at(), term_id, text)

    def prepare(self, terminal_config=None, tls=False):
        """Build the bundle and provision every terminal (config, flash, card table).

        `terminal_config(spec)` may return settings that override a terminal's config.
        With the uplink on, the site's broker starts and its ledger is seeded first;
        `tls`: the terminals reach it over TLS with their client certificates.
        """
        self.sntp = SNTPServer(self.clock).start()
        time_user_config = terminal_config

        def terminal_config(spec):  # every terminal asks the site's SNTP server (docs/time.md)
            cfg = dict((time_user_config(spec) if time_user_config else None) or {})
            t = {"sntp": {"host": self.sntp.host, "port": self.sntp.port, "timeout_ms": 1000}, "retry_s": 1}
            t.update(cfg.pop("time", {}))
            cfg["time"] = t
            return cfg
        if self.scenario.uplink:
            self.site = Site(self.scenario, self.workdir, clock=self.clock, tls=tls)
            self.site.start()
            self._say("site %s: mosquitto on 127.0.0.1:%d, backend ledger %s" % (
                self.scenario.site, self.site.broker.port, self.site.ledger.path))
            user_config = terminal_config

            def terminal_config(spec):
                cfg = self.site.terminal_config(spec)
                mine = dict((user_config(spec) if user_config else None) or {})
                cfg["mqtt"].update(mine.pop("mqtt", {}))  # e.g. a smaller batch for a test
                cfg.update(mine)
                return cfg
        bdir = os.path.join(self.workdir, "bundle")
        manifest = bundle.build("unix", bdir)
        code_kb = (bundle.code_heap_cost(bdir, micropython()) + 1023) // 1024
        self._say("bundle %s for the unix board: %d files; code takes %d KB of heap on the unix port "
                  "(in flash on a frozen ESP32 image), so each terminal runs with %d KB"
                  % (manifest["version"], len(manifest["files"]), code_kb, HEAP_CAP_KB + code_kb))
        for spec in self.scenario.terminals:
            extra = terminal_config(spec) if terminal_config else None
            t = SimTerminal(spec, self.workdir, bdir, self.scenario.start, code_kb=code_kb, extra_config=extra,
                            clock=self.clock)
            t.prepare(lambda dev: cardsync.install_scenario(dev, self.scenario))
            self.terminals[spec["id"]] = t

    async def boot_all(self):
        if self.site is not None:
            self.site.backend_up()
        await asyncio.gather(*(t.boot() for t in self.terminals.values()))
        self._watchdogs = [asyncio.ensure_future(t.watchdog()) for t in self.terminals.values()]
        self._say("%d terminals up: %s" % (len(self.terminals), ", ".join(self.terminals)))

    async def start(self):
        self.prepare()
        await self.boot_all()

    async def stop(self):
        for w in getattr(self, "_watchdogs", []):
            w.cancel()
        for t in self.terminals.values():
            await t.stop()
        if self.site is not None:
            await self.site.stop()
        if self.sntp is not None:
            self.sntp.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the timeline -------------------------------------------------------------
    async def play(self):
        """Replay the timeline in real time; each terminal serves one customer at a time."""
        t0 = time.monotonic()
        self.t_play = self.clock.elapsed()
        if self.progress is not None:
            self.progress.start(self)
        lanes = {tid: [] for tid in self.terminals}
        site_events = []
        for ev in self.scenario.events:
            (site_events if ev["terminal"] is None else lanes[ev["terminal"]]).append(ev)
        try:
            await asyncio.gather(self._site_lane(site_events, t0),
                                 *(self._lane(self.terminals[tid], evs, t0) for tid, evs in lanes.items()))
        finally:
            if self.progress is not None:
                self.progress.stop()

    async def _site_lane(self, events, t0):
        for ev in events:
            delay = t0 + ev["at"] - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._note(None, "%s %s" % (ev["kind"], ev["state"]))
            self.site_events.append((self.at(), ev["kind"], ev["state"]))
            if ev["kind"] in scen.TIME_SITE_KINDS:
                self._time_event(ev)
            else:
                await self.site.event(ev["kind"], ev["state"])

    def _time_event(self, ev):
        """A site event about time: the SNTP server goes silent or answers again, lies by N
        seconds (`clock_skew`, 0 = honest), or the world's time moves forward (`advance`)."""
        kind = ev["kind"]
        if kind == "ntp_down":
            self.sntp.up = False
        elif kind == "ntp_up":
            self.sntp.up = True
        elif kind == "clock_skew":
            self.sntp.skew = ev["state"]
        elif kind == "advance":
            self.clock.advance(ev["state"])

    async def settle(self, timeout=60.0):
        """After the timeline: with the uplink on, bring the broker and backend back if a
        scenario left them down and wait until every journal record is in the ledger."""
        if self.site is None:
            return True
        if not self.site.broker.running():
            self.site_events.append((self.at(), "broker", "up"))
            await self.site.event("broker", "up")
        if self.site.backend_up():
            self.site_events.append((self.at(), "backend", "up"))
        numbers = {tid: t.spec["no"] for tid, t in self.terminals.items()}
        t_end = time.monotonic() + timeout
        self.drained = await self.site.drained(
            lambda: {numbers[tid]: [r["seq"] for r in self.journal_records(tid)] for tid in self.terminals}, timeout)
        # ... and every running terminal has heard the acknowledgement of its last record
        while self.drained and time.monotonic() < t_end:
            if all(self.last_ack(tid) >= (self.journal_records(tid) or [{"seq": 0}])[-1]["seq"]
                   for tid, t in self.terminals.items() if t.running()):
                break
            await asyncio.sleep(0.1)
        else:
            if self.drained:
                self.drained = False
        # ... and the backend has answered the top-up triggers those records carried
        while self.drained and self.site.topups_pending() and time.monotonic() < t_end:
            await asyncio.sleep(0.1)
        return self.drained

    def last_ack(self, term_id):
        """The newest acknowledgement the terminal's firmware reported applying (0 if none)."""
        for e in reversed(self.terminals[term_id].events):
            if e.get("ev") == "acked":
                return e["watermark"]
        return 0

    async def _lane(self, term, events, t0):
        for ev in events:
            delay = t0 + ev["at"] - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = ev["kind"]
            if kind == "pay":
                await self._pay(term, ev)
            elif kind == "tap":
                await self._tap(term, ev)
            elif kind == "remove":
                term.remove()
            elif kind == "rtc_lost":
                self._note(term.id, "battery RTC lost")
                term.rtc_lost()
            elif kind == "clock_skew":
                self._note(term.id, "battery RTC skewed %+d s" % ev["seconds"])
                term.rtc_skew(ev["seconds"])
            elif kind == "power_cut":
                self._note(term.id, "power cut")
                await term.power_cut()
                self._open.pop(term.id, None)
            elif kind == "boot":
                self._note(term.id, "boot")
                await term.boot()
            elif kind == "reboot":  # the reset button or a technician: RAM lost, flash kept, up again
                self._note(term.id, "reboot")
                await term.power_cut()
                self._open.pop(term.id, None)
                await term.boot()
            elif kind == "void":
                await self._void(term)
            elif kind == "cancel":
                req = self._open.pop(term.id, None)
                if req:
                    fut = term.expect(req[0])
                    await term.send("CANCEL %s" % req[0])
                    await self._reply(fut)

    async def _reply(self, fut, timeout=None, term=None):
        """(time, line) of the reply, or (None, None) after `timeout` s (default
        `self.reply_timeout_s`) or as soon as `term` (when given) stops running."""
        deadline = time.monotonic() + (self.reply_timeout_s if timeout is None else timeout)
        while not fut.done():
            left = deadline - time.monotonic()
            if left <= 0 or (term is not None and not term.running()):
                fut.cancel()  # a reply that still comes lands among the strays
                return None, None
            await asyncio.wait([fut], timeout=min(0.1, left))
        return fut.result()

    async def _pay(self, term, ev):
        if term.mdb:  # a vending machine on MDB: the choice waits for the card (simulator/vmc.py)
            self._ref += 1
            self._open[term.id] = ("m%d" % self._ref, ev["amount"], ev.get("item", ""), ev.get("outcome", "success"))
            return
        if not term.running() or term.pos_writer is None:
            return
        if term.id in self._open:  # the last customer walked off: cancel before the next
            ref = self._open.pop(term.id)[0]
            fut = term.expect(ref)
            await term.send("CANCEL %s" % ref)
            await self._reply(fut)
        self._ref += 1
        ref = "r%d" % self._ref
        verb = "PAY" if term.spec["kind"] == "till" else "VEND"
        fut = term.expect(ref)
        await term.send("%s %s %d %s" % (verb, ref, ev["amount"], ev.get("item", "")))
        _, line = await self._reply(fut)
        if line == "WAIT %s" % ref:
            self._open[term.id] = (ref, ev["amount"], ev.get("item", ""))
        else:
            self._note(term.id, "request %s not opened: %r" % (ref, line))

    async def _void(self, term):
        """The till voids its newest approved sale not voided yet (docs/pos-protocol.md, VOID)."""
        done = set(seq for tid, seq, _ in self.voids if tid == term.id)
        sales = [t.seq for t in self.taps if t.terminal == term.id and t.decision == "approved" and t.seq not in done]
        if not sales or not term.running() or term.pos_writer is None:
            self._note(term.id, "void: no sale to void")
            return
        self._ref += 1
        ref = "v%d" % self._ref
        fut = term.expect(ref)
        await term.send("VOID %s %d" % (ref, sales[-1]))
        _, line = await self._reply(fut)
        self.voids.append((term.id, sales[-1], line))
        self._note(term.id, "void of %d: %s" % (sales[-1], line))

    async def _tap(self, term, ev):
        req = self._open.pop(term.id, None)
        uid = ev["uid"]
        tap = Tap(term.id, uid, self._card_names.get(uid, uid.hex().upper()),
                  req[1] if req else 0, req[0] if req else None, time.monotonic(),
                  item=req[2] if req else None, at=self.at(), t=int(self.clock()))
        self.taps.append(tap)
        if not term.running():
            tap.decision = "terminal_off"
            self._tapped(tap)
            return
        if term.mdb and req:
            from simulator.mdb_customers import customer

            out = await customer(term, tap, uid, req[3], term.place, term.remove)
            if out not in ("sold", "denied"):
                self._note(term.id, "vending machine: %s" % out)
            self._tapped(tap)
            return
        n_events = len(term.events)
        fut = term.expect(req[0]) if req else None
        term.place(uid)
        try:
            if req:
                at, line = await self._reply(fut, term=term)
                if line is None:  # no decision heard in time (a busy or dying terminal)
                    at, line = await self._lost_reply(term, tap)
                self._decided(tap, term, at, line)
                await self._device_timings(tap, term)
            else:
                tap.decision = "balance"
                await asyncio.sleep(0.4)
                for e in term.events[n_events:]:
                    if e.get("ev") == "balance":
                        tap.reason = e["reason"]
                        tap.balance_after = e["balance"]
                        tap.latency_ms = (e["_t"] - tap.placed_at) * 1000
                        break
            await asyncio.sleep(max(0.0, ev.get("hold", 0.3) - (time.monotonic() - tap.placed_at)))
        finally:
            term.remove()
        self._tapped(tap)

    def _tapped(self, tap):
        if self.json_out is not None:
            self.json_out.write(json.dumps(tap.as_json()) + "\n")
            self.json_out.flush()
        if self.progress is not None:
            self.progress.tap(tap)

    async def _lost_reply(self, term, tap):
        """What a till does when the decision on its request did not come (docs/pos-protocol.md,
        "After a lost reply"): CANCEL the request, then ask LAST and compare with the seq of
        the last APPROVED it heard. Returns (time, line) as if the decision had been heard:
        the late reply itself if it arrives meanwhile, an APPROVED line rebuilt from LAST when
        the purchase was recorded, or (None, None): not paid, or the terminal is gone."""
        if not term.running() or term.pos_writer is None:
            return None, None
        fut = term.expect(tap.ref)
        await term.send("CANCEL %s" % tap.ref)
        at, line = await self._reply(fut, LOST_REPLY_TIMEOUT_S, term)
        if line is None or line.startswith(("CANCELLED ", "EXPIRED ")):
            return None, None  # still open when cancelled: nothing recorded, not paid
        if line.startswith(("APPROVED ", "REFUSED ")):
            return at, line  # the decision itself, late
        fut = term.expect_last()
        await term.send("LAST")
        at, last = await self._reply(fut, LOST_REPLY_TIMEOUT_S, term)
        heard = max([t.seq for t in self.taps if t.terminal == term.id and t.decision == "approved"] or [0])
        parts = (last or "").split()
        if len(parts) == 6 and parts[1] != "-" and int(parts[1]) > heard and parts[4] == "approved":
            tap.recovered = True
            return None, "APPROVED %s %s %s %s" % (tap.ref, parts[1], parts[2], parts[3])
        return None, None

    def _decided(self, tap, term, at, line):
        if line is None:
            tap.decision = "no_reply"
            return
        if at is not None:  # None: learned through LAST, no latency to tell
            tap.latency_ms = (at - tap.placed_at) * 1000
        parts = line.split()
        if parts[0] == "APPROVED" and parts[1] == tap.ref:
            tap.decision, tap.reason = "approved", "approved"
            tap.seq, tap.balance_after = int(parts[2]), int(parts[4])
        elif parts[0] == "REFUSED" and parts[1] == tap.ref:
            tap.decision, tap.reason = "refused", parts[2]
        else:
            tap.decision, tap.reason = "unexpected", line

    async def _device_timings(self, tap, term):
        """The firmware's own timing line for this tap (stdout may trail the POS reply)."""
        for _ in range(20):
            for e in reversed(term.events):
                if e.get("ev") == "decision" and e.get("ref") == tap.ref:
                    tap.device = {k: e[k] for k in ("lookup_us", "rules_us", "journal_us")}
                    tap.topup = bool(e.get("topup"))
                    return
            await asyncio.sleep(0.01)

    # -- after the run ------------------------------------------------------------
    def _read_journal(self, term_id, fn):
        """fn(journal) over a terminal's journal file, recovered and read-only, on CPython."""
        spec = self.terminals[term_id].config()["storage"]["journal"]
        dev = BlockFile(spec["file"], spec["size"], readonly=True)  # the firmware may be running
        try:
            j = Journal(dev)
            j.recover()
            return fn(j)
        finally:
            dev.close()

    def journal_records(self, term_id):
        """Every valid record still in a terminal's journal file."""
        def records(j):
            buf = bytearray(purchase.SIZE)
            out, seq = [], 1
            while True:
                s = j.read(seq, buf, True)
                if s is None:
                    return out
                out.append(purchase.decode(buf))
                seq = s + 1
        return self._read_journal(term_id, records)

    def journal_survey(self, term_id):
        """The journal's slots (cpos.journal.Journal.survey): purchase and ack records."""
        return self._read_journal(term_id, lambda j: j.survey())

    def check(self):
        """Invariants over the whole run; returns a list of violations (empty = good)."""
        problems = []
        for tid in self.terminals:
            recs = self.journal_records(tid)
            seqs = [r["seq"] for r in recs]
            if len(seqs) != len(set(seqs)) or seqs != sorted(seqs):
                problems.append("%s: journal sequence numbers repeat or go backwards" % tid)
            by_seq = {r["seq"]: r for r in recs}
            for tap in self.taps:
                if tap.terminal != tid or tap.decision != "approved":
                    continue
                r = by_seq.get(tap.seq)
                if r is None:
                    problems.append("%s: approval seq %s is not in the journal" % (tid, tap.seq))
                elif r["amount"] != tap.amount or r["uid"] != tap.uid or r["reason"] != reasons.APPROVED:
                    problems.append("%s: journal record %d differs from the approval" % (tid, tap.seq))
            approved_seqs = [t.seq for t in self.taps if t.terminal == tid and t.decision == "approved"]
            if len(approved_seqs) != len(set(approved_seqs)):
                problems.append("%s: one journal record approved two taps" % tid)
        if self.site is not None and self.drained is not None:
            if not self.drained:
                problems.append("uplink: the journals did not drain into the ledger in time")
            heard, journals = {}, {}
            for tid, term in self.terminals.items():
                n = term.spec["no"]
                heard[n] = [t.seq for t in self.taps if t.terminal == tid and t.decision == "approved"]
                journals[n] = self.journal_records(tid)
            problems += self.site.check(heard, journals)
        return problems

    def journal_breakdown(self, term_id, recs=None):
        """Why a terminal's journal holds more records than its till heard approvals:
        (approvals heard, approved records the till did not hear (a power cut before the
        answer, or no answer even to the lost-reply procedure), refusals journaled only to carry a top-up
        trigger)."""
        recs = self.journal_records(term_id) if recs is None else recs
        heard = set(t.seq for t in self.taps if t.terminal == term_id and t.decision == "approved")
        approved = [r for r in recs if r["reason"] == reasons.APPROVED]
        unheard = [r for r in approved if r["seq"] not in heard]
        triggers = [r for r in recs if r["reason"] not in (reasons.APPROVED, reasons.REVERSED)]
        return len(approved) - len(unheard), len(unheard), len(triggers)

    def summary(self):
        """(text, problems): per terminal, the site, refusals with their texts, top-ups,
        why journal records and approvals differ, the uplink and the invariants."""
        taps = self.taps
        lines = ["scenario %r: %d taps on %d terminals" % (self.scenario.name, len(taps), len(self.terminals))]
        n_rec = n_heard = n_unheard = n_trig = 0
        for tid, term in self.terminals.items():
            mine = [t for t in taps if t.terminal == tid]
            approved = [t for t in mine if t.decision == "approved"]
            refused = [t for t in mine if t.decision == "refused"]
            lat = sorted(t.latency_ms for t in mine if t.latency_ms is not None and t.decision in ("approved", "refused"))
            recs = self.journal_records(tid)
            heard, unheard, trig = self.journal_breakdown(tid, recs)
            n_rec, n_heard, n_unheard, n_trig = n_rec + len(recs), n_heard + heard, n_unheard + unheard, n_trig + trig
            lines.append("  %-8s %-7s %4d taps  %4d approved %10s kr  %4d refused%s" % (
                tid, term.spec["kind"], len(mine), len(approved), "%.2f" % (sum(t.amount for t in approved) / 100.0),
                len(refused), _others(mine)))
            lines.append("           tap-to-decision p50 %s, p99 %s; journal holds %d records; "
                         "boots %d, power cuts %d, watchdog resets %d" % (
                             "%.1f ms" % _pct(lat, 50) if lat else "-", "%.1f ms" % _pct(lat, 99) if lat else "-",
                             len(recs), term.boots, term.power_cuts, term.watchdog_resets))
        approved = [t for t in taps if t.decision == "approved"]
        refused = [t for t in taps if t.decision == "refused"]
        lines.append("site: %d approved, revenue %.2f kr; %d refused%s" % (
            len(approved), sum(t.amount for t in approved) / 100.0, len(refused), _others(taps)))
        if refused:
            lines.append("refusals by reason, with the text the student saw (Danish / English):")
            by = {}
            for t in refused:
                by.setdefault(t.reason, []).append(t.terminal)
            for reason, where in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                da, en = shown(reason)
                per = ", ".join("%s %d" % (tid, where.count(tid)) for tid in self.terminals if tid in where)
                lines.append("  %4d  %-43s %-36s (%s: %s)" % (len(where), da, en, reason, per))
        n_rev = n_rec - n_heard - n_unheard - n_trig
        lines.append("journal records %d = %d approvals the tills heard + %d approved but not heard by the till "
                     "(a power cut before the answer, or no answer even to LAST) + %d refusals journaled only to carry an "
                     "automatic top-up trigger to the backend%s" % (
                         n_rec, n_heard, n_unheard, n_trig, " + %d reversals (voids, failed vends)" % n_rev if n_rev else ""))
        if self.voids:
            ok = sum(1 for _, _, line in self.voids if line and line.startswith("VOIDED"))
            lines.append("voids: %d sent by the tills, %d reversed, %d refused or unanswered" % (
                len(self.voids), ok, len(self.voids) - ok))
        problems = self.check()
        if self.site is not None and self.drained is not None:
            led = self.site.ledger
            n_rec = sum(len(led.received_seqs(t.spec["no"])) for t in self.terminals.values())
            n_buy = sum(len(led.purchase_seqs(t.spec["no"])) for t in self.terminals.values())
            outages = ", ".join("%s %s at %+.1f s" % (what, state, at) for at, what, state in self.site_events)
            lines.append("uplink: %d journal records in the backend ledger (%d purchases), journals %s; "
                         "site events: %s" % (n_rec, n_buy, "drained" if self.drained else "NOT drained",
                                              outages or "none"))
            n_top, top_sum, by = self.site.topups()
            if by:
                lines.append("automatic top-up: %d triggers from the tills (%s); %d charged to stored payment "
                             "cards, %.2f kr deposited" % (sum(by.values()), ", ".join("%s %d" % kv for kv in sorted(by.items())),
                                                          n_top, top_sum / 100.0))
            else:
                lines.append("automatic top-up: no triggers")
        what = "every approval journaled exactly once"
        if self.site is not None and self.drained is not None:
            what += ", and in the backend ledger exactly once; each account's balance is its deposits minus its approved purchases"
        lines.append("invariants: " + ("all hold (%s)" % what if not problems
                                       else "VIOLATED: " + "; ".join(problems)))
        return "\n".join(lines), problems


def _others(taps):
    """`, other: terminal off 2, no reply 1` for taps that got neither approval nor refusal."""
    counts = {}
    for t in taps:
        if t.decision not in ("approved", "refused"):
            counts[t.decision] = counts.get(t.decision, 0) + 1
    if not counts:
        return ""
    return "; other: " + ", ".join("%s %d" % (k.replace("_", " "), v) for k, v in sorted(counts.items()))


def _pct(values, p):
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


async def run_scenario(scenario, workdir=None, json_out=None, quiet=False, progress=None):
    run = Run(scenario, workdir, json_out, quiet=quiet, progress=progress)
    try:
        await run.start()
        await run.play()
        await asyncio.sleep(0.2)
        await run.settle()
        text, problems = run.summary()
    finally:
        await run.stop()
    return run, text, problems
