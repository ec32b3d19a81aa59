"""Display: the cost of one page on the OLED (build the page, draw it, flush it over I2C),
measured on the MicroPython unix port with micropython-lib's ssd1306 driver, beside a
naive renderer, with an ESP32 estimate. None of it is in the tap path: the feedback
task draws after the POS has its reply (firmware/app.py, docs/feedback.md)."""
import os
import subprocess
import sys

from benchlib import ROOT, percentile, table  # noqa: F401  (benchlib puts tests/ on the path)
from runtimes import HEAP_CAP, micropython_cmd, micropython_env

sys.path.insert(0, ROOT)
from host_tools import vendor  # noqa: E402

N = 300
I2C_HZ = 400000
CPU_X = 20  # ESP32 CPU ≈ unix-port time x 20 (docs/benchmarks.md's rule)
SH1106_BYTES = 8 * (3 * 3 + 1 + 1 + 128)  # per page: 3 commands (addr + 2 bytes), then addr + 0x40 + 128


def main():
    env = micropython_env(vendor.ssd1306_dir())
    proc = subprocess.run(micropython_cmd(os.path.join(ROOT, "bench", "display_mp.py"), str(N), heap=HEAP_CAP),
                          env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if proc.returncode:
        raise SystemExit("display_mp.py failed:\n%s%s" % (proc.stdout[-2000:], proc.stderr[-2000:]))
    f = {}
    for line in proc.stdout.split("\n"):
        if line.strip():
            k, p50, p99, nbytes, txns = line.split()
            f[k] = (int(p50), int(p99), int(nbytes), int(txns))
    wire_ms = f["show"][2] * 9 / I2C_HZ * 1000
    sh_ms = SH1106_BYTES * 9 / I2C_HZ * 1000

    def est(us):
        return "%.2f" % (us * CPU_X / 1000)

    rows = [
        ("build the page (layout, word wrap, amounts)", f["page"][0], f["page"][1], est(f["page"][0])),
        ("draw it: framebuf.text + æøå glyphs (cpos.display)", f["draw"][0], f["draw"][1], est(f["draw"][0])),
        ("naive alternative: every letter pixel by pixel", f["naive_draw"][0], f["naive_draw"][1],
         est(f["naive_draw"][0])),
        ("flush: ssd1306 `show()` CPU (bus stand-in)", f["show"][0], f["show"][1], est(f["show"][0])),
        ("flush: I2C wire time, SSD1306 (%d bytes in %d transactions)" % (f["show"][2], f["show"][3]), "-", "-",
         "%.1f" % wire_ms),
        ("flush: I2C wire time, SH1106 (%d bytes, 8 pages)" % SH1106_BYTES, "-", "-", "%.1f" % sh_ms),
    ]
    total = (f["page"][0] + f["draw"][0] + f["show"][0]) * CPU_X / 1000 + wire_ms
    print("## Display: one page on the 128x64 OLED\n")
    print("%d pages drawn (every outcome's page in turn) on the MicroPython unix port under the %s heap cap, "
          "through micropython-lib's `ssd1306` driver (`SSD1306_I2C`) on an I2C stand-in that counts bytes. "
          "A collection runs before each timed step, so the figures are the drawing's, not the heap's; the "
          "machine is shared, so p99 carries other processes' noise. ESP32 estimate: CPU = unix port x %d; "
          "I2C at %d kHz, 9 bits a byte (address byte per transaction, ACKs), start/stop overhead ignored.\n"
          % (N, HEAP_CAP, CPU_X, I2C_HZ // 1000))
    print(table(("step", "unix p50 µs", "unix p99 µs", "ESP32 estimate ms (p50)"), rows))
    print("\nOne page on an ESP32 with an SSD1306: about **%.0f ms** from decision to light, all of it in the "
          "feedback task after the POS reply; the tap path (card to decision) does not include it. The flush is "
          "one blocking I2C write (about %.0f ms): on the I2C board the PN532 waits that long for the bus once "
          "per decision, while the card that was just decided is still in the field. The first tone starts "
          "before the page is drawn (cpos.feedback), so the beep does not wait for it. The naive renderer is "
          "%.0fx slower than framebuf's own text in C.\n"
          % (total, wire_ms, f["naive_draw"][0] / max(1, f["draw"][0])))


main()
