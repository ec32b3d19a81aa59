"""MicroPython side of bench/bench_lookup.py (runs under the WROOM heap cap).

  lookup_mp.py PARTITION BLOCKS CHANGES
      a card table of 30 cards on a file partition of BLOCKS 4 KB blocks; each account gets
      CHANGES balance changes (a till's rush: the backend's balance after each purchase),
      with the upkeep steps the table asks for in between, as the app runs them (a bucket
      filled past REFRESH_AT is refreshed); then every card is looked up 20 times. Prints one JSON object: the
      lookup's time, and the naive alternative's (every change of the account decoded, in
      order, as the lookup did before), on the same table.
"""
import gc
import json
import sys
import time

from cpos.blockfile import BlockFile
from cpos.cards import changes, layout
from cpos.cards import delta as carddelta
from cpos.cards.table import CardTable, FOUND
from cpos.rules import ACTIVE, ALL_PLACES, NO_LIMIT, CardRecord, Spends

N = 30


def uid(i):
    return bytes([4, 0, 0, i])


def build(path, blocks, n_changes):
    dev = BlockFile(path, blocks * 4096)
    t = CardTable(dev)
    free = [NO_LIMIT] * 6
    accounts = {i: (10 ** 7, ALL_PLACES, free, False, 0, (0, 0, 0), [0] * 6) for i in range(1, N + 1)}
    b = layout.ImageBuilder([(uid(i), i, ACTIVE) for i in range(1, N + 1)], accounts, 1, 0)
    assert t.install_begin(1, 0, b.n_pages + 1) == 0
    got = []
    b.write(lambda block: got.append(t.install_chunk(len(got), block)))
    assert t.install_commit() == 0
    v = 1
    for k in range(n_changes):
        for a in range(1, N + 1):
            v += 1
            r = t.apply_delta(carddelta.encode(v, v, carddelta.BALANCE, account=a, value=10 ** 7 - 100 * k))
            assert r == 0, r
            while t.wants_step and t.chg.due:
                t.step()
    return dev, t


def naive(t, acct, d):
    """What the lookup's change pass did before: decode every change of the account in its
    bucket, oldest first (the state it gives is the same; only the cost differs)."""
    c = t.chg
    b = changes.account_bucket(acct, c.nb)
    if c.block_of(b) == changes.NONE:
        return 0
    p = t.page
    t.dev.readblocks(c.first + c.block_of(b), p)
    end, o, n = c.fill_of(b), changes.HDR, 0
    while o < end:
        ln = p[o] | (p[o + 1] << 8)
        if changes.rec_account(p, o + 2) == acct:
            d.decode(p, o + 2, ln, False)
            n += 1
        o += 2 + ln
    return n


def main(path, blocks, n_changes):
    dev, t = build(path, blocks, n_changes)
    card, sp = CardRecord(), Spends()
    d = carddelta.Delta()
    fills = [t.chg.fill_of(changes.account_bucket(a, t.chg.nb)) for a in range(1, N + 1)]
    fills.sort()
    out = {"changes": n_changes, "bucket_fill_p50": fills[N // 2], "bucket_fill_max": fills[-1],
           "buckets": t.chg.nb, "naive_decodes_max": max(naive(t, a, d) for a in range(1, N + 1))}
    for name, fn in (("lookup", lambda i: t.lookup(uid(i), card, sp)), ("naive", lambda i: naive(t, i, d))):
        us = []
        for _ in range(20):
            for i in range(1, N + 1):
                gc.collect()
                t0 = time.ticks_us()
                fn(i)
                us.append(time.ticks_diff(time.ticks_us(), t0))
        us.sort()
        out[name + "_p50_us"] = us[len(us) // 2]
        out[name + "_p99_us"] = us[min(len(us) - 1, int(0.99 * (len(us) - 1) + 0.5))]
    assert t.lookup(uid(1), card, sp) == FOUND
    assert card.balance == 10 ** 7 - 100 * max(0, n_changes - 1)  # the newest change counts
    dev.close()
    print(json.dumps(out))


main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
