"""Card table (issue 3): lookups, RAM, flash per card, deltas and installs on the MicroPython
unix port under the WROOM heap cap, beside the naive dict-in-RAM cache measured in the same run.

CPython builds each table image with the shared builder (cpos.cards.layout.ImageBuilder, streamed to
a file) plus a file of UIDs to look up and a file of deltas; MicroPython opens an empty file
partition through cpos.blockfile.BlockFile (esp32.Partition's interface), installs the image in
4 KB chunks, looks up, applies the deltas and compacts. Prints Markdown.
"""
import json
import os
import struct
import sys
import tempfile
import time

from benchlib import ROOT, run_micropython, table

sys.path[:0] = [os.path.join(ROOT, "lib"), os.path.join(ROOT, "tests", "device")]
from cpos.cards import layout  # noqa: E402
from cpos.cards import delta
from cpos.cards.table import LOG_BLOCKS  # noqa: E402
from cardtable_model import Rng, make_snapshot, make_uid  # noqa: E402

SIZES = (1000, 10000, 100000)
N_LOOKUPS = 2000  # 3 of 4 known cards, 1 of 4 unknown UIDs
N_DELTAS = 300
KEYS = (20400, 202548, 202511)


def build(n, workdir):
    rng = Rng(n)
    cards, accounts = make_snapshot(rng, n)
    t0 = time.time()
    b = layout.ImageBuilder(cards, accounts, 1, 1, KEYS)
    img_path = os.path.join(workdir, "image_%d.bin" % n)
    with open(img_path, "wb") as f:
        b.write(f.write)
    build_s = time.time() - t0
    uids_path = os.path.join(workdir, "uids_%d.bin" % n)
    with open(uids_path, "wb") as f:
        for i in range(N_LOOKUPS):
            uid = cards[rng.below(n)][0] if i % 4 else make_uid(rng)
            f.write(bytes([len(uid)]) + uid + bytes(10 - len(uid)))
    deltas_path = os.path.join(workdir, "deltas_%d.txt" % n)
    accts = sorted(accounts)
    with open(deltas_path, "w") as f:
        for v in range(2, 2 + N_DELTAS):
            acct = accts[rng.below(len(accts))]
            f.write(delta.encode(v, v, delta.BALANCE, account=acct, value=rng.below(90000)).hex() + "\n")
    # a partition with room for this table in both slots (log blocks, header, pages)
    blocks = 2 + 2 * (LOG_BLOCKS + 1 + b.n_pages + max(2, b.n_pages // 20))
    return b, img_path, uids_path, deltas_path, blocks, build_s


def esp32_ram(unix_measured, buffers):
    """docs/heap.md: byte buffers cost ~1x on the ESP32, pointer objects 2x less than on unix."""
    return buffers + (unix_measured - buffers) // 2


def main():
    rows, ram_rows, sync_rows = [], [], []
    with tempfile.TemporaryDirectory() as work:
        for n in SIZES:
            b, img, uids, deltas, blocks, build_s = build(n, work)
            part = os.path.join(work, "part_%d.bin" % n)
            r = json.loads(run_micropython("bench/cardtable_mp.py", "table", part, blocks, img, uids, deltas)
                           .strip().splitlines()[-1])
            assert r["n_cards"] == n and r["found"] > 0
            img_bytes = os.path.getsize(img)
            rows.append([n, b.n_pages, "%.1f" % (img_bytes / n), "%.1f" % (blocks * 4096 / n),
                         r["lookup_p50_us"], r["lookup_p99_us"], "%.2f" % r["reads_per_lookup"],
                         r["lookup_heap_bytes_200"]])
            ram_rows.append([n, r["table_ram_open"], r["table_ram_installed"], r["table_buffers"],
                             esp32_ram(r["table_ram_installed"], r["table_buffers"]), r["code_heap"],
                             r["heap_free_end"]])
            sync_rows.append([n, "%.1f" % build_s, "%.2f" % (r["install_ms"] / 1000.0),
                              "%.0f" % (r["deltas"] * 1000.0 / max(1, r["delta_ms"])), r["delta_compactions"],
                              "%.2f" % (r["compact_ms"] / 1000.0)])
    nv = json.loads(run_micropython("bench/cardtable_mp.py", "naive", N_LOOKUPS).strip().splitlines()[-1])

    print("## Card table (issue 3)\n")
    print("MicroPython unix port, heap capped at the WROOM stand-in (docs/heap.md); the table on a file"
          " partition through `BlockFile`; the image built on CPython by `cpos.cards.layout.ImageBuilder`."
          " %d lookups per size (3 of 4 known cards, 1 of 4 unknown UIDs).\n" % N_LOOKUPS)
    print(table(["cards", "pages", "image B/card", "partition B/card (2 slots)", "lookup p50 µs",
                 "lookup p99 µs", "block reads/lookup", "heap allocated by 200 lookups (B)"], rows))
    print("\nRAM (bytes of MicroPython heap, `gc.mem_alloc()` before/after; the ESP32 column converts"
          " with docs/heap.md: preallocated buffers 1x, objects half of the unix figure):\n")
    print(table(["cards", "table open (unix)", "table installed (unix)", "of which buffers",
                 "table on ESP32 (est.)", "card-table code (unix)", "heap free at end (unix)"], ram_rows))
    print("\nSync path (MicroPython; install = 4 KB chunks written beside the live table, read back,"
          " verified and switched; deltas = balance changes, including the compactions they trigger):\n")
    print(table(["cards", "image build on CPython (s)", "snapshot install (s)", "deltas/s",
                 "compactions during %d deltas" % N_DELTAS, "compaction (s)"], sync_rows))
    print("\nNaive dict-in-RAM cache in the same heap (`{uid: {field: value}}`, filled until MemoryError):\n")
    print(table(["bytes per card (unix)", "max cards under the cap", "lookup p50 µs", "lookup p99 µs",
                 "cards at 100,000 would need (MB, unix)"],
                [[nv["bytes_per_card"], nv["max_cards"], nv["lookup_p50_us"], nv["lookup_p99_us"],
                  "%.1f" % (nv["bytes_per_card"] * 100000 / 1e6)]]))


if __name__ == "__main__":
    main()
