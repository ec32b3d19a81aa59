"""Power-cut harness for reversals (cpos.refund over cpos.journal); runs on MicroPython and CPython.

A workload is a list of steps: ("a", account, amount) an approved purchase, ("f",) a refusal
journaled for its top-up trigger, ("r", i) reverse the i-th purchase of the workload (again
and again: a retry after a cut), ("k", lag) acknowledge up to the last seq minus `lag`,
("p",) idle-time prepare, ("b",) clean reboot. `run` plays it on a NOR-flash model, cuts
the power at one flash operation (before, inside or after it), reboots, recovers and checks,
then plays on.

Checked after every recovery and at the end (`check`):
- no purchase is reversed twice on flash; a reversal that returned is there exactly once
  (while its purchase is still readable); the one in flight at the cut is there whole or
  not at all (absent: the retry later in the workload must make it, once);
- `Refunds.check` answers ALREADY_REVERSED exactly for the purchases reversed on flash,
  APPROVED for the other approved purchases still readable, NOT_REVERSIBLE for refusals
  and reversals, PURCHASE_NOT_FOUND for what the ring no longer holds;
- the own pending amounts rebuilt from flash (cpos.cards.unincluded, included = acked) are
  the approved purchases minus the reversals above the watermark, per account;
- at the end: no program ever landed on bytes a torn write left.
"""
from cpos import purchase, reasons
from cpos.cards import unincluded
from cpos.journal import Journal, JournalFull, SLOT
from cpos.refund import Refunds
from simulator.norflash import NorFlash, PowerCut, CUT_BEFORE, CUT_INSIDE, CUT_AFTER

MODES = (CUT_BEFORE, CUT_INSIDE, CUT_AFTER)
TERMINAL = 7
T0 = 1764068400
WINDOW = 86400
UID = b"\x04\xa1\xb2\xc3"

# 256-byte sectors hold 3 slots: reversals often open a sector (erase, header, program).
WORKLOADS = {
    "mixed": (4, 256, [("a", 1, 500), ("a", 2, 700), ("f",), ("r", 0), ("r", 0), ("a", 1, 300),
                       ("r", 1), ("k", 2), ("r", 2), ("r", 1), ("a", 3, 900), ("p",), ("r", 3),
                       ("b",), ("r", 3), ("r", 2), ("k", 0), ("a", 2, 100), ("r", 4), ("r", 4)]),
    "laps": (4, 256, [("a", 1, 100), ("a", 2, 200), ("r", -1), ("k", 1), ("r", -2), ("r", -1), ("p",),
                      ("k", 0)] * 6),
    "geometry": (3, 4096, [("a", 1, 250)] * 60 + [("r", 10), ("r", 59), ("r", 10), ("a", 2, 50), ("r", 60),
                                                  ("k", 3), ("r", 60), ("r", 0)]),
}


class Oracle:
    def __init__(self):
        self.purchases = []  # seq of each approved purchase, in workload order
        self.amounts = {}  # seq -> (account, amount) of approved purchases
        self.refusals = set()
        self.reversed = {}  # orig seq -> reversal seq, for reversals known to be on flash
        self.last = 0
        self.acked = 0
        self.gone = 0  # purchases the ring no longer holds (answered purchase_not_found)


def _scan(j):
    """{orig seq: [reversal seqs]} over every checksummed record in the ring."""
    buf = bytearray(SLOT)
    out = {}
    for i in range(j.nsec):
        if j._sid[i] == 0:
            continue
        for slot in range(1, j.slots + 1):
            j.dev.readblocks(i, buf, slot * SLOT)
            if purchase.is_valid(buf) and purchase.is_reversal(buf):
                o = purchase.reversal_of(buf)[0]
                out.setdefault(o, []).append(purchase.seq_of(buf))
    return out


