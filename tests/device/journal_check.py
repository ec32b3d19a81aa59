"""Power-cut harness for the purchase journal; runs on MicroPython and CPython.

A workload is a list of steps: ("a", n) append n purchases, ("k", lag) acknowledge up
to the last appended seq minus `lag`, ("K", w) acknowledge up to w (at most the last), ("p",) idle-time prepare, ("b",) clean reboot.
`run` plays a workload on a fresh NOR-flash model, optionally cutting power at one
flash operation (or several, `cuts`), reboots and recovers after each cut, checks
the recovered journal against an oracle of what the workload was told, and plays on.

Checked after every recovery and at the end (see `check`):
- every append that returned is present exactly once with its exact content,
  unless acknowledged; the one append in flight at the cut is present whole or absent;
- only checksummed records come back; no seq appears twice on flash;
- the next seq follows the last one handed out (strictly increasing across reboots);
- the recovered watermark is at least every ack that returned and at most what was
  asked for; nothing at or below it is read back;
- at the end: no program ever landed on bytes left by a torn write.
"""
from cpos import purchase
from cpos.journal import Journal, JournalFull, SLOT
from simulator.norflash import NorFlash, PowerCut, CUT_BEFORE, CUT_INSIDE, CUT_AFTER, TEARS

MODES = (CUT_BEFORE, CUT_INSIDE, CUT_AFTER)

