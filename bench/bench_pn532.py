"""PN532 poll cost: wire time per poll at UART 115200, I2C 400 kHz and SPI 1 MHz, and
the driver's own CPU time per poll measured on the MicroPython unix port."""
import asyncio
import os
import sys

from benchlib import ROOT, run_micropython, table

sys.path[:0] = [os.path.join(ROOT, "lib"), ROOT, os.path.join(ROOT, "tests")]
from pn532_rig import Rig  # noqa: E402

N = 2000

# Frames of one poll, bytes on the wire (preamble to postamble)
CMD_ILPT, ACK, R_NONE, R_CARD4 = 11, 6, 10, 19
CMD_REL, R_REL, CMD_RF, R_RF = 10, 10, 11, 9
POLLS = {
    "no card": ([CMD_ILPT], [ACK, R_NONE]),
    "card (4-byte UID)": ([CMD_ILPT, CMD_REL, CMD_RF], [ACK, R_CARD4, ACK, R_REL, ACK, R_RF]),
}


def wire_us(iface, writes, reads):
    if iface == "uart":  # 8N1: 10 bits a byte
        return (sum(writes) + sum(reads)) * 10 / 115200 * 1e6
    if iface == "i2c":  # 9 bits a byte; address byte per transfer; one status poll per frame read
        bits = sum((1 + n) * 9 for n in writes) + sum((2 + 2 + n) * 9 for n in reads)
        return bits / 400e3 * 1e6
    bits = sum((1 + n) * 8 for n in writes) + sum((2 + 1 + n) * 8 for n in reads)  # SPI
    return bits / 1e6 * 1e6


def emulated_poll(iface, card):
    rig = Rig(iface, reset_wired=False)
    rig.run(rig.pn.begin())
    if card:
        rig.emu.place_card(bytes.fromhex("04a1b2c3"))
    rig.run(rig.pn.read_uid())  # warm: field state as in steady polling
    bus0 = getattr(rig.bus, "bus_bytes", 0)
    tx0, rx0 = rig.link.tx_bytes, rig.link.rx_bytes
    t0 = rig.clock.us
    n = rig.run(rig.pn.read_uid())
    assert (n > 0) == card
    bus = getattr(rig.bus, "bus_bytes", 0) - bus0
    if iface == "uart":
        bus = rig.link.tx_bytes - tx0 + rig.link.rx_bytes - rx0
    return (rig.clock.us - t0) / 1000, bus


out = run_micropython("bench/pn532_mp.py", N)
mp = {}
for line in out.splitlines():
    k, *v = line.split()
    mp[k] = [float(x) for x in v]

print("## PN532: wire time and driver overhead per poll\n")
print("One poll = InListPassiveTarget (106 kbps type A, bounded retries); with a card also")
print("InRelease and RF field off (docs/pn532.md). *Wire* is computed from the frames' bytes")
print("(UART 8N1 at 115200; I2C 400 kHz, 9 bits a byte, address byte and one ready-status")
print("poll per frame read; SPI 1 MHz, operation byte and one status read per frame read).")
print("*Driver CPU* is measured on the MicroPython unix port (x86-64: an ESP32 at 240 MHz is")
print("roughly 10-30x slower) against a loopback chip that answers at once, so it is the")
print("driver's own time: encode, ACK and response parsing, asyncio. *Emulated poll* is the")
print("whole poll against the emulator in emulated time: chip reply delays (docs/pn532.md),")
print("our 1-2 ms polling of the link, and the bytes our driver really clocks (I2C/SPI")
print("links read frames in fixed chunks and poll the ready status).\n")
rows = []
for what, (writes, reads) in POLLS.items():
    key = "driver_none_us" if what == "no card" else "driver_card_us"
    for iface, name in (("uart", "UART 115200"), ("i2c", "I2C 400 kHz"), ("spi", "SPI 1 MHz")):
        w = wire_us(iface, writes, reads)
        poll_ms, bus = emulated_poll(iface, what != "no card")
        rows.append([what, name, sum(writes) + sum(reads), "%.0f" % w, "%.1f" % mp[key][0],
                     "%.1f%%" % (100 * mp[key][0] / w), "%.1f" % poll_ms, bus])
print(table(["poll", "link", "frame bytes", "wire µs", "driver CPU µs (unix port)",
             "CPU / wire", "emulated poll ms", "bytes clocked"], rows))
print()
print("Codec alone, per exchange (encode the poll, parse ACK and a 7-byte-UID answer), unix port:\n")
print(table(["codec", "µs per exchange", "allocates"],
            [["FrameReader (incremental, resynchronising)", "%.1f" % mp["codec_us"][0], "no"],
             ["naive slice-and-sum decode of a whole frame", "%.1f" % mp["naive_us"][0], "yes, every frame"]]))
print()
print("The naive decoder is faster on CPU but needs the whole frame in one buffer, allocates")
print("per frame and cannot resynchronise after noise; either is small next to the wire time.")
