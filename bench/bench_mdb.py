"""The MDB cashless reader's response time: in-process work per block, and the real firmware on the virtual bus.

1. `bench/mdb_mp.py` on the MicroPython unix port (WROOM heap cap): per VMC block, the
   framer + state machine from the block's first byte to the reply ready, and the heap it
   allocates, beside a naive reader that builds bytes objects per byte.
2. The whole firmware (unix board, every task running, uplink to mosquitto and the
   reference backend) as the reader of the emulated VMC (simulator/vmc.py) over the
   virtual bus (TCP, two bytes per MDB byte): the VMC's time from its command's last byte
   sent to the reply's last byte received, over idle POLLs and whole vends. This crosses
   two processes and the loopback on a shared machine: an upper bound of the reader's own time.
ESP32 estimate: CPU time x 20 (central factor, 10-30 seen), plus the UART: at 9600 baud
an 11-bit byte takes 1.146 ms, the standard's 5 ms is from the command's end to the
reply's first byte.
"""
import asyncio
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "lib")]

from benchlib import percentile, run_micropython, table  # noqa: E402
from simulator import scenario as scen  # noqa: E402
from simulator.run import Run  # noqa: E402
from simulator.vmc import ADDR, POLL  # noqa: E402

POLLS = 1500
VENDS = 30
BYTE_MS = 11 / 9.6  # one 11-bit MDB byte at 9600 baud


def scenario(uplink=True):
    return scen.Scenario({"name": "bench-mdb", "start": 1764068400, "uplink": uplink,
                          "terminals": [{"id": "vend1", "kind": "vending", "mdb": {"level": 3, "always_idle": True}}],
                          "accounts": [{"account": 1, "balance": 10 ** 7}],
                          "cards": [{"uid": "0400000%d" % i, "number": "k%d" % i, "account": 1} for i in range(1, 6)],
                          "events": []})


async def firmware_rtt(uplink):
    r = Run(scenario(uplink), quiet=True)
    try:
        r.prepare()
        await r.boot_all()
        term = r.terminals["vend1"]
        vmc = term.vmc
        vmc.rtt.clear()
        for _ in range(POLLS):
            async with vmc.lock:
                await vmc.command(ADDR | POLL)
        idle = list(vmc.rtt)
        vmc.rtt.clear()
        sold = 0
        for i in range(VENDS):
            uid = bytes.fromhex("0400000%d" % (1 + i % 5))  # the next customer's card, not the same again
            out = await vmc.vend(150 + i, 1 + i % 30, tap=lambda: term.place(uid))
            term.remove()
            sold += out == "sold"
            await asyncio.sleep(0.2)
        return idle, list(vmc.rtt), sold, vmc.timeouts
    finally:
        await r.stop()


def main():
    rows = []
    cases = [json.loads(ln) for ln in run_micropython("bench/mdb_mp.py").splitlines() if ln.startswith("{")]
    for c in cases:
        rows.append([c["case"], "%d" % c["p50_us"], "%d" % c["p99_us"], "%d" % c["max_us"], c["alloc_per_block"],
                     "%.2f" % (c["p50_us"] * 20 / 1000.0), "%.2f" % (c["p99_us"] * 20 / 1000.0)])
    print("## MDB reader: response time\n")
    print("### Work per VMC block (framer + state machine, no I/O), MicroPython unix port, 2000 blocks each\n")
    print(table(["block", "p50 µs", "p99 µs", "max µs", "heap bytes per block", "ESP32 p50 ms (x20)",
                 "ESP32 p99 ms (x20)"], rows))
    print("\nThe naive lines are the same blocks read into a growing bytes object with replies built by bytes():"
          " as fast on the unix port, but hundreds of bytes of garbage per block, i.e. a collection every few"
          " hundred blocks on an ESP32 (a few ms each at ~110 KB of heap), inside the 5 ms response window."
          " The p99 and max columns include the preemption of a machine whose 2 cores are shared with other"
          " jobs (a run on a quiet machine gave p99 3-12 µs for the reader's lines); the p50 is the code.\n")
    rows, notes = [], []
    for uplink in (True, False):
        idle, vend, sold, timeouts = asyncio.run(firmware_rtt(uplink))
        what = "uplink on" if uplink else "uplink off"
        for name, v in (("idle POLL (ACK), " + what, idle),
                        ("every exchange of %d vends (always idle, Level 3), %s" % (VENDS, what), vend)):
            ms = [x * 1000 for x in v]
            rows.append([name, len(ms), "%.2f" % percentile(ms, 50), "%.2f" % percentile(ms, 99), "%.2f" % max(ms)])
        notes.append("%s: %d of %d vends sold, %d commands unanswered within the VMC's timeout (repeated)"
                     % (what, sold, VENDS, timeouts))
    print("### The real firmware over the virtual bus (VMC command end → reply end, loopback TCP)\n")
    print(table(["exchanges", "n", "p50 ms", "p99 ms", "max ms"], rows))
    print("\n%s. Target: p99 ≤ 5 ms (the standard's t-response). Idle polling meets it; during vends the"
          " reader shares the event loop with the rest of the app (with the uplink on, each purchase is"
          " encoded and published at once; the feedback task plays the decision), and a command that"
          " arrives while another task holds the loop waits for it: the p99 of vend exchanges is that"
          " wait, not the reader's work (first table). The VMC repeats a command it got no answer to,"
          " as the standard has it." % "; ".join(notes))
    worst_cpu_ms = max(c["p50_us"] for c in cases if not c["case"].startswith("naive")) * 20 / 1000.0
    print("\n**ESP32 estimate.** The reader's own work per block, p50 × 20: %.2f ms at most; the reply's first"
          " byte can start as soon as the UART driver hands the command's last byte to the task, which needs"
          " the RX interrupt to fire per byte (RX FIFO full threshold 1 or an RX timeout of 1-2 symbols; with"
          " ESP-IDF's default timeout of ~10 symbols a POLL would sit ~11 ms in the FIFO, past the 5 ms:"
          " docs/mdb.md, \"ESP32 timing\"). A 4-byte VEND APPROVED then takes 4 × %.3f ms = %.1f ms on the"
          " wire, within the 1 ms inter-byte limit as long as the parity switch between bytes (a flush and"
          " an init) takes less than 1 ms. What does not fit: a journal append that needs a sector erase"
          " (45 ms typical, 400 ms worst, with the CPU's cache off): the app erases ahead while idle"
          " (Journal.prepare), and the decision runs after the VEND REQUEST's ACK, so an erase delays"
          " the next POLL's answer and the VMC repeats it (it may, for up to the reader's maximum response time"
          " of 5 s)." % (worst_cpu_ms, BYTE_MS, 4 * BYTE_MS))


if __name__ == "__main__":
    main()
