"""Journal benchmark workloads, run on the MicroPython unix port by bench/bench_journal.py.

Usage: journal_mp.py MODE [ARGS]; prints one JSON object.
  append N PREPARE      N purchases through cpos.journal on the NOR-flash model (64 KB),
                        ack every 10 (one batch behind); PREPARE=1 calls prepare() when idle
  recover PATH          time Journal.recover() on a partition kept in a file (BlockFile),
                        with the reads it makes (calls, bytes) and what damage() found
  fullscan PATH         naive recovery that trusts no header: read every slot of every
                        sector (what the rescue does), timed the same way
  lfs N                 naive: append a JSON line to a file on LittleFS (VfsLfs2) on the
                        flash model and flush, N times
  lfscut N STRIDE       naive on LittleFS under power cuts at every STRIDE-th flash operation
  rawcut N              naive without a file system: JSON lines programmed back to back
                        on raw flash, no checksum; a cut at every operation, in each mode
"""
import json
import sys

from cpos.compat import ticks_us, ticks_diff
from cpos.journal import Journal
from simulator.norflash import NorFlash, PowerCut, ModelError, CUT_BEFORE, CUT_INSIDE, CUT_AFTER

UID = b"\x04\xa1\xb2\xc3\x11\x22\x33"


def line(i):
    return ('{"seq":%d,"t":%d,"uid":"04a1b2c3112233","account":%d,"amount":%d,"place":0,"kind":0,'
            '"terminal":42,"item":"1x Sandwich","balance_after":%d,"reason":0,"topup":false}\n'
            % (i, 1700000000 + 60 * i, 1000 + i % 50, 2500, 100000 - i))


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * (len(v) - 1) + 0.5))]


def bench_append(n, prep):
    f = NorFlash(16 * 4096)
    j = Journal(f)
    j.recover()
    lat = []
    erasing = 0
    for i in range(n):
        e0 = f.erases
        t0 = ticks_us()
        j.append(1700000000 + 60 * i, UID, 1000 + i % 50, 2500, 0, 0, 42, "1x Sandwich", 100000 - i, 0, False)
        lat.append(ticks_diff(ticks_us(), t0))
        if f.erases != e0:
            erasing += 1
        if i % 10 == 9:
            j.ack(j.next_seq - 11 if j.next_seq > 11 else 0)  # the uplink acks a batch behind
            if prep:
                j.prepare()
    return {"n": n, "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat),
            "erases": f.erases, "programs": f.programs, "bytes": f.bytes_programmed,
            "erasing_appends": erasing, "spread": [min(f.erase_counts), max(f.erase_counts)]}


class Counting:
    """A block device that counts the reads passed through to `dev`."""

    def __init__(self, dev):
        self.dev = dev
        self.reads = self.bytes = 0

    def readblocks(self, block, buf, offset=0):
        self.reads += 1
        self.bytes += len(buf)
        self.dev.readblocks(block, buf, offset)

    def ioctl(self, op, arg=0):
        return self.dev.ioctl(op, arg)


def bench_recover(path):
    from cpos.blockfile import BlockFile
    dev = Counting(BlockFile(path, readonly=True))
    times = []
    for _ in range(5):
        j = Journal(dev)
        dev.reads = dev.bytes = 0
        t0 = ticks_us()
        j.recover()
        times.append(ticks_diff(ticks_us(), t0))
    import gc
    gc.collect()
    return {"us": pct(times, 50), "pending": j.pending(), "sectors": j.nsec, "fill": list(j.fill()),
            "heap_free": gc.mem_free(), "reads": dev.reads, "bytes": dev.bytes, "damage": j.damage(),
            "next_seq": j.next_seq}


