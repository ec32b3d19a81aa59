"""MicroPython side of `bench/bench_cardtable.py --storm` (runs under the WROOM heap cap).

  cardtable_storm_mp.py PARTITION BLOCKS IMAGE MESSAGES TAPS KEYHEX SITE TID

Opens a card table on a file partition through a counting wrapper, installs IMAGE in
4 KB chunks, then runs the storm in one asyncio loop, as the firmware does: a feeder
task hands each signed downlink message (MESSAGES: u32 simulated ms, u16 length,
payload) to the real `cpos.net.sync.Sync` callback and yields, the real sync task
does the table's upkeep steps, and a tap task looks a card up (TAPS: 11-byte records)
every simulated second. Every step (a message, an upkeep step, a tap) is timed and
its flash operations counted, so the host can turn each into an ESP32 estimate.
Then it times lookups, and the naive whole-table compaction of the old design
(every page read, decoded, re-encoded and written to the other slot) on the same
table. Prints one JSON object.
"""
import asyncio
import gc
import math
from binascii import unhexlify
import json
import sys
import time

from cpos.blockdev import BLOCK_ERASE
from cpos.blockfile import BlockFile
from cpos.cards import layout
from cpos.cards.table import CardTable, FOUND
from cpos.net.sync import Sync
from cpos.net import signing
from cpos.rules import CardRecord, Spends
from cpos.uid import UID_LENGTHS


class Counting:
    """The block device, counting erases, 256-byte program pages and block reads, and the
    host time spent in its file I/O (taken out of the CPU time: an ESP32 spends flash time
    instead, estimated from the counts)."""

    def __init__(self, dev, blocks):
        self.dev = dev
        self.erases = self.pages = self.reads = 0
        self.io_us = 0
        self.per_block = bytearray(blocks)  # erases per block (saturating at 255)

    def readblocks(self, block, buf, offset=0):
        t0 = time.ticks_us()
        self.reads += 1
        self.dev.readblocks(block, buf, offset)
        self.io_us += time.ticks_diff(time.ticks_us(), t0)

    def writeblocks(self, block, buf, offset=None):
        t0 = time.ticks_us()
        s = block * 4096 + (offset or 0)
        self.pages += (s + len(buf) - 1) // 256 - s // 256 + 1
        self.dev.writeblocks(block, buf, offset)
        self.io_us += time.ticks_diff(time.ticks_us(), t0)

    def ioctl(self, op, arg=0):
        if op == BLOCK_ERASE:
            t0 = time.ticks_us()
            self.erases += 1
            if self.per_block[arg] < 255:
                self.per_block[arg] += 1
            r = self.dev.ioctl(op, arg)
            self.io_us += time.ticks_diff(time.ticks_us(), t0)
            return r
        return self.dev.ioctl(op, arg)