def check(j, orc, inflight, now):
    """`inflight`: the purchase seq whose reversal was being written at the cut, or None."""
    on_flash = _scan(j)
    for o, revs in on_flash.items():
        assert len(revs) == 1, ("reversed twice on flash", o, revs)
    buf = bytearray(SLOT)
    refunds = Refunds(j, TERMINAL, WINDOW)
    if inflight is not None and inflight not in orc.reversed and inflight in on_flash:
        orc.reversed[inflight] = on_flash[inflight][0]  # the cut came after the program: whole
        orc.last = max(orc.last, on_flash[inflight][0])
    for o, r in orc.reversed.items():
        readable = j.read(o, buf, True) == o
        if readable:
            assert on_flash.get(o) == [r], ("a returned reversal is missing", o, r, on_flash.get(o))
    for o in orc.purchases:
        code = refunds.check(o, now)
        if j.read(o, buf, True) != o:
            assert code == reasons.PURCHASE_NOT_FOUND, (o, code)
        elif o in orc.reversed:
            assert code == reasons.ALREADY_REVERSED, (o, code)
        else:
            assert code == reasons.APPROVED, (o, code)
    for o in orc.refusals:
        if j.read(o, buf, True) == o:
            assert refunds.check(o, now) == reasons.NOT_REVERSIBLE
    for r in orc.reversed.values():
        if j.read(r, buf, True) == r:
            assert refunds.check(r, now) == reasons.NOT_REVERSIBLE
    assert j.next_seq == orc.last + 1, ("next seq", j.next_seq, orc.last)
    orc.gone = sum(1 for o in orc.purchases if j.read(o, buf, True) != o)
    u = unincluded.Unincluded()
    w = j.watermark
    u.rebuild(j, w)
    want = {}
    for o, (acct, amount) in orc.amounts.items():
        if o > w:
            want[acct] = want.get(acct, 0) + amount
    for o, r in orc.reversed.items():
        if r > w:
            acct, amount = orc.amounts[o]
            want[acct] = want.get(acct, 0) - amount
    for acct in (1, 2, 3):
        assert u.amount(acct) == want.get(acct, 0), ("pending amount", acct, u.amount(acct), want.get(acct, 0))
    orc.acked = w


def run(name, cut_at=None, mode=CUT_INSIDE, seed=1):
    """Play workload `name` (or a (sectors, sector size, steps) tuple), with one cut at flash
    operation `cut_at` if given. Returns a summary."""
    nsec, sector, workload = WORKLOADS[name] if isinstance(name, str) else name
    flash = NorFlash(nsec * sector, sector=sector, seed=seed)
    j = Journal(flash)
    j.recover()
    orc = Oracle()
    if cut_at is not None:
        flash.arm(cut_at, mode)
    reboots = made = full = 0
    now = T0
    for st in workload:
        now += 10
        inflight = None
        try:
            if st[0] in "af":
                ok = st[0] == "a"
                acct, amount = (st[1], st[2]) if ok else (3, 2000)
                try:
                    seq = j.append(now, UID, acct, amount, 0, 0, TERMINAL, "1x Test", 1000,
                                   reasons.APPROVED if ok else reasons.INSUFFICIENT_FUNDS, not ok)
                except JournalFull:
                    full += 1
                    continue
                orc.last = seq
                if ok:
                    orc.purchases.append(seq)
                    orc.amounts[seq] = (acct, amount)
                else:
                    orc.refusals.add(seq)
            elif st[0] == "r":
                if not orc.purchases:
                    continue
                o = orc.purchases[st[1] % len(orc.purchases)]
                refunds = Refunds(j, TERMINAL, WINDOW)
                before = flash.ops
                code = refunds.check(o, now)
                assert flash.ops == before, "check wrote to flash"
                if code != reasons.APPROVED:
                    continue  # check() above, after each recovery, says which answer is right
                inflight = o
                try:
                    r = refunds.record(now, 1000, purchase.CAUSE_VOID)
                except JournalFull:
                    assert flash.ops == before, "JournalFull after writing"
                    full += 1
                    continue
                orc.reversed[o] = r
                orc.last = r
                made += 1
            elif st[0] == "k":
                w = max(0, orc.last - st[1])
                try:
                    j.ack(w)
                except JournalFull:
                    pass
            elif st[0] == "p":
                j.prepare()
            elif st[0] == "b":
                j = Journal(flash)
                j.recover()
                check(j, orc, None, now)
        except PowerCut:
            reboots += 1
            flash.reboot()
            j = Journal(flash)
            j.recover()
            if inflight is None and st[0] in "af" and j.next_seq == orc.last + 2:
                orc.last += 1  # the purchase in flight landed whole: account for it as the journal test does
                if st[0] == "a":
                    orc.purchases.append(orc.last)
                    orc.amounts[orc.last] = (st[1], st[2])
                else:
                    orc.refusals.add(orc.last)
            check(j, orc, inflight, now)
    check(j, orc, None, now)
    assert flash.torn_overwrites == 0, "programmed over torn bytes"
    return {"ops": flash.ops, "reversals": len(orc.reversed), "made": made, "reboots": reboots, "full": full,
            "gone": orc.gone}


def total_ops(name):
    return run(name)["ops"]


def sweep(name, modes=MODES):
    """Cut at every flash operation of workload `name`, in each mode; returns the runs checked."""
    n = total_ops(name)
    runs = 0
    for op in range(n):
        for m in modes:
            run(name, op, m, seed=op + 1)
            runs += 1
    return runs
