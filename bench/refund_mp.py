"""Reversal benchmark workloads, run on the MicroPython unix port by bench/bench_refund.py.

Usage: refund_mp.py MODE PATH N; prints one JSON object. PATH is a 256 KB journal partition
kept in a file (cpos.blockfile.BlockFile), erased first; N purchases follow the one reversed.
  scan    cpos.refund as built: check() reads the purchase and every record after it, then
          record() appends the reversal (the time of each, records read, bytes allocated)
  naive   the alternative: a RAM set of reversed seqs, rebuilt at boot by reading the whole
          journal (boot time, set size in heap bytes), then an O(1) check
"""
import gc
import json
import sys

from cpos import purchase, reasons
from cpos.blockfile import BlockFile
from cpos.compat import ticks_diff, ticks_us
from cpos.journal import Journal
from cpos.refund import Refunds

UID = b"\x04\xa1\xb2\xc3\x11\x22\x33"
T0 = 1764068400
SIZE = 256 * 1024


def fill(path, n, reversals=0):
    """A fresh journal: one purchase (seq 1), n more, and `reversals` reversals among them."""
    dev = BlockFile(path, SIZE)
    for b in range(SIZE // 4096):
        dev.ioctl(6, b)
    j = Journal(dev)
    j.recover()
    for i in range(n + 1):
        j.append(T0 + i, UID, 1000 + i % 50, 2500, 0, 0, 42, "1x Sandwich", 100000 - i, reasons.APPROVED)
    r = Refunds(j, 42, 86400)
    for k in range(reversals):
        if r.check(2 + k, T0 + n + 1) == reasons.APPROVED:
            r.record(T0 + n + 1, 0, purchase.CAUSE_VOID)
    return dev, j


def bench_scan(path, n):
    dev, j = fill(path, n)
    r = Refunds(j, 42, 86400)
    gc.collect()
    a0 = gc.mem_alloc()
    t0 = ticks_us()
    code = r.check(1, T0 + n + 1)
    t1 = ticks_us()
    a1 = gc.mem_alloc()
    seq = r.record(T0 + n + 1, 0, purchase.CAUSE_VOID)
    t2 = ticks_us()
    again = r.check(1, T0 + n + 2)  # the repeat: finds the reversal at the end of the scan
    t3 = ticks_us()
    dev.close()
    assert code == reasons.APPROVED and again == reasons.ALREADY_REVERSED and seq == n + 2
    return {"check_us": ticks_diff(t1, t0), "record_us": ticks_diff(t2, t1), "recheck_us": ticks_diff(t3, t2),
            "scanned": r.scanned, "check_alloc": a1 - a0}


def bench_naive(path, n):
    dev, j = fill(path, n, reversals=min(n, 50))
    j = Journal(dev)
    j.recover()
    gc.collect()
    a0 = gc.mem_alloc()
    t0 = ticks_us()
    reversed_seqs = set()
    buf = bytearray(purchase.SIZE)
    s = 1
    while True:
        got = j.read(s, buf, True)
        if got is None:
            break
        o = purchase.reverses(buf)
        if o:
            reversed_seqs.add(o)
        s = got + 1
    t1 = ticks_us()
    gc.collect()
    a1 = gc.mem_alloc()
    t2 = ticks_us()
    hit = 1 in reversed_seqs
    t3 = ticks_us()
    dev.close()
    return {"boot_us": ticks_diff(t1, t0), "set_bytes": a1 - a0, "check_us": ticks_diff(t3, t2),
            "held": len(reversed_seqs), "hit": hit}


def main():
    mode, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = bench_scan(path, n) if mode == "scan" else bench_naive(path, n)
    print(json.dumps(out))


main()
