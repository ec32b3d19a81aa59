"""The sync engine: the card table kept in step with the backend over the downlink.

Owns the terminal's side of docs/protocol.md (Part 2, "Downlink"): asking for a sync on every
connect and whenever the table needs one (empty, broken, a version gap, no room), and
applying what comes back on `down/sync`: versioned deltas in order, snapshot chunks
installed beside the live table and switched to atomically, and the backend's
`current` answer that says the terminal is up to date. Every message is verified
(cpos.net.signing) before anything in it is looked at; one that is malformed, forged,
replayed or out of order changes nothing and is counted, and logged at the security level
(`S sync: refused message: <why>`, cpos.log).

When a delta or a snapshot moves the table's `included_seq`, `on_included(seq)` is
called at once, before the next message and before any tap can run: the app moves its
pending purchases (cpos.cards.unincluded) on to count only those above that seq, and lets the
journal release records up to min(backend ack, included_seq) (cpos.net.journal_feed).
`last_contact` (UTC seconds, with a `clock`) is when authentic news last arrived: what
an offline-exposure policy (cpos.offline) measures staleness from. Runs in its own
asyncio task; message handling allocates no buffer beyond the payload the MQTT client
already holds.
"""
import asyncio
import os

from cpos import log as logmod
from cpos.cards import table as cardtable
from cpos.net import signing
from cpos.net import messages as protocol
from cpos.compat import const, sleep_ms, ticks_diff, ticks_ms, wait_event_ms

_IDLE_MS = const(1000)


def _version(b, off=0):
    """The version field of the delta at b[off:] (its bytes 3..6, little-endian)."""
    return b[off + 3] | (b[off + 4] << 8) | (b[off + 5] << 16) | (b[off + 6] << 24)


def _nonce():
    try:
        b = os.urandom(4)
        n = b[0] | (b[1] << 8) | (b[2] << 16) | ((b[3] & 0x7F) << 24)
    except (AttributeError, NotImplementedError):
        n = ticks_ms() & 0x7FFFFFFF
    return n or 1


