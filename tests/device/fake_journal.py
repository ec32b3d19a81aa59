"""Stand-in journals for the uplink engine (the real one is lib/cpos/journal, issue 4).

MemJournal keeps records in a list; FileJournal keeps them in a file of fixed 256-byte
lines (one JSON record each, a gap line for a skipped seq) plus an `acked` file replaced
atomically, so a process killed with SIGKILL finds both intact on restart. Both offer the
interface cpos.net.uplink documents. make_record() builds a deterministic record for a seq.
"""
import json
import os

_LINE = 256
_GAP = b"{}"


def make_record(seq, terminal=1, t0=1764000000):
    """Every 7th record a refusal (insufficient funds) that carries the top-up trigger."""
    refused = seq % 7 == 0
    return {
        "seq": seq,
        "t": t0 + seq * 13,
        "uid": "04%012x" % (seq % 5 + 0xA1B2C3D4E5),
        "account": 1000 + seq % 5,
        "amount": 500 + (seq % 11) * 100,
        "place": 0,
        "kind": seq % 2,
        "terminal": terminal,
        "item": "1x Sandwich \"%d\" æøå" % (seq % 9),
        "balance_after": 100000 - seq,
        "reason": 8 if refused else 0,
        "topup": refused,
    }


class MemJournal:
    def __init__(self, first_seq=1):
        self.recs = {}
        self.next_seq = first_seq
        self.acked = first_seq - 1
        self.ack_calls = 0

    def append(self, rec):
        rec["seq"] = self.next_seq
        self.recs[self.next_seq] = rec
        self.next_seq += 1
        return rec["seq"]

    def skip(self):
        self.next_seq += 1

    def oldest_unacked(self):
        s = self.acked + 1
        while s < self.next_seq:
            if s in self.recs:
                return s
            s += 1
        return None

    def read(self, seq):
        return self.recs.get(seq)

    def ack(self, w):
        self.ack_calls += 1
        if w > self.acked:
            for s in range(self.acked + 1, w + 1):
                self.recs.pop(s, None)
            self.acked = w


class FileJournal:
    def __init__(self, path):
        self.path = path
        self.data = path + "/records"
        self.ackf = path + "/acked"
        try:
            os.mkdir(path)
        except OSError:
            pass
        try:
            with open(self.ackf) as f:
                self.acked = int(f.read())
        except (OSError, ValueError):
            self.acked = 0
        try:
            size = os.stat(self.data)[6]
        except OSError:
            size = 0
            open(self.data, "wb").close()
        self.next_seq = size // _LINE + 1  # a torn last line is overwritten by the next append
        self._f = open(self.data, "r+b")
        self._line = bytearray(_LINE)
        self.ack_calls = 0

    def _put(self, seq, body):
        if len(body) > _LINE - 1:
            raise ValueError("record too long")
        line = self._line
        for i in range(_LINE):
            line[i] = 0x20
        line[:len(body)] = body
        line[_LINE - 1] = 0x0A
        self._f.seek((seq - 1) * _LINE)
        self._f.write(line)
        self._f.flush()

    def append(self, rec):
        seq = self.next_seq
        rec["seq"] = seq
        self._put(seq, json.dumps(rec).encode())
        self.next_seq = seq + 1
        return seq

    def skip(self):
        self._put(self.next_seq, _GAP)
        self.next_seq += 1

    def read_json(self, seq):
        if seq <= self.acked or seq >= self.next_seq:
            return None
        self._f.seek((seq - 1) * _LINE)
        body = self._f.read(_LINE).rstrip()
        if body == _GAP:
            return None
        return body

    def read(self, seq):
        b = self.read_json(seq)
        return None if b is None else json.loads(b)

    def oldest_unacked(self):
        s = self.acked + 1
        while s < self.next_seq:
            if self.read_json(s) is not None:
                return s
            s += 1
        return None

    def ack(self, w):
        self.ack_calls += 1
        if w <= self.acked:
            return
        tmp = self.ackf + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(w))
        os.rename(tmp, self.ackf)
        self.acked = w

    def close(self):
        self._f.close()
