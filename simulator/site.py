"""A simulated site's network: its mosquitto broker and the reference backend.

Owns, for one simulator run with the uplink on: a real broker (simulator/broker.py:
per-terminal users and ACL on a free loopback port), the backend's ledger seeded from
the scenario (accounts, cards, places, limits, terminals), the backend service in this
process's event loop (with the downlink: a fresh site master secret each run; each
terminal's config gets only its own derived `keys`), the site events of a scenario (broker or backend down / up), the
terminals' `mqtt` config, waiting for every journal to drain, and the exactly-once
check of the ledger against what the tills heard.
"""
import asyncio
import os
import secrets

from cpos import rules
from cpos.net import messages
from backend import Backend, Ledger, downlink
from backend.payments import PaymentProvider
from backend.broker_users import BACKEND_USER
from backend.site_keys import terminal_keys
from simulator.broker import Broker

STATUS_NAMES = {rules.ACTIVE: "active", rules.BLOCKED: "blocked", rules.REPLACED: "replaced"}


class Site:
    def __init__(self, scenario, workdir, ack_timeout_ms=3000, batch=messages.RECOMMENDED_BATCH, clock=None,
                 tls=False):
        self.scenario = scenario
        # The scenario's clock (UTC seconds), which the terminals run on too: every row the
        # ledger stamps (opening balances, top-ups, ...) is on the purchases' time line.
        self.clock = clock or (lambda: float(scenario.start))
        self.dir = os.path.join(workdir, "site")
        self.numbers = [t["no"] for t in scenario.terminals]
        self.broker = Broker(os.path.join(self.dir, "broker"), site=scenario.site, terminals=self.numbers, tls=tls)
        self.ledger = None
        self.backend = None
        self._task = None
        self.ack_timeout_ms = ack_timeout_ms
        self.batch = batch
        self.site_key = secrets.token_bytes(32)  # the site's master secret, fresh per run
        self.outages = []  # (what, state, monotonic time) as they happened
        self.payments = None

    # -- set-up --------------------------------------------------------------------
    def start(self):
        """Broker up, ledger seeded, payment cards stored (call before the terminals boot)."""
        self.broker.start()
        self.ledger = Ledger(os.path.join(self.dir, "ledger.db"), synchronous="NORMAL", clock=self.clock)
        self._seed()
        self.payments = os.path.join(self.dir, "payments.db")
        provider = PaymentProvider(self.payments)
        for acc, a in self.scenario.accounts.items():
            if a["topup_kr"]:  # the parent's stored payment card, with room for many top-ups
                provider.add_card("sim-card-%d" % acc, "2099-12", 100000000)
        provider.close()

    def _seed(self):
        sc, led = self.scenario, self.ledger
        for acc, a in sc.accounts.items():
            led.add_account("account %d" % acc, a["balance"], account_id=acc, t=sc.start)
            for place in (rules.PLACE_SCHOOL, rules.PLACE_CLUB):
                led.allow_place(acc, place, bool(a["places"] & (1 << place)))
                for window in range(rules.WINDOWS):
                    v = a["limits"][rules.slot(place, window)]
                    if v != rules.NO_LIMIT:
                        led.set_limit(acc, place, window, v)
            if a["topup_kr"]:
                led.enrol_topup(acc, a["topup_kr"], "sim-card-%d" % acc)
        for c in sc.cards:
            led.add_card(c["uid"].hex(), c["number"], c["account"], STATUS_NAMES[c["status"]])
        for t in sc.terminals:
            led.add_terminal(t["no"], sc.site, _PLACE[t["place"]], _KIND[t["kind"]])
            downlink.provisioned(led, t["no"], 1)  # simulator.run installs this state as table v1

    def terminal_config(self, spec):
        """What a terminal's config.json needs to reach this site's broker."""
        tid = messages.terminal_id(spec["no"])
        down, up = terminal_keys(self.site_key, tid, 0)
        mqtt = {"host": self.broker.host, "port": self.broker.port, "password": self.broker.users[tid],
                "keepalive": 5, "batch": self.batch, "ack_timeout_ms": self.ack_timeout_ms,
                "backoff_max_ms": 4000}  # a quick comeback after a simulated outage
        if self.broker.tls_port is not None:  # the site's TLS listener, this terminal's client certificate
            del mqtt["password"]
            mqtt.update(port=self.broker.tls_port, tls=dict(self.broker.terminal_tls(tid), server_name="localhost"))
        return {"terminal_id": tid, "site": self.scenario.site, "keys": {"down": down.hex(), "up": up.hex()},
                "mqtt": mqtt}

    # -- the backend -------------------------------------------------------------------
    def backend_up(self):
        if self._task is not None and not self._task.done():
            return False
        self.backend = Backend(self.ledger, self.broker.host, self.broker.port, BACKEND_USER,
                               self.broker.users[BACKEND_USER], payments=self.payments,
                               site_keys={self.scenario.site: self.site_key})
        self._task = asyncio.ensure_future(self.backend.run())
        return True

    async def backend_down(self):
        if self._task is None or self._task.done():
            return False
        try:
            await asyncio.wait_for(self.backend.stop(), 2)  # DISCONNECT, end of run()
        except (asyncio.TimeoutError, OSError):
            pass
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self.backend.client.abort()
        return True

    async def event(self, kind, state):
        """A scenario's site event: `broker` or `backend` goes `down` or `up`."""
        loop = asyncio.get_event_loop()
        if kind == "broker":
            if state == "down":
                await loop.run_in_executor(None, self.broker.stop)
            elif not self.broker.running():
                await loop.run_in_executor(None, self.broker.start)
        elif state == "down":
            await self.backend_down()
        else:
            self.backend_up()
        self.outages.append((kind, state, loop.time()))

    async def stop(self):
        await self.backend_down()
        self.broker.stop()
        if self.ledger is not None:
            self.ledger.close()

    # -- after the run -------------------------------------------------------------------
    async def drained(self, journals, timeout=60.0):
        """Wait until the ledger holds every record of every terminal's journal.
        `journals()` -> {terminal number: [seq, ...]}; True if it did in time."""
        loop = asyncio.get_event_loop()
        deadline = loop.time() + timeout
        while True:
            want = journals()
            if all(self.ledger.received_seqs(n) == seqs and self.ledger.watermark(n) >= (seqs[-1] if seqs else 0)
                   for n, seqs in want.items()):
                return True
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.2)

    def topups_pending(self):
        """Top-up triggers the backend has not answered yet (none when it runs no top-ups)."""
        if self.backend is None or self.backend.topups is None:
            return 0
        return self.ledger.db.execute("SELECT count(*) FROM topup_triggers "
                                      "WHERE status IN ('pending', 'inflight')").fetchone()[0]

    def topups(self):
        """(automatic top-ups booked, their sum in øre, triggers by status)."""
        rows = self.ledger.db.execute("SELECT count(*), coalesce(sum(amount), 0) FROM topup_attempts "
                                      "WHERE status = 'done'").fetchone()
        by = dict(self.ledger.db.execute("SELECT status, count(*) FROM topup_triggers GROUP BY status").fetchall())
        return rows[0], rows[1], by

    def check(self, heard, journals):
        """Problems (empty = good). `heard`: {terminal number: [seq, ...]} approvals the
        tills heard; `journals`: {terminal number: [record dicts]} read off the flash.
        Every journal record reached the ledger once; every approval the till heard is
        booked once; each account's withdrawals are exactly its approved records and its
        balance is its deposits minus its withdrawals."""
        led, problems = self.ledger, []
        spent = {}
        for n, recs in journals.items():
            tid = messages.terminal_id(n)
            if led.received_seqs(n) != [r["seq"] for r in recs]:
                problems.append("%s: the ledger's records differ from the journal's" % tid)
            booked = led.purchase_seqs(n)
            if len(booked) != len(set(booked)):
                problems.append("%s: a purchase is in the ledger twice" % tid)
            if booked != [r["seq"] for r in recs if r["reason"] == 0]:
                problems.append("%s: the ledger's purchases differ from the journal's approvals" % tid)
            missing = sorted(set(heard.get(n, ())) - set(booked))
            if missing:
                problems.append("%s: approvals %s are not in the ledger" % (tid, missing[:5]))
            for r in recs:
                if r["reason"] == 0:
                    spent[r["account"]] = spent.get(r["account"], 0) + r["amount"]
        rows = led.db.execute("SELECT account, sum(CASE type WHEN 'deposited' THEN amount ELSE 0 END), "
                              "sum(CASE type WHEN 'withdrawn' THEN amount ELSE 0 END) FROM ledger "
                              "GROUP BY account").fetchall()
        for acc, dep, wd in rows:
            if wd != spent.get(acc, 0):
                problems.append("account %d: ledger withdrawals %d, journals approved %d" % (acc, wd, spent.get(acc, 0)))
            if led.balance(acc) != dep - wd:
                problems.append("account %d: balance %d is not deposits - withdrawals" % (acc, led.balance(acc)))
        return problems


_PLACE = {"school": rules.PLACE_SCHOOL, "club": rules.PLACE_CLUB}
_KIND = {"till": rules.TILL, "vending": rules.VENDING}