class Sync:
    def __init__(self, table, client, site, tid, key, on_included=None, log=None, retry_ms=5000,
                 settle_ms=500, ticks=ticks_ms, clock=None, on_time=None, elapsed=None):
        self.table = table
        self.client = client
        self.key = key if isinstance(key, signing.Key) else signing.Key(key)
        self.t_up = protocol.topic(site, tid, protocol.SYNC_UP)
        self.t_down = protocol.topic(site, tid, protocol.SYNC_DOWN)
        self._tb = self.t_down.encode()
        self.on_included = on_included
        self.log = log or logmod.NULL  # a cpos.log.Log
        self.retry_ms = retry_ms
        self.settle_ms = settle_ms
        self._ok = asyncio.Event()  # set while the backend's last word is "current"
        self._connected_at = None  # ticks of the last connect, until the backend answers
        self.ticks = ticks
        self._msg = signing.Message()
        self._wake = asyncio.Event()
        self._want = True  # a sync request must go out
        self._asked = None  # ticks of the unanswered request, or None
        self._nonce = 0  # the nonce of that request (0: none outstanding)
        self._inst = 0  # version of the snapshot being received (0: none)
        self._inst_inc = 0
        self._snapshot = False  # the next request asks for a snapshot, whatever the table says
        self.current = 0  # the newest version the backend said exists
        self.synced = False  # the backend confirmed this table is current
        self.last_sync = None  # ticks of that confirmation
        self.clock = clock  # UTC seconds (board.now), for `last_contact`
        self.last_contact = 0  # UTC s of the last authentic news (delta, snapshot, current); 0 never
        self.on_time = on_time  # on_time(t, rtt_ms): the backend's time in a `current` answer to our nonce
        self.elapsed = elapsed  # seconds counted by the board's clock (TimeKeeper.elapsed), or None
        self._asked_s = None  # elapsed() when the unanswered request went out
        # figures
        self.applied = 0
        self.snapshots = 0
        self.requests = 0
        self.rejected = 0
        self.why = {}  # reason -> count of refused messages
        client.subscribe(self.t_down, 1, self._on_msg)
        client.add_connect_hook(self._on_connect)

    # -- state ----------------------------------------------------------------------
    @property
    def version(self):
        return self.table.version

    def status(self):
        """For the health message; `last_contact` (UTC s, 0 = none since boot) gives
        `cpos status` the card table's age."""
        return {"table_version": self.table.version, "included_seq": self.table.included_seq,
                "synced": self.synced, "sync_applied": self.applied, "sync_snapshots": self.snapshots,
                "sync_rejected": self.rejected, "last_contact": self.last_contact}

    def _reject(self, why):
        self.rejected += 1
        self.why[why] = self.why.get(why, 0) + 1
        self.log.security("sync: refused message: %s" % why)

    def refresh(self):
        """Ask for a `current` answer (the backend's time comes with it: cpos.timetask)."""
        self._ask()

    def _ask(self):
        if self._asked is None:
            self._want = True
            self._wake.set()

    def _on_connect(self):
        self.synced = False
        self._ok.clear()
        self._connected_at = self.ticks()
        self._want = True
        self._wake.set()

    def _contact(self):
        if self.clock is not None:
            self.last_contact = int(self.clock())

    def _included(self, before):
        if self.table.included_seq != before and self.on_included is not None:
            self.on_included(self.table.included_seq)

    # -- messages (run in the MQTT client's reader task; never await) ---------------
    def _on_msg(self, topic, payload, retained):
        try:
            m = signing.decode(self.key, self._tb, payload, self._msg)
        except signing.DownlinkError as e:
            self._reject(e.why)
            return
        work = None
        if m.kind == signing.DELTA:
            self._delta(m)
        elif m.kind == signing.DELTAS:
            work = self._deltas(m.body, m.version)
        elif m.kind == signing.CHUNK:
            self._chunk(m)
        else:
            self._current(m)
        m.body = b""  # do not keep the payload alive
        return work  # the MQTT client awaits it before it reads (and acknowledges) the next message

    def _delta(self, m):
        b = m.body
        if len(b) < 11 or _version(b) != m.version:
            self._reject("malformed")
            return
        r = self._apply(b)
        if r == cardtable.DUPLICATE:
            self._reject("replayed")

    def _deltas(self, b, version):
        """Several consecutive deltas in one message (`[length][delta]...`, the backend packs
        what it has up to MAX_BODY). The framing is checked first (a malformed message changes
        nothing); None then, or the coroutine that applies them: each in turn, yielding to the
        taps and the table's upkeep after each one applied; ones the table already holds (a
        resend that overlaps) are skipped; the first that cannot be applied ends it."""
        i = n = 0
        last = -1
        while i < len(b):
            k = b[i]
            if k < 11 or i + 1 + k > len(b):
                self._reject("malformed")
                return None
            last = _version(b, i + 1)  # no slice: nothing allocated per delta
            i += 1 + k
            n += 1
        if n == 0 or last != version:
            self._reject("malformed")
            return None
        return self._apply_all(b)

    async def _apply_all(self, b):
        mv = memoryview(b)
        new = False
        i = 0
        while i < len(b):
            k = b[i]
            r = self._apply(mv[i + 1:i + 1 + k])
            if r == cardtable.APPLIED:
                new = True
                await sleep_ms(0)  # one delta is one bounded step: a tap waits for no more
            elif r != cardtable.DUPLICATE:
                return
            i += 1 + k
        if not new:
            self._reject("replayed")

    def _apply(self, b):
        """Apply one delta (bytes or memoryview); the table's result code."""
        t = self.table
        before = t.included_seq
        r = t.apply_delta(b)
        if r == cardtable.APPLIED:
            self.applied += 1
            if t.wants_step:
                self._wake.set()  # the sync task does the upkeep between messages
            self._contact()
            v = _version(b)
            if v > self.current:
                self.current = v
            self._included(before)
        elif r == cardtable.GAP:
            self._reject("out of order")
            if t.state == cardtable.OK:
                t.needs_resync = False  # intact, only behind: the missed deltas will do
            self.synced = False
            self._ask()
        elif r == cardtable.MALFORMED:
            self._reject("malformed")
        elif r != cardtable.DUPLICATE:  # NO_SPACE: only a snapshot helps
            self.log.warn("sync: no room for delta v%d: asking for a snapshot" % _version(b))
            self.synced = False
            self._snapshot = True
            self._ask()
        return r

    def _chunk(self, m):
        t = self.table
        if m.index == 0 and not (m.version == self._inst and m.arg == self._inst_inc):
            if t.state == cardtable.OK and m.version <= t.version:
                self._reject("replayed")
                return
            if t.install_begin(m.version, m.arg, m.total) != cardtable.INSTALL_OK:
                self._reject("malformed")
                return
            self._inst = m.version
            self._inst_inc = m.arg
        elif m.version != self._inst or m.arg != self._inst_inc:
            self._reject("replayed" if m.version <= t.version else "out of order")
            return
        r = t.install_chunk(m.index, m.body)
        if r == cardtable.INSTALL_DUPLICATE:
            self._reject("replayed")
            return
        if r != cardtable.INSTALL_OK:
            self._reject("out of order" if r == cardtable.INSTALL_OUT_OF_ORDER else "bad image")
            if r == cardtable.INSTALL_BAD:
                self._inst = 0
            return
        if self._asked is not None:
            self._asked = self.ticks()  # the answer is arriving: do not ask again yet
        if m.index + 1 < m.total:
            return
        self._inst = 0
        if t.install_commit() != cardtable.INSTALL_OK:
            self._reject("bad image")
            self._snapshot = True
            self._asked = None
            self._ask()
            return
        self._snapshot = False
        self.snapshots += 1
        self._contact()
        self.log.info("sync: snapshot v%d installed (%d cards, included seq %d)" % (
            t.version, t.n_cards, t.included_seq))
        if m.version > self.current:
            self.current = m.version
        if self.on_included is not None:
            self.on_included(t.included_seq)  # always: the whole table is new

    def _current(self, m):
        if not self._nonce or m.arg != self._nonce:
            self._reject("replayed")  # an answer to no request of ours
            return
        self._nonce = 0
        self.current = m.version
        if len(m.body) == 4 and self.on_time is not None:  # fresh: it answers our nonce
            b = m.body
            rtt = ticks_diff(self.ticks(), self._asked) if self._asked is not None else 0
            if self.elapsed is not None and self._asked_s is not None:  # also as the board's clock counts it
                rtt = max(rtt, (self.elapsed() - self._asked_s) * 1000)
            self.on_time(b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24), rtt)
        t = self.table
        if t.state == cardtable.OK and not t.needs_resync and t.version == m.version:
            self.synced = True
            self.last_sync = self.ticks()
            self._contact()
            self._asked = None
            self._connected_at = None
            self._ok.set()
        else:
            self.synced = False  # the retry timer asks again, for a snapshot this time
            self._snapshot = True

    async def settled(self):
        """The tap path calls this before deciding. Right after a (re)connect, until the
        backend has answered (what the terminal missed while offline: a block, say), it
        waits, at most `settle_ms` after the connect; otherwise it returns at once. An
        offline terminal never waits: it decides on what it has."""
        at = self._connected_at
        if at is None or self.synced or not self.client.connected:
            return
        left = self.settle_ms - ticks_diff(self.ticks(), at)
        if left <= 0:
            return
        await wait_event_ms(self._ok, left)

    # -- the task -------------------------------------------------------------------
    def _request(self):
        t = self.table
        self._nonce = _nonce()
        self._asked = self.ticks()
        if self.elapsed is not None:
            self._asked_s = self.elapsed()
        self.requests += 1
        return protocol.encode_sync(t.version, t.state, t.needs_resync or t.state != cardtable.OK or self._snapshot,
                                    self._nonce)

    async def run(self):
        """The sync task: forever."""
        c = self.client
        while True:
            if not c.connected:
                await c.wait_connected()
                continue
            self._wake.clear()
            t = self.table
            if t.wants_step:
                # one bounded piece of card-table upkeep (a bucket refresh: one erase and
                # one block programmed), then the taps and the next message go first
                t.step()
                await sleep_ms(0)
                continue
            if (t.needs_resync or t.state != cardtable.OK) and self._inst == 0:
                self._ask()
            elif t.needs_snapshot and not self._snapshot and self._inst == 0:
                self.log.info("sync: card table v%d wants a snapshot (its change store fills)" % t.version)
                self._snapshot = True
                self._ask()
            if self._asked is not None and ticks_diff(self.ticks(), self._asked) > self.retry_ms:
                self._want = True
            if self._want:
                self._want = False
                await c.publish(self.t_up, self._request(), 1, False)
                continue
            await wait_event_ms(self._wake, _IDLE_MS)

