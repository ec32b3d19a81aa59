"""The purchase journal as the uplink engine sees it (cpos.net.uplink's journal interface).

Owns the translation between the journal on flash (cpos.journal: 64-byte records, a
durable release watermark) and the uplink: records by exact sequence number, as the
JSON objects of docs/protocol.md; the backend's acknowledgement in, a durable release
out. Two watermarks, kept apart on purpose:

- `acked`: the highest seq the backend has acknowledged (what the engine must not resend);
- the journal's release watermark: what the flash may reuse. It never passes
  `ack_limit()` when one is given (the downlink sets it to the card table's
  `included_seq`, so a purchase the synced table does not yet include is never erased:
  at boot the terminal rebuilds its pending purchases from those records).

After a reboot `acked` starts at the release watermark, so records acknowledged but
not yet released are sent once more; the backend's ledger ignores repeats.

Each release the journal records takes a 64-byte slot, as a purchase does. Released at
every acknowledgement, a till whose customers are each acknowledged before the next
fills two slots a purchase and erases a sector every ~32 purchases instead of every 63.
With `hold` (records), a release waits until it frees at least that many, unless the
journal is short of room (fewer than two sectors' slots left) or the caller forces it: the
firmware holds one sector's worth while customers come and releases the rest at its next
quiet moment, so in a rush about one slot in 63 is a release. The cost: after a power cut
in a rush, up to `hold` acknowledged records are sent once more.
"""
import json

from cpos import log as logmod, purchase
from cpos.journal import JournalFull


class JournalFeed:
    def __init__(self, journal, ack_limit=None, log=None, hold=0):
        self.journal = journal
        self.ack_limit = ack_limit
        self.hold = hold  # records: a release frees at least this many unless room is short
        self.log = log or logmod.NULL  # a cpos.log.Log
        self._buf = bytearray(purchase.SIZE)
        self._acked = journal.watermark
        self.deferred = 0  # acks the journal could not record yet (JournalFull)

    @property
    def next_seq(self):
        return self.journal.next_seq

    @property
    def acked(self):
        return self._acked

    def oldest_unacked(self):
        first = self._acked + 1
        return first if first < self.journal.next_seq else None

    def read(self, seq):
        """The record with exactly this seq as a JSON-ready dict, or None (a gap, or released)."""
        if self.journal.read(seq, self._buf, True) != seq:
            return None
        return purchase.to_json_obj(purchase.decode(self._buf))

    def read_json(self, seq):
        r = self.read(seq)
        return None if r is None else json.dumps(r).encode()

    def ack(self, watermark):
        """The backend holds every record up to `watermark`; release what may be released."""
        if watermark > self._acked:
            self._acked = watermark
        self.release()

    def releasable(self):
        """min(acked, ack_limit()): what the journal may release now."""
        w = self._acked
        if self.ack_limit is not None:
            lim = self.ack_limit()
            if lim < w:
                w = lim
        return w

    def held(self):
        """Records that may be released and are not yet (0 when none)."""
        return max(0, self.releasable() - self.journal.watermark)

    def release(self, force=False):
        """Release records up to releasable() (see `hold`); call again when the limit moves.
        True if the journal recorded a release."""
        w = self.releasable()
        if w <= self.journal.watermark:
            return False
        if not force and w - self.journal.watermark < self.hold and not self._short():
            return False  # held in RAM: the uplink does not resend it, a reboot would
        try:
            return self.journal.ack(w)
        except JournalFull:
            # The head sector is full and this watermark frees no old one: the next,
            # higher acknowledgement will. Nothing is lost; purchases wait for room.
            self.deferred += 1
            self.log.warn("journal: release to %d deferred (no free sector yet)" % w)
            return False

    def _short(self):
        """Fewer than two sectors' slots left for purchases: release what may be."""
        used, total = self.journal.fill()
        return total - used < 2 * self.journal.slots
