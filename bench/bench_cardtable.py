"""Card table (issues 3 and 13): lookups, RAM, flash per card, deltas and installs on the
MicroPython unix port under the WROOM heap cap, beside the naive alternatives measured in the
same run; and the lunch storm (`--storm`).

CPython builds each table image with the shared builder (cpos.cards.layout.ImageBuilder, streamed to
a file) plus a file of UIDs to look up and a file of deltas; MicroPython opens an empty file
partition through cpos.blockfile.BlockFile (esp32.Partition's interface), installs the image in
4 KB chunks, looks up and applies the deltas (with the upkeep steps they call for). Prints Markdown.

    python bench/bench_cardtable.py --storm --cards 100000 --json

runs the storm alone (bench/cardtable_storm_mp.py: the real sync code in one asyncio loop,
10 simulated minutes of a municipality's lunch, a tap every simulated second) and prints one
JSON object; without --json it prints the storm's Markdown. `make bench` prints both.
"""
import argparse
import json
import os
import struct
import sys
import tempfile
import time

from benchlib import ROOT, run_micropython, table

sys.path[:0] = [ROOT, os.path.join(ROOT, "lib"), os.path.join(ROOT, "tests", "device")]
from cpos.cards import layout  # noqa: E402
from cpos.cards import delta  # noqa: E402
from cpos.cards.table import geometry  # noqa: E402
from cpos.net import signing  # noqa: E402
from cpos.net import messages as protocol  # noqa: E402
from cardtable_model import Rng, make_snapshot, make_uid  # noqa: E402
from host_tools import partitions  # noqa: E402

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
    return b, img_path, uids_path, deltas_path, blocks_for(b.n_pages), build_s


def blocks_for(n_pages):
    """The smallest partition (blocks) whose default geometry has room for n_pages pages in
    each image slot: everything the table needs on flash, change store included."""
    n = 2 * n_pages + 6
    while geometry(n)[0] - 1 < n_pages:
        n += 1
    return n


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
                              "%.0f" % (r["deltas"] * 1000.0 / max(1, r["delta_ms"])), r["delta_refreshes"]])
    nv = json.loads(run_micropython("bench/cardtable_mp.py", "naive", N_LOOKUPS).strip().splitlines()[-1])

    print("## Card table (issues 3 and 13)\n")
    print("MicroPython unix port, heap capped at the WROOM stand-in (docs/heap.md); the table on a file"
          " partition through `BlockFile`; the image built on CPython by `cpos.cards.layout.ImageBuilder`."
          " %d lookups per size (3 of 4 known cards, 1 of 4 unknown UIDs).\n" % N_LOOKUPS)
    print(table(["cards", "pages", "image B/card", "partition B/card (2 slots + change store)", "lookup p50 µs",
                 "lookup p99 µs", "block reads/lookup", "heap allocated by 200 lookups (B)"], rows))
    print("\nLookups here are of cards whose accounts have no change since the image (one block"
          " read); a card whose account changed reads its bucket too: see the storm below.")
    print("\nRAM (bytes of MicroPython heap, `gc.mem_alloc()` before/after; the ESP32 column converts"
          " with docs/heap.md: preallocated buffers 1x, objects half of the unix figure):\n")
    print(table(["cards", "table open (unix)", "table installed (unix)", "of which buffers",
                 "table on ESP32 (est.)", "card-table code (unix)", "heap free at end (unix)"], ram_rows))
    print("\nSync path (MicroPython; install = 4 KB chunks written beside the live table, read back,"
          " checked page by page and switched; deltas = balance changes, with the upkeep steps they call for):\n")
    print(table(["cards", "image build on CPython (s)", "snapshot install (s)", "deltas/s",
                 "bucket refreshes during %d deltas" % N_DELTAS], sync_rows))
    print("\nNaive dict-in-RAM cache in the same heap (`{uid: {field: value}}`, filled until MemoryError):\n")
    print(table(["bytes per card (unix)", "max cards under the cap", "lookup p50 µs", "lookup p99 µs",
                 "cards at 100,000 would need (MB, unix)"],
                [[nv["bytes_per_card"], nv["max_cards"], nv["lookup_p50_us"], nv["lookup_p99_us"],
                  "%.1f" % (nv["bytes_per_card"] * 100000 / 1e6)]]))