def bench_fullscan(path):
    from cpos import purchase
    from cpos.blockfile import BlockFile
    dev = Counting(BlockFile(path, readonly=True))
    n = dev.ioctl(4, 0)
    size = dev.ioctl(5, 0)
    buf = bytearray(64)
    times = []
    for _ in range(3):
        dev.reads = dev.bytes = 0
        t0 = ticks_us()
        top = found = 0
        for i in range(n):
            for slot in range(1, size // 64):
                dev.readblocks(i, buf, slot * 64)
                if purchase.is_valid(buf):
                    found += 1
                    s = purchase.seq_of(buf)
                    if s > top:
                        top = s
        times.append(ticks_diff(ticks_us(), t0))
    return {"us": pct(times, 50), "reads": dev.reads, "bytes": dev.bytes, "found": found, "next_seq": top + 1}


def _lfs(f, fresh):
    import vfs
    if fresh:
        vfs.VfsLfs2.mkfs(f)
    return vfs.VfsLfs2(f)


def bench_lfs(n):
    f = NorFlash(32 * 4096)
    fs = _lfs(f, True)
    h = fs.open("journal.jsonl", "a")
    e0, p0, b0 = f.erases, f.programs, f.bytes_programmed
    lat = []
    size = 0
    for i in range(n):
        s = line(i)
        size += len(s)
        t0 = ticks_us()
        h.write(s)
        h.flush()
        lat.append(ticks_diff(ticks_us(), t0))
    return {"n": n, "p50": pct(lat, 50), "p99": pct(lat, 99), "erases": f.erases - e0,
            "programs": f.programs - p0, "bytes": f.bytes_programmed - b0, "line": size // n}


def bench_lfscut(n, stride):
    total = None
    out = {"runs": 0, "lost": 0, "torn_lines": 0, "mount_failed": 0, "torn_overwrites": 0}
    op = 0
    while total is None or op < total:
        f = NorFlash(16 * 4096, seed=op + 1)
        fs = _lfs(f, True)
        base = f.ops
        if total is not None:
            f.arm(op, CUT_INSIDE)
        done = 0
        try:
            h = fs.open("journal.jsonl", "a")
            for i in range(n):
                h.write(line(i))
                h.flush()
                done += 1
        except PowerCut:
            try:
                h.close()  # fails on the dead flash; keeps the finaliser from trying later
            except Exception:
                pass
        if total is None:
            total = f.ops - base
            continue
        f.reboot()
        out["runs"] += 1
        try:
            fs = _lfs(f, False)
        except Exception:
            out["mount_failed"] += 1
            op += stride
            continue
        try:
            h = fs.open("journal.jsonl", "r")
            text = h.read()
            h.close()
        except OSError:  # cut before the file's creation was committed
            text = ""
        lines = text.split("\n")
        good = 0
        for i, s in enumerate(lines):
            if s and s + "\n" != line(i):
                out["torn_lines"] += 1
            elif s:
                good += 1
        if good < done:
            out["lost"] += 1
        out["torn_overwrites"] += f.torn_overwrites
        f.dead = True  # a file object left open by the cut may be finalised later: keep it off
        op += stride
    return out


def _rawlog(f, n, stop):
    off = 0
    for i in range(n):
        b = line(i).encode()
        f.writeblocks(0, b, off)  # program the line at the end of the log, no checksum
        off += len(b)
        stop[0] = i + 1


def bench_rawcut(n):
    size = 4 * 4096
    f = NorFlash(size)
    _rawlog(f, n, [0])
    total = f.ops
    out = {"runs": 0, "lost": 0, "garbled_unreadable": 0, "garbled_but_parses": 0, "wrong_amount": 0,
           "next_line_on_torn_bytes": 0, "next_line_unreadable": 0}
    for op in range(total):
        for mode in (CUT_BEFORE, CUT_INSIDE, CUT_AFTER):
            f = NorFlash(size, seed=op + 1)
            f.arm(op, mode)
            stop = [0]
            try:
                _rawlog(f, n, stop)
            except PowerCut:
                pass
            f.reboot()
            out["runs"] += 1
            end = bytes(f.mem).find(b"\xff")
            raw = bytes(f.mem[:end if end >= 0 else size])
            lines = raw.split(b"\n")
            good = 0
            for i, s in enumerate(lines):
                if not s:
                    continue
                if s + b"\n" == line(i).encode():
                    good += 1
                    continue
                try:
                    rec = json.loads(s)
                except Exception:  # ValueError on either runtime, or bad UTF-8
                    out["garbled_unreadable"] += 1
                    continue
                out["garbled_but_parses"] += 1
                if rec.get("amount") != 2500:
                    out["wrong_amount"] += 1
            if good < stop[0]:
                out["lost"] += 1
            # the naive reboot: append the next purchase where the log seems to end
            nxt = b'{"seq":999,"amount":2500}\n'
            at = end if end >= 0 else size
            try:
                f.writeblocks(0, nxt, at)
            except ModelError:  # it needs bits torn to 0 back at 1: on a real part, a garbled line
                out["next_line_on_torn_bytes"] += 1
                out["next_line_unreadable"] += 1
                continue
            if f.torn_overwrites:
                out["next_line_on_torn_bytes"] += 1
            if bytes(f.mem[at:at + len(nxt)]) != nxt:
                out["next_line_unreadable"] += 1
    return out


def main(argv):
    mode = argv[0]
    if mode == "append":
        r = bench_append(int(argv[1]), argv[2] == "1")
    elif mode == "recover":
        r = bench_recover(argv[1])
    elif mode == "fullscan":
        r = bench_fullscan(argv[1])
    elif mode == "lfs":
        r = bench_lfs(int(argv[1]))
    elif mode == "lfscut":
        r = bench_lfscut(int(argv[1]), int(argv[2]))
    elif mode == "rawcut":
        r = bench_rawcut(int(argv[1]))
    else:
        raise ValueError(mode)
    print(json.dumps(r))


main(sys.argv[1:])
