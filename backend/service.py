"""The reference backend's MQTT side: batches in, acknowledgements out.

Owns the backend's one broker connection (cpos.net.mqtt on CPython, persistent session,
QoS 1 subscription to every terminal's uplink) and the order that makes delivery
exactly-once in effect: apply the batch in one SQLite transaction, commit, publish the
terminal's watermark (retained, QoS 1), and only then PUBACK the batch to the broker.
A crash anywhere in between leaves either nothing applied (the broker or the terminal
resends) or the batch applied without an ack (the resent batch is a no-op and is acked).
Records that conflict with a different record under the same (terminal, seq) are kept
by the ledger (`uplink_conflicts`), logged here as CONFLICT, and acknowledged.

Automatic top-up: with `payments` (the simulated provider's SQLite file), a batch that
brought new top-up triggers, once acknowledged, wakes a worker thread that runs the
TopupProcessor (backend/topup.py) on its own connection to the ledger, so a
slow payment provider never delays an ack. At start the worker finishes any attempt a
previous run left in flight, then answers triggers still pending.

With site keys it also runs the downlink (backend.downlink): sync requests
(`up/sync`) are answered with deltas or a snapshot and a `current`; after each batch, and
every `poll_ms` for changes other processes made to the ledger (the portal), new changes
go out as deltas to every terminal with a stream.
"""
import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from backend import broker_users, trust
from cpos import log as logmod
from cpos.net import signing
from cpos.net import messages as protocol
from cpos.net.mqtt import Fatal, MQTTClient


def _seqs(seqs, most=10):
    """`1, 2, 3` or `1, 2, ... (25 in all)`: seqs for a log line of bounded length."""
    if len(seqs) <= most:
        return ", ".join(map(str, seqs))
    return "%s, ... (%d in all)" % (", ".join(map(str, seqs[:most])), len(seqs))