# -- the storm (issue 13) ------------------------------------------------------------
# ESP32 cost model (docs/benchmarks.md states it): flash from the counted operations, CPU
# from the unix port's time with its file I/O taken out.
ERASE_MS, ERASE_WORST_MS = 45.0, 400.0  # 4 KB sector erase, typical and worst
PROGRAM_MS = 0.7  # one 256-byte page program
READ_MS = 0.2  # one 4 KB block read through esp32.Partition (SPI flash at 40 MHz, with overhead)
CPU_X, CPU_WORST_X = 20.0, 30.0  # ESP32 time = unix-port time x this
SITE, TID = "bench", "t0001"
PER_DAY = 100000  # balance changes a day, for the wear figure
TODAY_LOOKUP_P99_US = 56  # docs/benchmarks.md before issue 13 (format 1, 100,000 cards)


def esp32_ms(cpu_us, erases, pages, reads, worst=False):
    return (cpu_us / 1000.0 * (CPU_WORST_X if worst else CPU_X) + erases * (ERASE_WORST_MS if worst else ERASE_MS)
            + pages * PROGRAM_MS + reads * READ_MS)


def storm_inputs(n, work, minutes, rate, seed=13):
    """Image, messages and tap UIDs of a municipality's lunch over `n` cards."""
    rng = Rng(seed)
    cards, accounts = make_snapshot(rng, n)
    b = layout.ImageBuilder(cards, accounts, 1, 1, KEYS)
    img = os.path.join(work, "storm_image.bin")
    with open(img, "wb") as f:
        b.write(f.write)
    raw_key = os.urandom(32)
    key = signing.Key(raw_key)
    topic = protocol.topic(SITE, TID, protocol.SYNC_DOWN).encode()
    msgs = os.path.join(work, "storm_messages.bin")
    v = 1
    counts = {"balance": 0, "totals": 0, "topup": 0, "block": 0}
    purchases = minutes * 60 * rate
    blocks_at = set(rng.below(purchases) for _ in range(5))  # a few lost cards blocked
    with open(msgs, "wb") as f:
        def put(ms, kind, **kw):
            nonlocal v
            v += 1
            d = delta.encode(v, 0, kind, **kw)
            m = signing.encode(key, topic, signing.DELTA, v, d)
            f.write(struct.pack("<IH", ms, len(m)) + m)
        for i in range(purchases):
            ms = i * 1000 // rate
            uid, acct, _ = cards[rng.below(n)]
            put(ms, delta.BALANCE, account=acct, value=rng.below(90000))
            counts["balance"] += 1
            if acct % 3 == 0:  # a third of the accounts have limits: their totals move too
                put(ms, delta.TOTALS, account=acct, value=([20400, 202548, 202511],
                                                             [rng.below(5000), 0, rng.below(9000), 0, 0, 0]))
                counts["totals"] += 1
            if rng.below(50) == 0:  # 2 % of purchases bring an automatic top-up
                put(ms, delta.BALANCE, account=acct, value=rng.below(90000) + 20000)
                counts["topup"] += 1
            if i in blocks_at:
                put(ms, delta.BLOCK, uid=cards[rng.below(n)][0])
                counts["block"] += 1
    taps = os.path.join(work, "storm_taps.bin")
    with open(taps, "wb") as f:
        for _ in range(minutes * 60 + 50):
            uid = cards[rng.below(n)][0]
            f.write(bytes([len(uid)]) + uid + bytes(10 - len(uid)))
    return b, img, msgs, taps, raw_key.hex(), counts, v - 1


def hist_pct(h, pct):
    """Upper edge (µs) of the histogram bin holding the pct-th percentile."""
    need = pct / 100.0 * sum(h)
    acc = 0
    for i, c in enumerate(h):
        acc += c
        if acc >= need:
            return 1.25 ** (i + 1)
    return 1.25 ** len(h)


def robust(kind):
    """(total ms, worst single step ms) of a kind of step on an ESP32, from its classes of
    flash work: each class's steps at the class's median CPU time (x CPU_X) with their
    flash work; the worst step is the costliest class's largest flash work at its median CPU.
    Medians, because this machine's other jobs decide the maxima of the unix port's times."""
    total = worst = 0.0
    total_w = worst_w = 0.0
    for key, c in kind.get("classes", {}).items():
        med = hist_pct(c["hist"], 50)
        total += c["n"] * med / 1000.0 * CPU_X
        total_w += c["n"] * med / 1000.0 * CPU_WORST_X
        worst = max(worst, esp32_ms(med, c["e"], c["p"], c["r"]))
        worst_w = max(worst_w, esp32_ms(med, c["e"], c["p"], c["r"], True))
    flash = kind["erases"] * ERASE_MS + kind["pages"] * PROGRAM_MS + kind["reads"] * READ_MS
    flash_w = kind["erases"] * ERASE_WORST_MS + kind["pages"] * PROGRAM_MS + kind["reads"] * READ_MS
    return total + flash, worst, total_w + flash_w, worst_w


