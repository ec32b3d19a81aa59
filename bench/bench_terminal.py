"""Tap-to-decision on the virtual board, broken down, and the firmware's heap headroom.

One till running the real firmware (unix port) reads 120 taps from the emulated PN532
at UART 115200, one customer every 0.4 s, each a different card from the one before.
For each tap: the simulator's time from the card entering the field to the POS
receiving the decision, split into the chip's part (the emulator's own timing: the
activation attempt that meets the card, selection, the answer's bytes on the wire at
115200), the firmware's part (from the tap to the reply written: lookup, rules,
journal), and the rest (the TCP carrier delivering the bytes, the link's poll, the
reply over TCP to the simulated till, the simulator's own scheduling: host costs, not
an ESP32's). The whole application runs: the uplink is on (mosquitto and the reference
backend), so the MQTT, uplink and card-table sync tasks run beside the reader, POS,
feedback, health and watchdog tasks.
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
from simulator.terminal import CARDTABLE_SIZE, HEAP_CAP_KB, JOURNAL_SIZE  # noqa: E402

TAPS = int(os.environ.get("CPOS_BENCH_TAPS", "120"))
MODES = (("pending poll (wait_ms 1000, the default)", 1000), ("plain polling every 30 ms (wait_ms 0, the fallback)", 0))
if os.environ.get("CPOS_BENCH_MODES") == "wait":  # a long run of the default alone (e.g. 5,000 taps)
    MODES = MODES[:1]
UART_BYTE_US = 10e6 / 115200
TOTAL = "total (card in field → POS has the decision)"
CHIP = "chip and wire (emulated: card in field → answer's last byte on the wire)"
FIRMWARE = "firmware (tap → reply written)"
REST = "the rest (TCP carrier, link poll, reply over TCP, simulator)"


def scenario():
    rnd = random.Random(5)
    cards = [{"uid": "04%06X" % i, "number": "K%d" % i, "account": i} for i in range(1, 31)]
    accounts = [{"account": i, "balance": 10 ** 7} for i in range(1, 31)]
    events, t, c = [], 1.0, None
    for _ in range(TAPS):
        # the next customer's card: never the one just lifted (200 ms ago, inside the 500 ms
        # removal window, the same card is the same presentation: no tap, the till waits)
        c = rnd.choice([k["number"] for k in cards if k["number"] != c])
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


def _roomy_journal(r):
    """A run longer than the journal's ring: a ring that holds every record of the run,
    since the simulator checks each one against the ledger and the ledger against the
    journal. Online, the journal takes up to two 64-byte slots a purchase: its record and
    the ack record of the backend's watermark (one each at this pace: a customer every
    0.4 s is acknowledged before the next), 63 slots a sector. The shipped 64-sector ring
    wraps after about 2,000 purchases this way, and the two first 5,000-tap runs ended on
    the drain check for it: the oldest records, acknowledged and erased, were in the ledger
    only. (The firmware now records a release per 63 acknowledged records while customers
    come, so it takes ~1.02 slots a purchase; the ring is sized for the old worst case.) The
    firmware's schedule is the same whatever the ring's length. None for a run that fits."""
    sectors = JOURNAL_SIZE // 4096
    need = 2 * TAPS // 63 + 8
    if need <= sectors - 4:
        return None

    def config(spec):
        d = os.path.join(r.workdir, spec["id"])
        return {"storage": {"journal": {"file": os.path.join(d, "journal.bin"), "size": need * 4096},
                            "cardtable": {"file": os.path.join(d, "cards.bin"), "size": CARDTABLE_SIZE}}}
    return config


def journal_erases(events):
    """(all, between customers, inside a purchase's append, elsewhere): the journal
    device's sector erases over the run. All is the device's own count, reported with
    each acknowledgement and each erase ahead (`journal_prepared`); elsewhere is mostly
    an ack record opening a sector the erase ahead had not prepared (the uplink task: not
    the tap path, but on an ESP32 an erase stalls the CPU and a tap that comes then waits)."""
    total = idle = in_append = 0
    for e in events:
        n = e.get("erases")
        if e.get("ev") in ("journal_prepared", "acked") and n is not None and n >= 0:
            total = max(total, n)
            idle += e["ev"] == "journal_prepared"
        elif e.get("ev") == "decision":
            in_append += e.get("erased", 0)
    return total, idle, in_append, total - idle - in_append


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


def undrained(r):
    """What a failed drain check saw, a line per terminal: the journal against the ledger."""
    lines = []
    for tid, t in r.terminals.items():
        n = t.spec["no"]
        have = [x["seq"] for x in r.journal_records(tid)]
        got = r.site.ledger.received_seqs(n)
        missing, extra = sorted(set(have) - set(got)), sorted(set(got) - set(have))
        lines.append("%s: journal %d records (seq %s..%s), ledger %d, missing %d %s, only in the ledger %d %s, "
                     "watermark %d, last ack heard %d, firmware %s" % (
                         tid, len(have), have[0] if have else "-", have[-1] if have else "-", len(got),
                         len(missing), missing[:8], len(extra), extra[:8], r.site.ledger.watermark(n),
                         r.last_ack(tid), "running" if t.running() else "stopped"))
    return "\n".join(lines)


def by_slice(rows, n=5):
    """The firmware's part and the card lookup in n slices of the run, in order: a long
    rush shows here whether something grows (the card table's change store, the journal)."""
    fw, lk = rows[FIRMWARE], rows["lookup (card table, 1 block read)"]
    out, k = [], max(1, len(fw) // n)
    for i in range(0, len(fw) - k + 1, k):
        out.append(("%d–%d" % (i + 1, i + k), "%.2f" % percentile(lk[i:i + k], 50), "%.2f" % percentile(lk[i:i + k], 99),
                    "%.2f" % percentile(fw[i:i + k], 50), "%.2f" % percentile(fw[i:i + k], 99)))
    return table(("taps", "lookup p50 ms", "p99 ms", "firmware p50 ms", "p99 ms"), out)


async def go(wait_ms):
    r = Run(scenario(), quiet=True)
    try:
        r.prepare(_roomy_journal(r))
        _set_wait(r, wait_ms)
        await r.boot_all()
        await r.play()
        await asyncio.sleep(0.5)
        await r.settle()
        if not r.drained:
            r.keep = True
            raise SystemExit("the journal did not drain into the ledger: the figures would not be of the whole app\n"
                             + undrained(r) + "\nthe run's files are kept in " + r.workdir)
        term = r.terminals["till1"]
        term.survey = r.journal_survey("till1")  # the ring at the end: purchase and ack records
        return r, list(term.events), term.heap_kb, term.emu
    finally:
        await r.stop()


TICK_MS = 10  # one FreeRTOS tick at MicroPython's ESP32 default of 100 Hz
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
    fixed50 = drv + (percentile(look, 50) + percentile(rules, 50) + 0.013) * cpu + 0.7 + uart_ms
    fixed99 = drv + (percentile(look, 99) + percentile(rules, 99) + 0.020) * cpu + 3 + uart_ms
    p50, p99 = chip_p50 + 1 + fixed50, chip_p99 + 1 + fixed99
    p99_tick = chip_p99 + TICK_MS + fixed99
    lines = ["ESP32 estimate, card to decision over UART 115200 with the pending poll: p50 %.1f ms, "
             "p99 %.1f ms; p99 %.1f ms if every wait for the answer's bytes lasts a FreeRTOS tick. "
             "Assumptions: chip and wire time as emulated (p50 %.1f, p99 %.1f ms: the chip's own timing, "
             "not the host's); the link's wait for bytes: it looks at `UART.any()` and sleeps 1 ms "
             "between looks; +1 ms if the ESP32's event loop wakes after that 1 ms, up to +%d ms if "
             "MicroPython's ESP32 port waits a whole FreeRTOS tick (100 Hz) when no task is ready, which "
             "nothing here measures (no ESP32 attached; a UART RXIDLE interrupt setting a ThreadSafeFlag "
             "would end the wait with the frame); "
             "the firmware's lookup and rules time measured above on the unix port x 20 (the lookup "
             "there includes a file read of the unix board, and on a loaded machine their p99 holds the "
             "host's preemption, multiplied with the rest: overstated); the journal append's CPU "
             "on the flash model, 13 us p50 / 20 us p99 (bench_journal.py) x 20, and one 256 B page "
             "program 0.7 ms typical, 3 ms worst (p99); driver CPU "
             "~44 us x 20; the POS reply, %d bytes at 115200, %.1f ms. No sector erase: the journal "
             "erases its next sector between customers (a 45 ms typical / 400 ms worst stall "
             "otherwise, once per 63 journal slots: about every 62 purchases, as the firmware records one "
             "release of acknowledged records per 63 while customers come). None of the unix board's TCP carriers: an ESP32 has "
             "the UART itself." % (p50, p99, p99_tick, chip_p50, chip_p99, TICK_MS, POS_REPLY_BYTES,
                                   uart_ms)]
    return "\n".join(lines)


def breakdown(r, events, emu):
    decisions = {e["ref"]: e for e in events if e.get("ev") == "decision"}
    displays = [e for e in events if e.get("ev") == "display"]
    rows = {TOTAL: [], CHIP: [], FIRMWARE: [], "lookup (card table, 1 block read)": [], "rules": [],
            "journal append (durable)": [], REST: [], "feedback (decision → display)": []}
    listed = list(emu.listed)
    for tap in r.taps:
        if tap.decision not in ("approved", "refused"):
            continue
        e = decisions.get(tap.ref)
        if e is None:
            continue
        placed_us = emu.clock.us_at(tap.placed_at)
        heard_us = placed_us + tap.latency_ms * 1000  # the answer came before the decision was heard
        answered = [t for t, uid in listed if uid == tap.uid and placed_us <= t <= heard_us]
        chip_ms = (answered[0] - placed_us) / 1000 if answered else None
        fw_ms = e["tap_to_reply_us"] / 1000
        rows[TOTAL].append(tap.latency_ms)
        if chip_ms is not None:
            rows[CHIP].append(chip_ms)
            rows[REST].append(tap.latency_ms - chip_ms - fw_ms)
        rows[FIRMWARE].append(fw_ms)
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
        r, events, heap_kb, emu = asyncio.run(go(wait_ms))
        rows = breakdown(r, events, emu)
        if len(rows[TOTAL]) < TAPS:
            raise SystemExit("%s: %d of %d taps decided: a lost tap stalls the till and the taps after it "
                             "would come back to back" % (name, len(rows[TOTAL]), TAPS))
        runs.append((name, wait_ms, r, events, heap_kb, rows))
    name, wait_ms, r, events, heap_kb, rows = runs[0]
    n = len(rows[TOTAL])
    print("## Tap to decision on the virtual board (UART 115200)\n")
    print("%d taps on one till, a customer every 0.4 s (the card held 0.2 s), the real firmware on the "
          "MicroPython unix port with every task running (uplink and card-table sync to mosquitto and "
          "the reference backend), the PN532 emulated with its byte timing. Firmware-side figures are "
          "measured with `ticks_us` on the x86 unix port; an ESP32 runs them several times slower. The "
          "same scenario ran twice: with the reader's pending poll (the chip answers as soon as a card "
          "enters the field) and with plain polling every 30 ms, the fallback.\n" % n)
    out = []
    for nm, _w, _r, evs, _h, rws in runs:
        v = rws[TOTAL]
        appends, erased = erasing_appends(evs)
        out.append((nm, len(v), "%.2f" % percentile(v, 50), "%.2f" % percentile(v, 99), "%.2f" % max(v),
                    "%d of %d" % (erased, appends)))
    print(table(("reader", "taps", "p50 ms", "p99 ms", "max ms", "appends that erased a sector"), out))
    out = []
    for nm, _w, r_, evs, _h, _rws in runs:
        total, idle, in_append, other = journal_erases(evs)
        heard = sum(1 for e in evs if e.get("ev") == "acked")
        sv = r_.terminals["till1"].survey
        out.append((nm.split(" (")[0], sv["records"], heard, sv["acks"], total, idle, in_append, other))
    print("\nThe journal's flash over the same runs: each purchase takes a 64-byte slot, and so does each "
          "release of acknowledged records the journal records (63 slots a sector; the firmware releases a "
          "sector's worth at a time while customers come); the sector erases by where they were done.\n")
    print(table(("reader", "purchase records", "acks heard", "ack records written", "sector erases",
                 "between customers", "inside a purchase's append", "elsewhere (an ack, the boot)"), out))
    if TAPS >= 1000:
        print("\nThe firmware's part across the run (%s):\n" % runs[0][0].split(" (")[0])
        print(by_slice(runs[0][5]))
    print("\nMachine load while measuring (load average over 1 min, 2 cores): %.1f before, %.1f after. "
          "These are wall-clock figures of processes that share the machine: read them against the "
          "load.\n" % (LOAD[0], os.getloadavg()[0]))
    heads = ["part"]
    for nm, *_ in runs:
        heads += ["%s p50 ms" % nm.split(" (")[0], "p99 ms"]
    out = []
    for part in rows:
        line = [part]
        for *_, rws in runs:
            v = rws[part]
            line += ["%.2f" % percentile(v, 50), "%.2f" % percentile(v, 99)] if v else ["-", "-"]
        out.append(line)
    print("Breakdown (each part's own percentiles: they do not add up to the total's):\n")
    print(table(heads, out))
    for nm, *_, rws in runs:
        if len(rws[CHIP]) < len(rws[TOTAL]):  # the emulator keeps the latest 4096 answers only
            print("\n%s: the chip's part and the rest are of the last %d taps" % (nm, len(rws[CHIP])))
    print()
    print(esp32_estimate(rows, chip_p50, chip_p99))
    print("\nWith the pending poll the chip's part is the activation attempt that meets the card (one "
          "every 2.5 ms), its selection (3 ms for a 4-byte UID) and the answer's 20 bytes at 115200 "
          "(1.7 ms); with plain polling it also holds the wait for the next poll (up to 30 ms, plus the "
          "RF field's 5 ms guard time: the field is off between polls), and the release and field-off "
          "exchanges that come before the tap is reported fall in the rest. The rest is otherwise the "
          "host's: the emulator's TCP carrier (a thread sharing the simulator's process), the link's "
          "1 ms poll, the reply over TCP and the simulator's scheduling; on a loaded machine it "
          "carries the outliers.\n")
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
