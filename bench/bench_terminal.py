"""Tap-to-decision on the virtual board, broken down, and the firmware's heap headroom.

One till running the real firmware (unix port) reads 120 taps from the emulated PN532
at UART 115200. For each tap: the simulator's time from the card entering the field
to the POS receiving the decision, the firmware's own lookup / rules / journal times,
and the time until the display showed it. The PN532 part (waiting for the next poll
plus the poll's bytes on the wire) is what remains of the total. The whole application
runs: the uplink is on (mosquitto and the reference backend), so the MQTT, uplink and
card-table sync tasks run beside the reader, POS, feedback, health and watchdog tasks.
Heap: the least free heap seen during the run, against the 192 KB WROOM data cap
(code, which a frozen ESP32 image keeps in flash, is measured separately and left out).
"""
import asyncio
import json
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "lib")]

from benchlib import percentile, table  # noqa: E402
from simulator import scenario as scen  # noqa: E402
from simulator.run import Run  # noqa: E402
from simulator.terminal import HEAP_CAP_KB  # noqa: E402

TAPS = int(os.environ.get("CPOS_BENCH_TAPS", "120"))
MODES = (("pending poll (wait_ms 1000, the default)", 1000), ("plain polling every 30 ms (wait_ms 0, the fallback)", 0))
if os.environ.get("CPOS_BENCH_MODES") == "wait":  # a long run of the default alone (e.g. 5,000 taps)
    MODES = MODES[:1]
UART_BYTE_US = 10e6 / 115200
# One detecting poll: InListPassiveTarget command + ACK + answer with a 4-byte UID,
# then InRelease and RF field off, each with ACK and answer (docs/pn532.md).
POLL_BYTES = 11 + 6 + 20 + 10 + 6 + 10 + 11 + 6 + 9


def scenario():
    rnd = random.Random(5)
    cards = [{"uid": "04%06X" % i, "number": "K%d" % i, "account": i} for i in range(1, 31)]
    accounts = [{"account": i, "balance": 10 ** 7} for i in range(1, 31)]
    events, t = [], 1.0
    for _ in range(TAPS):
        c = rnd.choice(cards)["number"]
        events += [{"at": t, "terminal": "till1", "pay": rnd.choice([1500, 2500]), "item": "1x Frokost"},
                   {"at": t + 0.05, "terminal": "till1", "tap": c, "hold": 0.2}]
        t += 0.4
    return scen.Scenario({"name": "bench", "start": 1764068400, "terminals": [{"id": "till1"}],
                          "accounts": accounts, "cards": cards, "events": events, "uplink": True})


