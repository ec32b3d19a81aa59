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
"""
import json

from cpos import log as logmod, purchase
from cpos.journal import JournalFull


class JournalFeed:
    def __init__(self, journal, ack_limit=None, log=None):
        self.journal = journal
        self.ack_limit = ack_limit
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

    def release(self):
        """Release records up to min(acked, ack_limit()); call again when the limit moves."""
        w = self._acked
        if self.ack_limit is not None:
            lim = self.ack_limit()
            if lim < w:
                w = lim
        if w <= self.journal.watermark:
            return False
        try:
            return self.journal.ack(w)
        except JournalFull:
            # The head sector is full and this watermark frees no old one: the next,
            # higher acknowledgement will. Nothing is lost; purchases wait for room.
            self.deferred += 1
            self.log.warn("journal: release to %d deferred (no free sector yet)" % w)
            return False
