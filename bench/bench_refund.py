"""Reversals: what the at-most-once check costs (a journal scan) beside a RAM set rebuilt at boot.

Device code on the MicroPython unix port under the WROOM heap cap (bench/refund_mp.py), on a
256 KB journal partition kept in a file (cpos.blockfile.BlockFile, the unix board's device).
"""
import json
import os
import tempfile

from benchlib import run_micropython, table

SIZES = (0, 50, 200, 1000, 3900)  # records written after the purchase being reversed


def mp(mode, path, n, runs=3):
    """The run with the shortest time of `runs` (the machine is shared: the minimum is the
    code's cost, the rest is other processes)."""
    key = "check_us" if mode == "scan" else "boot_us"
    got = [json.loads(run_micropython("bench/refund_mp.py", mode, path, n).strip().splitlines()[-1])
           for _ in range(runs)]
    return min(got, key=lambda r: r[key])


def esp_ms(us):
    return "%.1f" % (us * 20 / 1000.0)


def main():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "journal.bin")
        scan = [(n, mp("scan", path, n)) for n in SIZES]
        naive = [(n, mp("naive", path, n)) for n in SIZES]
    print("## Reversals: the at-most-once check\n")
    print("`cpos.refund` keeps no second store: `check` reads the purchase, then every record after it,"
          " for a reversal that names it (docs/rules.md, \"Reversals\"). Its cost grows with the records"
          " written since the purchase, which the refund window bounds (900 s by default: a busy till writes"
          " a few hundred). The naive alternative measured beside it keeps the reversed seqs in a RAM set,"
          " rebuilt at every boot by reading the whole journal: O(1) per check, but RAM per reversal held and"
          " a boot that reads every record. Unix port, 192 KB heap cap; ESP32 estimate = unix-port time x 20"
          " (CPU; a 64-byte flash read, ~4 us of SPI time at 4 KB per 0.25 ms, is inside that factor),"
          " allocation halved. Each figure is the fastest of 3 runs.\n")
    rows = []
    for n, s in scan:
        rows.append((n, s["scanned"], s["check_us"], esp_ms(s["check_us"]), s["recheck_us"], s["record_us"],
                     s["check_alloc"], s["check_alloc"] // 2))
    print(table(("records since the purchase", "records read", "check us (unix)", "check ms (ESP32 est.)",
                 "repeat (already reversed) us", "record us (unix, one slot program)", "check allocates B (unix)",
                 "B (ESP32 est.)"), rows))
    print()
    rows = []
    for n, s in naive:
        rows.append((n + 1 + s["held"], s["held"], s["boot_us"], esp_ms(s["boot_us"]), s["set_bytes"],
                     s["set_bytes"] // 2, s["check_us"]))
    print(table(("naive: records in the journal at boot", "reversals held", "boot rebuild us (unix)",
                 "boot rebuild ms (ESP32 est.)", "set heap B (unix)", "B (ESP32 est.)", "check us"), rows))
    print()
    print("The scan allocates 32 bytes per record on the unix port, in `Journal.read` (measured: the"
          " block device's read, the CRC check and `purchase.reverses` allocate nothing); under the heap cap"
          " that brings garbage collections into long scans. A reversal is not on the tap path, and the"
          " window bounds the scan: at one record every 2 s, 900 s are ~450 records, ~0.1 s on an ESP32"
          " (estimated), during which the event loop waits. The naive set costs every boot a full read,"
          " grows with the reversals the journal holds, and is one more structure that must agree with"
          " flash after a power cut.")


main()
