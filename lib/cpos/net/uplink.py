"""The uplink engine: journal records to the backend in batches, released only on its ack.

Owns the terminal's side of the end-to-end acknowledgement (docs/protocol.md): which
records are in flight, building batch messages into one preallocated buffer, resending
everything unacknowledged after a reconnect, a reboot or an ack timeout, and applying
the backend's watermark to the journal. It runs in its own asyncio task and never
touches the tap path; the tap path only calls `kick()` after a journal append. An ack
without a valid tag, or for records never written, changes nothing: it is counted in
`bad_acks` and logged at the security level (`S uplink: ...`, cpos.log).

The journal it needs (the real one is adapted to this):
- `next_seq`        the seq the next append will get (records have seq < next_seq)
- `acked`           highest seq the backend acknowledged (durable; 0 when none)
- `oldest_unacked()` the lowest seq still held and not acknowledged, or None
- `read(seq)`       the record dict with that seq, or None when no such record
  (optional `read_json(seq)` -> bytes of the record as JSON, to skip json.dumps)
- `ack(watermark)`  durable and idempotent: release every record with seq <= watermark
"""
import asyncio
import json

from cpos import log as logmod
from cpos.net import messages as protocol
from cpos.compat import const, sleep_ms, ticks_ms, ticks_diff, wait_event_ms

_IDLE_MS = const(1000)