class Backend:
    def __init__(self, ledger, host, port, user, password, client_id="cpos-backend",
                 crash_after_apply=0, log=None, payments=None, topup_threshold=None, crash_after_charge=False,
                 site_keys=None, poll_ms=50, clock=None, sync_limit=(6, 1.0), health_limit=(6, 0.5),
                 limit_clock=time.monotonic, coalesce_ms=500, one_connection=False):
        self.ledger = ledger
        self.clock = clock or ledger.clock  # UTC seconds: the ack's time, top-ups' bookings
        self.log = log or (lambda m: None)
        mlog = logmod.Log(self.log)
        self.client = MQTTClient(client_id, host, port, user, password, keepalive=30, clean=False,
                                 backoff_min_ms=100, backoff_max_ms=2000,
                                 max_packet=protocol.MAX_PAYLOAD + 1024, log=mlog)
        self.client.subscribe(protocol.ROOT + "+/+/" + protocol.BATCH, 1, self._on_batch)
        # Everything that carries no money (sync requests, health, status) arrives on a second
        # connection: a terminal flooding those topics fills that stream, never the one the
        # batches queue in, so the other terminals' acknowledgements do not wait behind it.
        # Its own login (the broker binds a client id to the login), the same password.
        # (`one_connection`: everything on the first, the old way; the flood benchmark's naive case.)
        self.control = self.client if one_connection else MQTTClient(
            client_id + "-ctl", host, port, broker_users.control_user(user), password, keepalive=30, clean=True,
                                  backoff_min_ms=100, backoff_max_ms=2000,
                                  max_packet=protocol.MAX_PAYLOAD + 1024, log=mlog)
        self.control.subscribe(protocol.ROOT + "+/+/" + protocol.STATUS, 1, self._on_status)
        self.control.subscribe(protocol.ROOT + "+/+/" + protocol.HEALTH, 0, self._on_health)
        self.downlink = None
        self.poll_ms = poll_ms
        # Per-terminal budgets for the messages that cost work and carry no money: (burst, per s),
        # in real (monotonic) seconds: they protect the backend's CPU, whatever a scenario's clock says.
        self.sync_limit = trust.RateLimit(sync_limit[0], sync_limit[1], limit_clock)
        self.health_limit = trust.RateLimit(health_limit[0], health_limit[1], limit_clock)
        self.refused_records = 0
        if site_keys:
            from backend.downlink import Downlink

            # Balance-like changes gather for coalesce_ms (a lunch rush changes one account
            # several times a second); blocks and new cards go at once (backend.downlink).
            self.downlink = Downlink(ledger, site_keys, log=self.log, coalesce_s=coalesce_ms / 1000.0)
            self._dl_lock = asyncio.Lock()  # messages leave in the order their versions were made
            self.control.subscribe(protocol.ROOT + "+/+/" + protocol.SYNC_UP, 1, self._on_sync)
        self.crash_after_apply = crash_after_apply  # fault injection: SIGKILL self after the Nth commit
        self.applied = 0
        self.rejected = 0
        self.unsigned = 0  # batches refused for a missing or wrong uplink tag
        self.conflicts = 0  # records kept in uplink_conflicts by this process
        self.topups = None
        if payments is not None:
            self._start_topups(payments, topup_threshold, crash_after_charge)

    def _start_topups(self, payments, threshold, crash_after_charge):
        from backend.ledger import Ledger
        from backend.payments import PaymentProvider
        from backend.topup import TopupProcessor

        if self.ledger.path == ":memory:":
            raise ValueError("automatic top-up needs the ledger in a file (the worker opens its own connection)")
        kw = {} if threshold is None else {"threshold": threshold}
        provider = PaymentProvider(payments)
        if crash_after_charge:  # fault injection: SIGKILL self once a charge is taken, before it is booked
            charge = provider.charge

            def charge_then_die(*args):
                charge(*args)
                os.kill(os.getpid(), signal.SIGKILL)

            provider.charge = charge_then_die
        self.topups = TopupProcessor(Ledger(self.ledger.path, clock=self.clock), provider, clock=self.clock,
                                     log=self.log, **kw)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="topup")
        self._topup_queued = False
        self._pool.submit(self._topup_work, True)

    def _kick_topups(self):
        """Have the worker look at pending triggers (at most one run queued behind a running one)."""
        if not self._topup_queued:
            self._topup_queued = True
            self._pool.submit(self._topup_work, False)

    def _topup_work(self, recover):
        self._topup_queued = False
        try:
            if recover:
                self.topups.recover()
            self.topups.process_pending()
        except Exception as e:  # logged; the triggers stay pending for the next run
            self.log("backend: top-up processing failed: %s" % e)

    async def run(self):
        tasks = [] if self.control is self.client else [asyncio.create_task(self.control.run())]
        if self.downlink is not None:
            tasks.append(asyncio.create_task(self._poll()))
        try:
            await self.client.run()
        finally:
            for t in tasks:
                t.cancel()

    async def _downlink(self, make):
        """Make messages (`make()`, which assigns versions) and publish them, one caller at
        a time, so that no terminal sees version n+1 before version n."""
        async with self._dl_lock:
            for t, payload in make():
                await self.client.publish(t, payload, qos=1, retain=False, wait=False)

    async def _poll(self):
        """Changes made by other processes (the portal) reach terminals within poll_ms."""
        while True:
            await asyncio.sleep(self.poll_ms / 1000)
            if self.client.connected:
                try:
                    await self._downlink(self.downlink.pump)
                except Exception as e:  # logged; the changes stay unsent and are tried again
                    self.log("backend: downlink pump failed: %s" % e)

    def _over(self, limit, what, tid):
        """True (and logged, the 1st and then every 100th) when `tid` is over its budget."""
        if limit.allow(tid):
            return False
        n = limit.dropped[tid]
        if n == 1 or n % 100 == 0:
            self.log("backend: SECURITY: %s over its %s budget (%d at once, %g/s): dropped, %d so far"
                     % (tid, what, limit.burst, limit.per_s, n))
        return True

    async def _on_sync(self, topic, payload, retained):
        await asyncio.sleep(0)  # a flood on this connection must not starve the batches' connection
        try:
            site, tid, _ = protocol.split_topic(topic)
            protocol.decode_sync(payload)
        except protocol.ProtocolError as e:
            self.log("backend: SECURITY: bad sync request on %s: %s" % (topic, e))
            return
        if self._over(self.sync_limit, "sync request", tid):
            return
        try:
            await self._downlink(lambda: self.downlink.on_request(site, tid, payload))
        except protocol.ProtocolError as e:
            self.log("backend: SECURITY: sync request on %s refused: %s" % (topic, e))

    async def _on_batch(self, topic, payload, retained):
        try:
            site, tid, _ = protocol.split_topic(topic)
        except protocol.ProtocolError as e:
            self.log("backend: bad topic %r: %s" % (topic, e))
            return
        if self.downlink is not None and site in self.downlink.keys:
            # docs/security.md: only the terminal's own uplink key books a purchase; broker
            # credentials alone (or another terminal's keys) cannot.
            try:
                payload = self.downlink.keys.check_uplink(site, tid, topic.encode(), payload)
            except (signing.DownlinkError, KeyError, protocol.ProtocolError) as e:
                self.rejected += 1
                self.unsigned += 1
                self.ledger.reject(tid, "uplink signature: %s" % (e.why if hasattr(e, "why") else e), payload[:4096])
                self.log("backend: SECURITY: refused batch on %s: uplink signature: %s; nothing booked, not acknowledged"
                         % (topic, e.why if hasattr(e, "why") else e))
                return
        try:
            res = self.ledger.apply_batch(site, tid, payload)
        except protocol.ProtocolError as e:
            # Malformed: nothing applied, nothing acked; kept for an operator to look at.
            self.rejected += 1
            self.ledger.reject(tid, str(e), payload)
            self.log("backend: SECURITY: rejected batch from %s: %s" % (tid, e))
            return
        except Exception as e:  # the database failed: no PUBACK, the broker redelivers
            self.log("backend: apply failed: %s" % e)
            raise Fatal(str(e))
        self.applied += 1
        if res.refused:
            self.refused_records += len(res.refused)
            self.log("backend: SECURITY: %s: %d record(s) refused, kept for staff, not booked "
                     "(`python -m backend refused`): %s" % (
                         tid, len(res.refused), "; ".join("seq %d: %s" % r for r in res.refused[:5])))
        if res.conflicts:
            self.conflicts += res.conflicts
            self.log("backend: CONFLICT: %s sent %d record(s) under seq(s) already holding different records "
                     "(journal wiped or replaced?): %s; kept in uplink_conflicts, not booked, acknowledged; "
                     "list them with `python -m backend conflicts`"
                     % (tid, res.conflicts, _seqs(res.conflict_seqs)))
        if self.crash_after_apply and self.applied >= self.crash_after_apply:
            os.kill(os.getpid(), signal.SIGKILL)  # committed, not acknowledged: the fault test
        ack = protocol.encode_ack(res.watermark, int(self.clock()))
        t_ack = protocol.topic(site, tid, protocol.ACK)
        if self.downlink is not None and site in self.downlink.keys:
            ack = signing.seal_json(self.downlink.keys.down(site, tid), t_ack.encode(), ack)  # signed like every downlink
        await self.client.publish(t_ack, ack, qos=1, retain=True, wait=False)
        if self.downlink is not None:
            await self._downlink(self.downlink.pump)  # the new balances and included_seq
        if res.triggers and self.topups is not None:
            self._kick_topups()

    async def _on_status(self, topic, payload, retained):
        await asyncio.sleep(0)
        try:
            site, tid, _ = protocol.split_topic(topic)
            m = protocol.decode_status(payload)
            self.ledger.set_status(tid, m["online"], m.get("t", 0))
        except (protocol.ProtocolError, ValueError) as e:
            self.log("backend: bad status on %s: %s" % (topic, e))

    async def _on_health(self, topic, payload, retained):
        await asyncio.sleep(0)
        try:
            site, tid, _ = protocol.split_topic(topic)
            if self._over(self.health_limit, "health report", tid):
                return
            self.ledger.set_health(tid, protocol.decode_health(payload))
        except (protocol.ProtocolError, ValueError) as e:
            self.log("backend: bad health report on %s: %s" % (topic, e))

    async def stop(self):
        if self.control is not self.client:
            await self.control.stop()
        await self.client.stop()
        if self.topups is not None:
            self._pool.shutdown(wait=True)