class Steps:
    """Per kind of step: count, and the worst step's (cpu_us, erases, pages, reads); totals."""

    def __init__(self, dev):
        self.dev = dev
        self.kinds = {}

    def begin(self):
        d = self.dev
        return (time.ticks_us(), d.io_us, d.erases, d.pages, d.reads)

    def end(self, kind, s):
        d = self.dev
        cpu = time.ticks_diff(time.ticks_us(), s[0]) - (d.io_us - s[1])
        e, p, r = d.erases - s[2], d.pages - s[3], d.reads - s[4]
        k = self.kinds.get(kind)
        if k is None:
            k = self.kinds[kind] = {"n": 0, "cpu_us": 0, "erases": 0, "pages": 0, "reads": 0, "worst": None,
                                    "max_cpu_us": 0, "hist": [0] * 48}
        k["n"] += 1
        k["cpu_us"] += cpu
        k["erases"] += e
        k["pages"] += p
        k["reads"] += r
        if cpu > k["max_cpu_us"]:
            k["max_cpu_us"] = cpu
        # CPU time histograms, bins 1.25x apart (a percentile without keeping every sample),
        # per kind and per class of flash work: the host takes medians, which the other jobs
        # sharing this machine's 2 cores do not move (a single step's maximum is theirs)
        bin = min(47, int(math.log(max(cpu, 1)) / 0.22314355))
        k["hist"][bin] += 1
        key = "e%d p%d r%d" % (min(e, 2), min(p // 8, 3), min(r, 2))
        c = k.setdefault("classes", {}).get(key)
        if c is None:
            c = k["classes"][key] = {"n": 0, "hist": [0] * 48, "e": 0, "p": 0, "r": 0}
        c["n"] += 1
        c["hist"][bin] += 1
        if e > c["e"]:
            c["e"] = e
        if p > c["p"]:
            c["p"] = p
        if r > c["r"]:
            c["r"] = r
        # the worst step on an ESP32: the one with the most flash time, then CPU
        w = k["worst"]
        score = e * 45000 + p * 700 + r * 200 + cpu * 20
        if w is None or score > w[4]:
            k["worst"] = [cpu, e, p, r, score]


class Client:
    connected = True
    generation = 1

    def __init__(self):
        self.handler = None

    def subscribe(self, filt, qos, handler):
        self.handler = handler

    def add_connect_hook(self, fn):
        pass

    async def wait_connected(self):
        pass

    async def publish(self, topic, payload, qos=0, retain=False):
        return True


def main(part, blocks, image, messages, taps, keyhex, site, tid):
    out = {}
    times = [0] * 500  # lookup times and tap waits, allocated before the heap fragments
    waits = [0] * 800
    gc.collect()
    raw = BlockFile(part, blocks * 4096)
    dev = Counting(raw, blocks)
    gc.collect()
    a0 = gc.mem_alloc()
    t = CardTable(dev, card_slots=32)  # as firmware/app.py with the downlink on
    gc.collect()
    out["table_ram_open"] = gc.mem_alloc() - a0
    # install the snapshot in 4 KB chunks (what a downlink snapshot does, chunk by chunk)
    buf = bytearray(4096)
    f = open(image, "rb")
    f.seek(0, 2)
    n = f.tell() // 4096
    f.seek(0)
    st = Steps(dev)
    assert t.install_begin(1, 1, n) == 0
    for i in range(n):
        f.readinto(buf)
        s = st.begin()
        assert t.install_chunk(i, buf) == 0
        st.end("install_chunk", s)
    f.close()
    s = st.begin()
    assert t.install_commit() == 0
    st.end("install_commit", s)
    buf = None
    out["n_cards"] = t.n_cards
    out["n_pages"] = t.n_pages
    out["install"] = st.kinds
    # tap UIDs: 11-byte records into preallocated buffers (the tap path allocates nothing)
    with open(taps, "rb") as ft:
        recs = ft.read()
    bufs = [None] * 11
    for k in UID_LENGTHS:
        bufs[k] = bytearray(k)

    def uid(i):
        o = (i % (len(recs) // 11)) * 11
        b = bufs[recs[o]]
        for j in range(len(b)):
            b[j] = recs[o + 1 + j]
        return b
    card, spends = CardRecord(), Spends()

    def lookups(tag, count):
        r0 = dev.reads
        for i in range(count):
            b = uid(i * 7 + 3)
            t0 = time.ticks_us()
            r = t.lookup(b, card, spends)
            times[i] = time.ticks_diff(time.ticks_us(), t0)
            assert r == FOUND
        times.sort()
        out[tag + "_p50_us"] = times[len(times) // 2]
        out[tag + "_p99_us"] = times[(len(times) * 99) // 100]
        out[tag + "_reads"] = (dev.reads - r0) / count
    lookups("lookup_before", 500)
    # the storm, in the firmware's event loop
    key = signing.Key(unhexlify(keyhex))
    client = Client()
    sync = Sync(t, client, site, tid, key)
    handler = client.handler
    topic = sync.t_down
    st = Steps(dev)
    orig_step = t.step

    def step():
        s = st.begin()
        r = orig_step()
        st.end("upkeep_step", s)
        return r
    t.step = step
    orig_apply = sync._apply
    in_work = [False]

    def apply(b):  # one delta of a DELTAS message: a step of its own (the message yields after it)
        if not in_work[0]:
            return orig_apply(b)  # a lone DELTA: part of its message's step
        s = st.begin()
        r = orig_apply(b)
        st.end("delta", s)
        return r
    sync._apply = apply
    tap_due = asyncio.Event()
    state = {"due_us": 0, "taps": 0, "done": False, "deltas": 0, "sim_ms": 0}

    async def tapper():
        while not state["done"]:
            await tap_due.wait()
            tap_due.clear()
            s = st.begin()
            r = t.lookup(uid(state["taps"]), card, spends)
            st.end("tap", s)
            if state["taps"] < len(waits):
                waits[state["taps"]] = time.ticks_diff(time.ticks_us(), state["due_us"])
            state["taps"] += 1
            assert r == FOUND

    async def feeder():
        hdr = bytearray(6)
        fm = open(messages, "rb")
        next_tap = 1000
        while fm.readinto(hdr) == 6:
            sim = hdr[0] | (hdr[1] << 8) | (hdr[2] << 16) | (hdr[3] << 24)
            ln = hdr[4] | (hdr[5] << 8)
            payload = fm.read(ln)
            s = st.begin()
            tap = sim >= next_tap and not tap_due.is_set()
            if tap:  # a card is presented just as this message starts: it waits for it
                state["due_us"] = s[0]
            work = handler(topic, payload, False)
            st.end("message", s)  # decoding and checking it (and applying a lone DELTA)
            if work is not None:
                in_work[0] = True
                await work  # as the MQTT client does: a DELTAS message yields after each delta
                in_work[0] = False
            if tap:
                tap_due.set()
                while sim >= next_tap:
                    next_tap += 1000
            payload = None
            state["sim_ms"] = sim
            await asyncio.sleep_ms(0)
        fm.close()
        while t.wants_step:
            await asyncio.sleep_ms(1)
        state["done"] = True
        tap_due.set()

    async def run():
        st_task = asyncio.create_task(sync.run())
        tp = asyncio.create_task(tapper())
        t0 = time.ticks_ms()
        await feeder()
        out["storm_wall_ms"] = time.ticks_diff(time.ticks_ms(), t0)
        st_task.cancel()
        await asyncio.sleep_ms(0)
    asyncio.run(run())
    out["storm"] = st.kinds
    out["applied"] = sync.applied
    out["rejected"] = sync.rejected
    out["why"] = sync.why
    out["table_version"] = t.version
    out["sim_ms"] = state["sim_ms"]
    w = waits[:min(state["taps"], len(waits))]
    waits = None
    w.sort()
    out["taps"] = len(w)
    out["tap_wait_max_us"] = w[-1] if w else 0
    out["tap_wait_p99_us"] = w[(len(w) * 99) // 100] if w else 0
    out["needs_snapshot"] = t.needs_snapshot
    out["store_used"] = t.chg.used
    out["store_buckets"] = t.chg.nb
    out["store_first"] = t.chg.first
    out["store_blocks"] = t.chg.total
    out["table_buffers"] = t.ram_bytes()
    del t.step
    # a reboot now: mount with the storm's changes in the store (boot time, before any tap)
    sm = Steps(dev)
    s = sm.begin()
    t.mount()
    sm.end("mount", s)
    out["mount"] = sm.kinds["mount"]
    # the table's RAM: what it took when opened (page, index, overlay, bucket map, Delta),
    # plus what it holds now beyond that (its upkeep lists; the install state is gone)
    out["table_ram_after"] = out["table_ram_open"] + 16 * (len(t.chg.due) + len(t.chg.stale))
    gc.collect()
    a1 = gc.mem_alloc()
    sync = client = handler = None
    gc.collect()
    out["sync_ram"] = a1 - gc.mem_alloc()  # the Sync engine and its fake client
    lookups("lookup_after", 500)
    # erases per block (the change area's worst, the image slots')
    pb = dev.per_block
    out["max_erases_change_block"] = max(pb[t.chg.first:t.chg.first + t.chg.total])
    out["max_erases_image_block"] = max(pb[0:t.chg.first])
    # the naive alternative, measured on the same table: the old design's compaction, a
    # rewrite of the whole image into the other slot (read, decode, encode, erase, program)
    st = Steps(dev)
    s = st.begin()
    naive_compact(t)
    st.end("naive_compaction", s)
    out["naive"] = st.kinds
    recs = bufs = times = None
    gc.collect()
    out["heap_free_end"] = gc.mem_free()
    raw.close()
    return out


def naive_compact(t):
    """The old design's compaction: every page read, every record decoded and encoded
    again (the old RAM overlay's changes would be applied here: a few table probes, left
    out), written page by page into the other slot: one erase and 16 programs a page."""
    other = 1 - t.slot
    start = t._img_start(other)
    card, spends = CardRecord(), Spends()
    cur = t._cur
    out = bytearray(4096)
    for pn in range(t.n_pages):
        assert t._read_page(pn)
        pg = t.page
        cnt = layout.rd16(pg, 2)
        w = 12
        for i in range(cnt):
            off = layout.dir_entry(pg, i)
            end = layout.record_end(pg, i, cnt)
            n = layout.decode_record_into(pg, off, end, cur, card, spends, t.ref_keys)
            rec = layout.encode_record(bytes(pg[off + 1:off + 1 + n]), card.account, card.status,
                                       layout.card_account(card, spends), t.ref_keys)
            out[w:w + len(rec)] = rec
            w += len(rec)
        t.dev.ioctl(BLOCK_ERASE, start + 1 + pn)
        t.dev.writeblocks(start + 1 + pn, out, 0)


res = main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7],
           sys.argv[8])
gc.collect()
for k in res:  # one key a line: no single large string on a fragmented heap
    print(json.dumps([k, res[k]]))
print("END")
