"""Measure what the 64-bit unix port's heap costs against a 32-bit ESP32's.

Run on the MicroPython unix port: `micropython bench/heap_ratio.py`.

For each workload it measures the unix port's heap bytes per object with
gc.mem_alloc(), and beside it the cost that MicroPython's object layout gives for a
64-bit build (8-byte words, 32-byte GC blocks) and for the ESP32's 32-bit build
(4-byte words, 16-byte GC blocks). Where the 64-bit model matches the measurement,
the 32-bit column is the ESP32 figure for the same objects. docs/heap.md explains
the heap cap chosen from these figures.
"""
import gc

N = 200


def blocks(nbytes, block):
    return (nbytes + block - 1) // block * block


def model(allocs, word):
    """allocs: list of (words, raw_bytes) heap allocations that make one object."""
    block = 4 * word
    return sum(blocks(w * word + b, block) for w, b in allocs)


class Four:
    def __init__(self):
        self.a = 1
        self.b = 2
        self.c = 3
        self.d = 4


# name, factory, layout: the heap allocations that one object makes
WORKLOADS = (
    ("tuple of 3 ints", lambda i: (i, i, i), [(5, 0)]),
    ("instance, 4 attributes", lambda i: Four(), [(4, 0), (8, 0)]),
    ("list of 8 ints", lambda i: [i] * 8, [(4, 0), (8, 0)]),
    ("bytearray(32)", lambda i: bytearray(32), [(4, 0), (0, 32)]),
    ("bytearray(64)", lambda i: bytearray(64), [(4, 0), (0, 64)]),
    ("bytearray(512)", lambda i: bytearray(512), [(4, 0), (0, 512)]),
    ("bytearray(4096)", lambda i: bytearray(4096), [(4, 0), (0, 4096)]),
)


def measure(factory, n):
    keep = [None] * n
    gc.collect()
    before = gc.mem_alloc()
    for i in range(n):
        keep[i] = factory(i + 1000)
    gc.collect()
    return (gc.mem_alloc() - before) / n


def main():
    print("%-24s %10s %10s %10s %7s" % ("workload", "unix meas", "64b model", "32b model", "ratio"))
    for name, factory, layout in WORKLOADS:
        n = 8 if "4096" in name else N
        got = measure(factory, n)
        m64, m32 = model(layout, 8), model(layout, 4)
        print("%-24s %10.1f %10d %10d %7.2f%s" % (
            name, got, m64, m32, got / m32, "" if abs(got - m64) < 1 else "  (model off)"))
    # The naive card cache of issue 3, for reference (no layout model: dict tables vary).
    rec = lambda i: {"balance": i, "status": 1, "places": 3, "limits": [2500, -1, -1, 2000, -1, -1], "topup": True}
    print("%-24s %10.1f" % ("naive dict card record", measure(rec, N)))


main()