def _set_wait(r, wait_ms):
    for t in r.terminals.values():
        path = os.path.join(t.dir, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg["pn532"]["wait_ms"] = wait_ms
        with open(path, "w") as f:
            json.dump(cfg, f)


def erasing_appends(events):
    """(appends, appends that erased a sector): each decision reports the erases of the
    journal device during its own append (an ack record may open a sector too, in the
    uplink task: not counted here)."""
    appends = erased = 0
    for e in events:
        if e.get("ev") == "decision" and e.get("seq"):
            appends += 1
            erased += e.get("erased", 0) > 0
    return appends, erased


async def go(wait_ms):
    r = Run(scenario(), quiet=True)
    try:
        r.prepare()
        _set_wait(r, wait_ms)
        await r.boot_all()
        await r.play()
        await asyncio.sleep(0.5)
        await r.settle()
        if not r.drained:
            raise SystemExit("the journal did not drain into the ledger: the figures would not be of the whole app")
        term = r.terminals["till1"]
        return r, list(term.events), term.heap_kb
    finally:
        await r.stop()


POS_REPLY_BYTES = 40  # "APPROVED <ref> <seq> <amount> <balance>\n" on a 115200 serial line


def esp32_estimate(rows, chip_p50, chip_p99):
    """Card to decision on an ESP32 over UART 115200 with the pending poll, from parts: the
    chip and wire time (emulated: the same on an ESP32), the firmware's CPU time measured
    on the unix port x 20, flash at W25Q-class datasheet figures, the POS reply on a
    115200 serial line."""
    cpu = 20
    look = rows["lookup (card table, 1 block read)"]
    rules = rows["rules"]
    uart_ms = POS_REPLY_BYTES * UART_BYTE_US / 1000
    # driver CPU for one detecting answer: ~44 us on the unix port (bench_pn532.py) x 20
    drv = 0.044 * cpu
    # journal append CPU on the NOR model without file I/O: 13 us p50, 20 us p99 (bench_journal.py)
    p50 = chip_p50 + 1 + drv + (percentile(look, 50) + percentile(rules, 50) + 0.013) * cpu + 0.7 + uart_ms
    p99 = chip_p99 + 1 + drv + (percentile(look, 99) + percentile(rules, 99) + 0.020) * cpu + 3 + uart_ms
    lines = ["ESP32 estimate, card to decision over UART 115200 with the pending poll: p50 %.1f ms, "
             "p99 %.1f ms. Assumptions: chip and wire time as emulated (p50 %.1f, p99 %.1f ms: the "
             "chip's own timing, not the host's); +1 ms for the UART poll (the link looks every ms); "
             "the firmware's lookup and rules time measured above on the unix port x 20 (the lookup "
             "there includes a file read of the unix board: overstated); the journal append's CPU "
             "on the flash model, 13 us p50 / 20 us p99 (bench_journal.py) x 20, and one 256 B page "
             "program 0.7 ms typical, 3 ms worst (p99); driver CPU "
             "~44 us x 20; the POS reply, %d bytes at 115200, %.1f ms. No sector erase: the journal "
             "erases its next sector between customers (a 45 ms typical / 400 ms worst stall "
             "otherwise, once per 63 purchases)." % (p50, p99, chip_p50, chip_p99, POS_REPLY_BYTES, uart_ms)]
    return "\n".join(lines)


def breakdown(r, events):
    decisions = {e["ref"]: e for e in events if e.get("ev") == "decision"}
    displays = [e for e in events if e.get("ev") == "display"]
    rows = {"total (card in field → POS has the decision)": [], "lookup (card table, 1 block read)": [],
            "rules": [], "journal append (durable)": [], "feedback (decision → display)": []}
    for tap in r.taps:
        if tap.decision not in ("approved", "refused"):
            continue
        e = decisions.get(tap.ref)
        if e is None:
            continue
        rows["total (card in field → POS has the decision)"].append(tap.latency_ms)
        rows["lookup (card table, 1 block read)"].append(e["lookup_us"] / 1000)
        rows["rules"].append(e["rules_us"] / 1000)
        rows["journal append (durable)"].append(e["journal_us"] / 1000)
        shown = [d["_t"] for d in displays if d["_t"] >= e["_t"] - 0.05]
        if shown:
            rows["feedback (decision → display)"].append(max(0.0, (shown[0] - e["_t"]) * 1000))
    return rows


def detection_in_emulated_time(iface, wait_ms, n=200):
    """Card entering the field -> tap reported, on the emulator's virtual clock (no machine
    load in it): n arrivals at random phases, our driver over `iface`."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from pn532_rig import Rig

    rnd = random.Random(7)
    rig = Rig(iface, reset_wired=False)
    steps, arrivals, t = [], [], 300.0
    for _ in range(n):
        t += 900 + rnd.random() * 600
        arrivals.append(t)
        steps += [(t, "place", bytes.fromhex("04a1b2c3") if len(arrivals) % 2 else bytes.fromhex("04112233445566")),
                  (t + 200, "remove")]
    rig.emu.script(steps)
    taps = rig.taps(t + 1000, wait_ms=wait_ms)
    if len(taps) != n:
        raise SystemExit("%s: %d taps of %d" % (iface, len(taps), n))
    return [ms - a for (ms, _), a in zip(taps, arrivals)]


LOAD = [0.0]


def main():
    LOAD[0] = os.getloadavg()[0]
    print("## Card to tap on the emulated chip (emulated time)\n")
    print("200 cards entering the field at random moments, our driver against the chip emulator on "
          "its virtual clock (chip timing from docs/pn532.md; no machine load in these figures): "
          "time from the card entering the field to the reader reporting the tap.\n")
    out = []
    chip = {}
    for iface, link in (("uart", "UART 115200"), ("i2c", "I2C 400 kHz"), ("spi", "SPI 1 MHz")):
        for name, wait_ms in MODES:
            v = detection_in_emulated_time(iface, wait_ms)
            chip[(iface, wait_ms)] = v
            out.append((link, name.split(" (")[0], "%.1f" % percentile(v, 50), "%.1f" % percentile(v, 99),
                        "%.1f" % max(v)))
    print(table(("link", "reader", "p50 ms", "p99 ms", "max ms"), out))
    print()
    v = chip[("uart", MODES[0][1])]
    chip_p50, chip_p99 = percentile(v, 50), percentile(v, 99)
    runs = []
    for name, wait_ms in MODES:
        r, events, heap_kb = asyncio.run(go(wait_ms))
        runs.append((name, wait_ms, r, events, heap_kb, breakdown(r, events)))
    name, wait_ms, r, events, heap_kb, rows = runs[0]
    n = len(rows["total (card in field → POS has the decision)"])
    wire_ms = POLL_BYTES * UART_BYTE_US / 1000
    print("## Tap to decision on the virtual board (UART 115200)\n")
    print("%d taps on one till, the real firmware on the MicroPython unix port with every task running "
          "(uplink and card-table sync to mosquitto and the reference backend), the PN532 emulated "
          "with its byte timing. Firmware-side figures are measured with `ticks_us` on the x86 unix "
          "port; an ESP32 runs them several times slower. The same scenario ran twice: with the "
          "reader's pending poll (the chip answers as soon as a card enters the field) and with "
          "plain polling every 30 ms, the fallback.\n" % n)
    out = []
    for nm, _w, _r, evs, _h, rws in runs:
        v = rws["total (card in field → POS has the decision)"]
        appends, erased = erasing_appends(evs)
        out.append((nm, len(v), "%.2f" % percentile(v, 50), "%.2f" % percentile(v, 99), "%.2f" % max(v),
                    "%d of %d" % (erased, appends)))
    print(table(("reader", "taps", "p50 ms", "p99 ms", "max ms", "appends that erased a sector"), out))
    print("\nMachine load while measuring (load average over 1 min, 2 cores): %.1f before, %.1f after. "
          "These are wall-clock figures of processes that share the machine: read them against the "
          "load.\n" % (LOAD[0], os.getloadavg()[0]))
    out = [(nm, "%.2f" % percentile(v, 50), "%.2f" % percentile(v, 99)) for nm, v in rows.items() if v]
    out.insert(1, ("PN532 wire time of a polling detection (computed: %d bytes)" % POLL_BYTES,
                   "%.2f" % wire_ms, "%.2f" % wire_ms))
    print("Breakdown with the pending poll:\n")
    print(table(("part", "p50 ms", "p99 ms"), out))
    print()
    print(esp32_estimate(rows, chip_p50, chip_p99))
    print("\nWith the pending poll the rest of the total is the chip's activation attempt and "
          "selection (a few ms), the answer's 19 bytes on the wire (1.6 ms), the emulator's TCP "
          "carrier and the POS reply over TCP; with plain polling, add the wait for the next poll "
          "(up to 30 ms) and the release and field-off exchanges before the tap is reported.\n")
    free = [e["mem_free"] for e in events if "mem_free" in e]
    code_kb = heap_kb - HEAP_CAP_KB
    used_kb = heap_kb - min(free) / 1024 - code_kb
    print("## Firmware heap\n")
    print(table(("figure", "value"), [
        ("heap given to the process", "%d KB (192 KB WROOM data cap + %d KB of code)" % (heap_kb, code_kb)),
        ("tasks running", "reader, POS, feedback, health, journal, watchdog, mqtt, uplink, sync"),
        ("least free heap after a collection, while taking taps and uploading", "%.1f KB" % (min(free) / 1024)),
        ("data heap in use at that moment (unix port, 64-bit)", "%.1f KB" % used_kb),
        ("headroom under the 192 KB data cap", "%.1f KB (%.0f%%)" % (HEAP_CAP_KB - used_kb,
                                                                    100 * (HEAP_CAP_KB - used_kb) / HEAP_CAP_KB)),
    ]))
    print("\nThe naive alternative for the card lookup, a dict of all cards in RAM, is measured in the "
          "card table benchmark (it fits a few hundred cards under the cap).")


if __name__ == "__main__":
    main()