def cpu_p99(s):
    """Upper edge of the histogram bin holding a kind's 99th-percentile CPU time (µs)."""
    h = s["hist"]
    need = 0.99 * sum(h)
    acc = 0
    for i, c in enumerate(h):
        acc += c
        if acc >= need:
            return 1.25 ** (i + 1)
    return s["max_cpu_us"]


def storm(n, minutes=10, rate=20):
    """Run the storm; one dict of figures (the JSON keys the issue names, and more)."""
    with tempfile.TemporaryDirectory() as work:
        b, img, msgs, taps, keyhex, counts, n_deltas = storm_inputs(n, work, minutes, rate)
        n_pages = b.n_pages
        need = blocks_for(n_pages)
        module = min([mb for mb, lay in partitions.LAYOUTS.items()
                      if geometry(partitions.partition(lay, "cardtable")[1] // 4096)[0] - 1 >= n_pages] or [0])
        blocks = partitions.partition(partitions.LAYOUTS[module], "cardtable")[1] // 4096 if module else need
        part = os.path.join(work, "storm_part.bin")
        t0 = time.time()
        out = run_micropython("bench/cardtable_storm_mp.py", part, blocks, img, msgs, taps, keyhex, SITE, TID)
        lines = out.strip().splitlines()
        assert lines[-1] == "END", lines[-3:]
        r = {}
        for line in lines[:-1]:
            if line.startswith("["):
                k, v = json.loads(line)
                r[k] = v
        run_s = time.time() - t0
        assert r["taps"] >= minutes * 60 - 1, ("taps", r["taps"])  # the tap task lived to the end
    st = r["storm"]
    deltas = r["applied"]
    assert deltas == n_deltas and r["rejected"] == 0, (deltas, n_deltas, r["why"])
    busy = worst_busy = 0.0
    erases = 0
    tap_wait = tap_wait_worst = 0.0
    first = first_worst = 0.0  # the costliest message or delta: the step a card may arrive at the start of
    for k in ("message", "delta", "upkeep_step", "tap"):
        s = st.get(k)
        if s:
            tot, one, tot_w, one_w = robust(s)
            busy += tot
            worst_busy += tot_w
            if k in ("message", "delta"):  # a DELTAS message yields after each delta it applies
                first, first_worst = max(first, one), max(first_worst, one_w)
            else:
                tap_wait += one  # then the costliest upkeep step runs before the tap task
                tap_wait_worst += one_w
            if k != "tap":
                erases += s["erases"]
    tap_wait += first
    tap_wait_worst += first_worst

    buffers = r["table_buffers"]
    ram_unix = r["table_ram_after"]
    cpp = r["n_cards"] / float(r["n_pages"])
    balance_changes = counts["balance"] + counts["topup"]
    scale = PER_DAY / float(balance_changes)
    # the change store fills with live changes; at half full the table asks for a snapshot.
    # Per day: the live bytes this storm left, scaled to a day's balance changes (an upper
    # bound: it counts every change as a new account), over half the store.
    store_cap = r["store_buckets"] * (4096 - 20)
    snapshots_per_day = r["store_used"] * scale / (store_cap / 2.0)
    snap_erases = 1 + r["n_pages"] + 1  # header, pages, commit record
    naive = r["naive"]["naive_compaction"]
    res = {
        "cards": r["n_cards"], "pages": r["n_pages"], "cards_per_page": round(cpp, 1),
        "partition_blocks": blocks, "module_mb": module,
        "simulated_s": minutes * 60, "purchases_per_s": rate, "deltas": deltas, "delta_counts": counts,
        "deltas_per_s": round(deltas / (r["storm_wall_ms"] / 1000.0), 1),
        "longest_tap_wait_ms": round(r["tap_wait_max_us"] / 1000.0, 2),
        "tap_wait_p99_ms": round(r["tap_wait_p99_us"] / 1000.0, 2),
        "taps": r["taps"],
        "esp32_deltas_per_s": round(deltas / (busy / 1000.0), 1),
        "esp32_deltas_per_s_worst": round(deltas / (worst_busy / 1000.0), 1),
        "esp32_longest_tap_wait_ms": round(tap_wait, 1),
        "esp32_longest_tap_wait_ms_worst": round(tap_wait_worst, 1),
        "erases_per_1000_deltas": round(erases * 1000.0 / deltas, 2),
        "snapshots_per_day_est": round(snapshots_per_day, 2),
        "erases_per_1000_deltas_with_snapshots": round(
            (erases * scale + snapshots_per_day * snap_erases) * 1000.0 / (deltas * scale), 2),
        "esp32_worst_sector_erases_per_day": round(max(r["max_erases_change_block"] * scale,
                                                       snapshots_per_day / 2.0) + snapshots_per_day / 2.0, 1),
        "esp32_table_ram_bytes": int(esp32_ram(ram_unix, buffers)),
        "table_ram_unix_bytes": ram_unix, "table_buffers_bytes": buffers,
        "flash_bytes_per_card": round(need * 4096.0 / r["n_cards"], 1),
        "cards_in_4mb_layout": int(partitions.card_capacity(partitions.LAYOUT_4MB, cpp)),
        "cards_in_4mb_layout_conservative": partitions.card_capacity(partitions.LAYOUT_4MB),
        "lookup_p50_us": r["lookup_after_p50_us"], "lookup_p99_us": r["lookup_after_p99_us"],
        "lookup_reads": r["lookup_after_reads"],
        "lookup_p99_us_unchanged_accounts": r["lookup_before_p99_us"],
        "lookup_p99_vs_today": round(r["lookup_after_p99_us"] / float(TODAY_LOOKUP_P99_US), 2),
        "steps": {k: {"n": v["n"], "erases": v["erases"], "pages": v["pages"], "reads": v["reads"],
                      "cpu_ms": round(v["cpu_us"] / 1000.0, 1), "cpu_median_us": int(hist_pct(v["hist"], 50)),
                      "cpu_p99_us": int(cpu_p99(v)), "cpu_max_us": v["max_cpu_us"],
                      "esp32_worst_ms": round(robust(v)[1], 1)} for k, v in st.items()},
        "naive_compaction_unix_ms": round((naive["cpu_us"]) / 1000.0, 1),
        "naive_compaction_erases": naive["erases"],
        "naive_compaction_esp32_ms": round(esp32_ms(naive["cpu_us"], naive["erases"], naive["pages"], naive["reads"])),
        "mount_unix_ms": round(r["mount"]["cpu_us"] / 1000.0, 1),
        "mount_reads": r["mount"]["reads"],
        "esp32_mount_ms": round(esp32_ms(r["mount"]["cpu_us"], 0, 0, r["mount"]["reads"])),
        "needs_snapshot_after": r["needs_snapshot"], "store_used_bytes": r["store_used"],
        "assumptions": "ESP32 = unix-port CPU (file I/O taken out) x %g (worst x %g) + %g ms per erase (worst %g)"
                       " + %g ms per 256-byte program + %g ms per 4 KB read, each step at the median unix time of"
                       " steps with the same flash work (this machine's other jobs set the maxima); tap wait ="
                       " the costliest message or delta (a DELTAS message yields after each delta it applies) + the costliest"
                       " upkeep step + the costliest tap, back to back;"
                       " wear at %d balance changes a day"
                       % (CPU_X, CPU_WORST_X, ERASE_MS, ERASE_WORST_MS, PROGRAM_MS, READ_MS, PER_DAY),
        "run_s": round(run_s, 1),
    }
    return res


def storm_markdown(res):
    rows = [
        ["deltas/s sustained (unix, measured)", res["deltas_per_s"], "", ""],
        ["ESP32 deltas/s (est.)", res["esp32_deltas_per_s"], res["esp32_deltas_per_s_worst"], ">= 60"],
        ["longest tap wait, unix measured (ms)", res["longest_tap_wait_ms"], "", "<= 10"],
        ["ESP32 longest tap wait (ms, est.)", res["esp32_longest_tap_wait_ms"], res["esp32_longest_tap_wait_ms_worst"],
         "<= 100"],
        ["erases per 1000 deltas (storm)", res["erases_per_1000_deltas"], "", "<= 20"],
        ["erases per 1000 deltas, snapshots the store asks for included (est.)",
         res["erases_per_1000_deltas_with_snapshots"], "", "<= 20"],
        ["ESP32 worst sector erases per day (est.)", res["esp32_worst_sector_erases_per_day"], "", "<= 25"],
        ["ESP32 table RAM, downlink on (B, est.)", res["esp32_table_ram_bytes"], "", "<= 8,192"],
        ["flash bytes per card (everything)", res["flash_bytes_per_card"], "", "<= 32"],
        ["cards in the 4 MB layout", res["cards_in_4mb_layout"], res["cards_in_4mb_layout_conservative"], ">= 40,000"],
        ["lookup p99 (µs, unix), changed accounts", res["lookup_p99_us"], "", "<= %d (2x today)" % (2 * TODAY_LOOKUP_P99_US)],
        ["block reads per lookup", res["lookup_reads"], "", "1"],
    ]
    out = ["\n### Lunch storm (issue 13)\n",
           "%d cards (%d pages, %.1f cards a page) on the %s card partition (%d blocks); %d simulated seconds of"
           " %d purchases a second: %d deltas (%s), signed downlink messages handed to the real `cpos.net.sync.Sync`"
           " in one asyncio loop with its upkeep task and a tap every simulated second (%d taps). MicroPython unix port"
           " under the WROOM heap cap.\n"
           % (res["cards"], res["pages"], res["cards_per_page"],
              ("%d MB layout's" % res["module_mb"]) if res["module_mb"] else "smallest", res["partition_blocks"],
              res["simulated_s"], res["purchases_per_s"], res["deltas"],
              ", ".join("%d %s" % (v, k) for k, v in sorted(res["delta_counts"].items())), res["taps"]),
           table(["figure", "value", "worst case / conservative", "target"], rows),
           "\nAssumptions: %s.\n" % res["assumptions"],
           "Steps (counts over the storm; unix times with the file I/O taken out; the ESP32 column is the"
           " costliest class of flash work of that step at its median time):\n",
           table(["step", "n", "erases", "programs", "reads", "unix time ms (all)", "median µs", "p99 µs",
                  "max µs", "ESP32 costliest (ms, est.)"],
                 [[k, v["n"], v["erases"], v["pages"], v["reads"], v["cpu_ms"], v["cpu_median_us"], v["cpu_p99_us"],
                   v["cpu_max_us"], v["esp32_worst_ms"]] for k, v in sorted(res["steps"].items())]),
           "\nThe naive alternative, measured in the same run on the same table: the old design's whole-table"
           " compaction (every page read, decoded, encoded, erased and programmed into the other slot) took"
           " %.0f ms on the unix port, %d erases, about %.1f s on an ESP32 (est.) with no tap served; the old"
           " design ran one every few dozen distinct accounts (issue 13: 52-107 s stalls, 7,200-9,600 erases"
           " per 1000 deltas).\n" % (res["naive_compaction_unix_ms"], res["naive_compaction_erases"],
                                     res["naive_compaction_esp32_ms"] / 1000.0),
           "A reboot after the storm mounts the table in %.0f ms on the unix port (%d block reads; about %.1f s on an"
           " ESP32, est.), before the first tap.\n" % (res["mount_unix_ms"], res["mount_reads"],
                                                      res["esp32_mount_ms"] / 1000.0),
           "The change store held %d bytes of live changes after the storm (snapshot asked for: %s); at %d balance"
           " changes a day it would ask for about %.1f snapshots a day (upper estimate), each %d erases.\n"
           % (res["store_used_bytes"], res["needs_snapshot_after"], PER_DAY, res["snapshots_per_day_est"],
              res["pages"] + 2)]
    return "\n".join(out)


def cli():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--storm", action="store_true", help="run the lunch storm only")
    ap.add_argument("--cards", type=int, default=100000)
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--rate", type=int, default=20, help="purchases a second across the municipality")
    ap.add_argument("--json", action="store_true", help="print one JSON object (with --storm)")
    a = ap.parse_args()
    if a.storm:
        res = storm(a.cards, a.minutes, a.rate)
        print(json.dumps(res) if a.json else storm_markdown(res))
        return
    main()
    print(storm_markdown(storm(a.cards, a.minutes, a.rate)))


if __name__ == "__main__":
    cli()