class Uplink:
    def __init__(self, journal, client, site, terminal, batch_size=protocol.RECOMMENDED_BATCH,
                 window=4, ack_timeout_ms=15000, buf_size=12288, clock=None, ticks=ticks_ms, log=None,
                 on_ack=None, key=None, up_key=None):
        if not 0 < batch_size <= protocol.MAX_BATCH_RECORDS:
            raise ValueError("batch_size")
        self.journal = journal
        self.client = client
        self.tid = protocol.terminal_id(terminal) if isinstance(terminal, int) else terminal
        self.t_batch = protocol.topic(site, self.tid, protocol.BATCH)
        self.t_status = protocol.topic(site, self.tid, protocol.STATUS)
        self.t_ack = protocol.topic(site, self.tid, protocol.ACK)
        self.batch_size = batch_size
        self.window = window * batch_size  # records sent but not yet acknowledged
        self.ack_timeout_ms = ack_timeout_ms
        self.clock = clock
        self.ticks = ticks
        self.log = log or logmod.NULL  # a cpos.log.Log
        self.on_ack = on_ack  # on_ack(watermark) after an acknowledgement is applied
        self._buf = bytearray(min(buf_size, protocol.MAX_PAYLOAD))
        self._mv = memoryview(self._buf)
        self._wake = asyncio.Event()
        self._gen = -1  # client.generation we last resumed on
        self._sent = 0  # highest seq covered by a batch sent on this connection
        self._ack_in = -1  # newest watermark received, not yet applied to the journal
        self._progress = ticks()
        # figures
        self.batches = 0
        self.records = 0
        self.resends = 0
        self.acks = 0
        self.bad_acks = 0
        self.key = None  # the site key (cpos.net.signing.Key): acks must carry its tag
        if key is not None:
            from cpos.net import signing

            self.key = key if isinstance(key, signing.Key) else signing.Key(key)
            self._tb = self.t_ack.encode()
        self.up_key = None  # this terminal's own uplink key: every batch carries its tag
        if up_key is not None:
            from cpos.net import signing

            self.up_key = up_key if isinstance(up_key, signing.Key) else signing.Key(up_key)
            self._tbatch = self.t_batch.encode()
        client.subscribe(self.t_ack, 1, self._on_ack)
        client.add_connect_hook(self.kick)

    def will(self):
        """The (topic, payload, qos, retain) last will to give the MQTT client."""
        return (self.t_status, protocol.encode_status(False, 0), 1, True)

    def kick(self):
        """Something changed (a record was journaled, the link came up): never blocks."""
        self._wake.set()

    def pending(self):
        """Records not yet acknowledged by the backend."""
        return self.journal.next_seq - 1 - self.journal.acked

    def _on_ack(self, topic, payload, retained):
        try:
            if self.key is not None:
                from cpos.net import signing

                try:
                    payload = signing.open_json(self.key, self._tb, payload)
                except signing.DownlinkError as e:
                    raise protocol.ProtocolError(e.why)
            w = protocol.decode_ack(payload)
        except protocol.ProtocolError as e:
            self.bad_acks += 1
            self.log.security("uplink: ignored ack: %s" % e)
            return
        if w >= self.journal.next_seq:
            # The backend claims records this terminal never wrote: a journal reset or a
            # forged message. Changing nothing is safe; the operator must look.
            self.bad_acks += 1
            self.log.security("uplink: ack %d beyond next_seq %d ignored" % (w, self.journal.next_seq))
            return
        if w > self._ack_in:
            self._ack_in = w
            self._wake.set()

    def _apply_ack(self):
        w = self._ack_in
        if w > self.journal.acked:
            self.journal.ack(w)
            self.acks += 1
            self._progress = self.ticks()
            if self.on_ack is not None:
                self.on_ack(w)
        if self._sent < self.journal.acked:
            self._sent = self.journal.acked

    def _resume(self):
        """A new connection (or the first): resend everything not acknowledged."""
        self._gen = self.client.generation
        self._sent = self.journal.acked
        self._progress = self.ticks()

    def _fill(self):
        """Encode the next batch into the buffer: (length, lo, hi), or None when nothing to send."""
        j = self.journal
        lo = self._sent + 1
        end = j.next_seq
        if lo >= end:
            return None
        first = j.oldest_unacked()
        seq = lo if first is None or first < lo else first
        buf = self._buf
        mv = self._mv
        head = protocol.batch_head()
        n = len(head)
        buf[:n] = head
        room = len(buf) - 40  # the tail: `],"lo":4294967295,"hi":4294967295}`
        if self.up_key is not None:
            room -= 80  # and the tag: `,"tag":"<64 hex>"`
        count = 0
        hi = seq - 1
        scanned = 0
        read_json = getattr(j, "read_json", None)
        while seq < end and count < self.batch_size and scanned < 4 * self.batch_size:
            scanned += 1
            if read_json is not None:
                rec = read_json(seq)
            else:
                r = j.read(seq)
                rec = None if r is None else json.dumps(r).encode()
            if rec is not None:
                k = len(rec) + (1 if count else 0)
                if n + k > room:
                    if not count:
                        raise ValueError("record %d larger than the batch buffer" % seq)
                    break
                if count:
                    buf[n] = 0x2C  # ,
                    n += 1
                mv[n:n + len(rec)] = rec
                n += len(rec)
                count += 1
            hi = seq
            seq += 1
        if hi >= end:
            hi = end - 1
        if hi < lo:
            return None
        tail = protocol.batch_tail(lo, hi)
        mv[n:n + len(tail)] = tail
        n += len(tail)
        if self.up_key is not None:
            from cpos.net import signing

            n = signing.seal_into(self.up_key, self._tbatch, buf, n)
        return n, lo, hi, count

    async def run(self):
        """The uplink task: forever."""
        c = self.client
        while True:
            if not c.connected:
                await c.wait_connected()
                continue
            self._wake.clear()  # a kick from here on makes the wait below return at once
            if c.generation != self._gen:
                self._resume()
                await c.publish(self.t_status, protocol.encode_status(True, self._now()), 1, True, wait=False)
            self._apply_ack()
            outstanding = self._sent - self.journal.acked
            if outstanding > 0 and ticks_diff(self.ticks(), self._progress) > self.ack_timeout_ms:
                # No ack for too long (backend down, or the broker lost our batches): resend.
                self.resends += 1
                self.log.info("uplink: no ack for %d ms, resending from %d" % (
                    self.ack_timeout_ms, self.journal.acked + 1))
                self._sent = self.journal.acked
                self._progress = self.ticks()
                outstanding = 0
            if outstanding < self.window:
                batch = self._fill()
                if batch is not None:
                    n, lo, hi, count = batch
                    if outstanding == 0:
                        self._progress = self.ticks()
                    ok = await c.publish(self.t_batch, self._mv[:n], 1, False)
                    if ok:
                        self._sent = hi
                        self.batches += 1
                        self.records += count
                    continue
            if self._ack_in > self.journal.acked:
                continue
            await wait_event_ms(self._wake, _IDLE_MS)

    def _now(self):
        if self.clock is None:
            return 0
        return int(self.clock())

    async def drained(self, timeout_ms):
        """Wait until the journal holds nothing unacknowledged; True if it did in time."""
        t0 = ticks_ms()
        while self.pending() > 0:
            if ticks_diff(ticks_ms(), t0) > timeout_ms:
                return False
            await sleep_ms(20)
        return True