UIDS = (b"\x04\xa1\xb2\xc3", b"\x04\x11\x22\x33\x44\x55\x66", b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a")
ITEMS = ("1x Sandwich", "2x Kakao", "1x \u00c6blegr\u00f8d med fl\u00f8deskum og mere", "", "Vand 0,5 l")


def fields(i):
    """Deterministic, varied purchase fields for the i-th append of a workload."""
    refused = i % 9 == 4  # a refused tap carrying the top-up trigger
    return (1700000000 + 37 * i, UIDS[i % 3], 1000 + i % 7, 500 + 25 * (i % 40), i % 2, (i // 2) % 2,
            42 + i % 3, ITEMS[i % 5], 100000 - 500 * i, 8 if refused else 0, refused or i % 11 == 0)


def expected(seq, f):
    return {"seq": seq, "t": f[0], "uid": f[1], "account": f[2], "amount": f[3], "place": f[4],
            "kind": f[5], "terminal": f[6], "item": purchase.fit_item(f[7]).decode(),
            "balance_after": f[8], "reason": f[9], "topup": bool(f[10])}


# Small sectors (512 B: 7 record slots) wrap the ring many times in few operations.
WORKLOADS = {
    # steady traffic with lagging acks and idle-time erases: many laps of a 4-sector ring
    "laps": (4, 512, [("a", 5), ("k", 2), ("a", 4), ("p",), ("k", 1), ("a", 6), ("k", 3)] * 10 + [("k", 0)]),
    # an ack after nearly every purchase: ack records share the sectors with purchases
    "chatty": (3, 512, [("a", 1), ("k", 0), ("a", 2), ("k", 1)] * 12),
    # fill to the brim, refusals, partial acks into the reserve sector, then drain; twice
    "full": (3, 512, [("a", 16), ("k", 12), ("k", 10), ("a", 4), ("k", 6), ("k", 5), ("k", 4),
                      ("a", 6), ("k", 0), ("a", 9), ("k", 2), ("a", 3)] * 2),
    # a full journal acknowledged one record at a time: acks go to the reserve sector
    "reserve": (3, 512, [("a", 23)] + [("K", n) for n in range(1, 15)] + [("a", 9)] +
                [("k", n) for n in range(8, -1, -1)] + [("a", 3)]),
    # clean reboots between bursts, acks one by one
    "reboots": (4, 512, [("a", 3), ("b",), ("k", 1), ("a", 8), ("b",), ("k", 4), ("k", 2), ("p",), ("b",),
                         ("a", 10), ("k", 0), ("b",), ("a", 7), ("k", 3)] * 2),
    # the real geometry: 4096-byte sectors (63 slots), three laps of a 3-sector ring
    "geometry": (3, 4096, [("a", 60), ("k", 20), ("a", 50), ("k", 1), ("a", 70), ("k", 30), ("a", 40),
                           ("p",), ("k", 0)] * 3),
}


class Oracle:
    def __init__(self):
        self.recs = {}  # seq -> index into `fields`, for appends that returned (or were found whole)
        self.last = 0  # last seq handed out
        self.acked = 0  # highest ack that returned (or was found in effect)
        self.ack_hi = 0  # highest ack ever asked for
        self.i = 0  # appends attempted, feeds `fields`
        self.refused = 0
        self.ack_refused = 0

    def prune(self):
        """Forget acknowledged records (keeps the oracle small on MicroPython's heap)."""
        self.recs = {s: i for s, i in self.recs.items() if s > self.acked}


def steps(workload):
    for st in workload:
        if st[0] == "a":
            for _ in range(st[1]):
                yield ("a",)
        else:
            yield st


def ring_seqs(j):
    """Sequence numbers of every checksummed purchase on flash in the journal's ring."""
    buf = bytearray(SLOT)
    out = []
    for i in range(j.nsec):
        if j._sid[i] == 0:
            continue
        for slot in range(1, j.slots + 1):
            j.dev.readblocks(i, buf, slot * SLOT)
            if purchase.is_valid(buf):
                out.append(purchase.seq_of(buf))
    return out


def check(j, orc, inflight):
    w = j.watermark
    assert orc.acked <= w <= max(orc.ack_hi, orc.acked), ("watermark", orc.acked, w, orc.ack_hi)
    buf = bytearray(SLOT)
    found = 0  # oracle records above the watermark that came back
    extra = None
    prev = w
    s = 0
    while True:
        r = j.read(s, buf)
        if r is None:
            break
        assert purchase.is_valid(buf) and purchase.seq_of(buf) == r
        assert r > prev, ("acked record came back, or out of order, or twice", r, prev, w)
        prev = r
        rec = purchase.decode(buf)
        i = orc.recs.get(r)
        if i is not None:
            assert rec == expected(r, fields(i)), ("altered", r, rec)
            found += 1
        else:
            assert extra is None, ("unknown records", extra, r)
            assert inflight is not None and r == orc.last + 1, ("record from nowhere", r, orc.last)
            assert rec == expected(r, fields(inflight)), ("in-flight record altered", rec)
            extra = r
        s = r + 1
    for q in list(orc.recs):
        if q <= w:
            del orc.recs[q]  # acknowledged: may go
    assert found == len(orc.recs), ("lost records", len(orc.recs) - found)
    if extra is not None:
        orc.recs[extra] = inflight
        orc.last = extra
    seqs = ring_seqs(j)
    assert len(seqs) == len(set(seqs)), "a seq twice on flash"
    assert j.next_seq == orc.last + 1, ("next seq", j.next_seq, orc.last)
    assert j.pending() == orc.last - w
    assert j.oldest_unacked() == (w + 1 if w < orc.last else None)
    used, total = j.fill()
    assert 0 <= used <= total
    orc.acked = w


def journal_with(n, acked=0, nsec=4, sector=4096):
    """A journal on a fresh once-mode flash of `nsec` sectors holding appends 0..n-1 of
    `fields` (seqs 1..n), acknowledged up to `acked`. Returns (flash, journal)."""
    f = NorFlash(nsec * sector, sector=sector, once=True)
    j = Journal(f)
    j.recover()
    for i in range(n):
        j.append(*fields(i))
    if acked:
        j.ack(acked)
    return f, j


def run(name, cut_at=None, mode=CUT_INSIDE, seed=1, cuts=None, tear=None):
    """Play workload `name`. `cut_at`: one cut at that flash operation (a torn one leaving
    the fraction `tear` of its bit changes done, see NorFlash.arm); `cuts`: a list of
    (op index, mode[, tear]) cuts, each counted from the reboot before it. The flash is
    in `once` mode: the journal never programs a byte twice. Returns a summary."""
    nsec, sector, workload = WORKLOADS[name] if isinstance(name, str) else name
    flash = NorFlash(nsec * sector, sector=sector, seed=seed, once=True)
    j = Journal(flash)
    j.recover()
    orc = Oracle()
    plan = list(cuts or ())
    if cut_at is not None:
        plan.insert(0, (cut_at, mode, tear))
    if plan:
        flash.arm(*plan.pop(0))
    reboots = 0
    for st in steps(workload):
        inflight = None
        try:
            if st[0] == "a":
                f = fields(orc.i)
                inflight = orc.i
                orc.i += 1
                before = flash.ops
                try:
                    seq = j.append(*f)
                except JournalFull:
                    assert flash.ops == before, "JournalFull after writing"
                    used, total = j.fill()
                    assert used == total, ("refused while not full", used, total)
                    orc.refused += 1
                    continue
                assert seq == orc.last + 1, ("seq", seq, orc.last)
                orc.recs[seq] = inflight
                orc.last = seq
            elif st[0] in "kK":
                w = max(0, orc.last - st[1]) if st[0] == "k" else min(st[1], orc.last)
                orc.ack_hi = max(orc.ack_hi, w)
                before = flash.ops
                try:
                    j.ack(w)
                except JournalFull:
                    assert flash.ops == before, "ack refused after writing"
                    orc.ack_refused += 1
                    continue
                orc.acked = max(orc.acked, w)
                orc.prune()
            elif st[0] == "p":
                j.prepare()
            elif st[0] == "b":
                j = Journal(flash)
                j.recover()
                check(j, orc, None)
        except PowerCut:
            reboots += 1
            flash.reboot()
            j = Journal(flash)
            j.recover()
            check(j, orc, inflight)
            if plan:
                flash.arm(*plan.pop(0))
    check(j, orc, None)
    assert flash.torn_overwrites == 0, "programmed over torn bytes"
    # Without torn slots an ack always finds room (the reserve sector); see cpos.journal.
    assert reboots or not orc.ack_refused, "ack refused without any power cut"
    return {"ops": flash.ops, "last": orc.last, "acked": orc.acked, "refused": orc.refused,
            "ack_refused": orc.ack_refused,
            "reboots": reboots, "erases": flash.erases}


def total_ops(name):
    return run(name)["ops"]


def sweep(name, stride=1, start=0, modes=MODES, tears=None, salt=0):
    """Cut at every `stride`-th flash operation of workload `name`, in each mode.
    A cut inside an operation is torn by each fraction of `tears`; by default by one
    of norflash.TEARS per operation, in turn (3 %, 50 %, 97 %, random), so that a sweep
    costs no more runs than it has cuts and every fraction lands on every kind of step.
    Returns the number of runs (each one checked)."""
    n = total_ops(name)
    runs = 0
    for op in range(start, n, stride):
        for m in modes:
            if m != CUT_INSIDE:
                run(name, op, m, seed=op + 1 + salt)
                runs += 1
                continue
            for t in (tears if tears is not None else (TEARS[(op // stride) % len(TEARS)],)):
                run(name, op, m, seed=op + 1 + salt, tear=t)
                runs += 1
    return runs
