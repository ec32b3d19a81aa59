"""MicroPython side of bench/bench_cardtable.py (runs under the WROOM heap cap).

  cardtable_mp.py table PARTITION BLOCKS IMAGE UIDS DELTAS
      open a card table on a file partition, install IMAGE in 4 KB chunks, time lookups
      of the UIDs in UIDS (hex lines), apply the deltas in DELTAS (hex lines) with the
      upkeep steps they call for.
  cardtable_mp.py naive N_LOOKUPS
      fill a dict-of-dicts card cache until the heap is full.
Prints one JSON object.
"""
import gc
import json
import sys
import time
from binascii import unhexlify

gc.collect()


def alloc():
    gc.collect()
    return gc.mem_alloc()


def pct(v, p):
    v.sort()
    return v[min(len(v) - 1, int(p * (len(v) - 1) / 100 + 0.5))]


def table(part, blocks, image, uids_path, deltas_path):
    out = {}
    a = alloc()
    from cpos.blockfile import BlockFile
    from cpos.cards.table import CardTable, FOUND, APPLIED
    from cpos.rules import CardRecord, Spends
    from cpos.uid import UID_LENGTHS
    import cpos.cards.install  # noqa: F401  (loaded by the first install or compaction; code, not table RAM)
    out["code_heap"] = alloc() - a
    dev = BlockFile(part, blocks * 4096)
    card = CardRecord()
    spends = Spends()
    buf = bytearray(4096)  # the bench's chunk buffer (a device has its MQTT message instead)
    a = alloc()
    t = CardTable(dev)
    out["table_ram_open"] = alloc() - a
    out["table_buffers"] = t.ram_bytes()
    # install the snapshot, 4 KB chunks read from a file into one buffer
    f = open(image, "rb")
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    n = (size + 4095) // 4096
    t0 = time.ticks_ms()
    assert t.install_begin(1, 1, n) == 0
    for i in range(n):
        f.readinto(buf)
        assert t.install_chunk(i, buf) == 0
    r = t.install_commit()
    out["install_ms"] = time.ticks_diff(time.ticks_ms(), t0)
    f.close()
    assert r == 0, r
    out["n_cards"] = t.n_cards
    out["n_pages"] = t.n_pages
    out["table_ram_installed"] = alloc() - a
    # lookups: UIDS holds 11-byte records (length, UID padded to 10), copied into
    # preallocated buffers of each length, so the loop itself allocates nothing
    with open(uids_path, "rb") as fu:
        recs = fu.read()
    nu = len(recs) // 11
    bufs = [None] * 11
    for k in UID_LENGTHS:
        bufs[k] = bytearray(k)
    times = []
    found = 0

    def put(i):
        o = i * 11
        b = bufs[recs[o]]
        for j in range(len(b)):
            b[j] = recs[o + 1 + j]
        return b
    for i in range(nu):
        b = put(i)
        t0 = time.ticks_us()
        r = t.lookup(b, card, spends)
        times.append(time.ticks_diff(time.ticks_us(), t0))
        found += r == FOUND
    out["lookups"] = nu
    out["found"] = found
    out["lookup_p50_us"] = pct(times, 50)
    out["lookup_p99_us"] = pct(times, 99)
    times = None
    reads = [0]
    orig = dev.readblocks

    def counting(block, b, off=0):
        reads[0] += 1
        orig(block, b, off)
    dev.readblocks = counting
    for i in range(200):
        t.lookup(put(i), card, spends)
    del dev.readblocks
    out["reads_per_lookup"] = reads[0] / 200
    # heap taken by lookups (none expected): collector off, count what is allocated
    b = put(0)
    gc.collect()
    gc.disable()
    m0 = gc.mem_alloc()
    for i in range(200):
        t.lookup(b, card, spends)
    out["lookup_heap_bytes_200"] = gc.mem_alloc() - m0
    gc.enable()
    recs = None
    # deltas (balance changes), with the upkeep steps they call for (as the sync task does)
    refreshes = 0
    nd = 0
    t0 = time.ticks_ms()
    with open(deltas_path) as fd:
        for line in fd:
            r = t.apply_delta(unhexlify(line.strip()))
            assert r == APPLIED, r
            while t.wants_step:
                refreshes += t.step()
            nd += 1
    ms = time.ticks_diff(time.ticks_ms(), t0)
    out["deltas"] = nd
    out["delta_ms"] = ms
    out["delta_refreshes"] = refreshes
    gc.collect()
    out["heap_free_end"] = gc.mem_free()
    dev.close()
    return out


def naive(n_lookups):
    """The naive cache: {uid: {field: value}} as a first implementation would hold it."""
    n_lookups = min(n_lookups, 500)
    times = [0] * n_lookups  # taken before the heap fills: nothing to allocate afterwards
    cache = {}
    a = alloc()
    i = 0
    try:
        while True:
            uid = bytes([i & 255, (i >> 8) & 255, (i >> 16) & 255, 0x80, 1, 2, 3])
            cache[uid] = {"account": i, "status": 0, "balance": 10000 + i, "places": 3,
                          "limits": [-1, -1, -1, -1, -1, -1], "enrolled": False, "topup_kr": 0,
                          "keys": [20400, 202548, 202511], "totals": [0, 0, 0, 0, 0, 0]}
            i += 1
            uid = None
    except MemoryError:
        pass
    n = len(cache)
    gc.collect()
    used = gc.mem_alloc() - a
    for k in range(n - 20, n):  # room for the lookups' 7-byte keys
        del cache[bytes([k & 255, (k >> 8) & 255, (k >> 16) & 255, 0x80, 1, 2, 3])]
    n -= 20
    k = 0
    for j in range(n_lookups):
        k = (k + 7919) % n
        uid = bytes([k & 255, (k >> 8) & 255, (k >> 16) & 255, 0x80, 1, 2, 3])
        t0 = time.ticks_us()
        rec = cache.get(uid)
        times[j] = time.ticks_diff(time.ticks_us(), t0)
        assert rec is not None
    times.sort()
    return {"max_cards": n + 20, "bytes_per_card": used // max(1, n + 20), "lookup_p50_us": pct(times, 50),
            "lookup_p99_us": pct(times, 99)}


if sys.argv[1] == "table":
    res = table(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
else:
    res = naive(int(sys.argv[2]))
print(json.dumps(res))
