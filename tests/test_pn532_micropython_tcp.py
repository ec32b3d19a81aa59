"""End to end on the real runtime: our driver on the MicroPython unix port (heap
capped like a WROOM) reads cards from the CPython emulator over TCP, with a chip
reset and a corrupted frame on the way."""
import os
import subprocess
import threading

from runtimes import DEVICE_TESTS, ROOT, micropython_cmd, micropython_env
from simulator.pn532_carriers import TCPServer
from simulator.pn532_emu import PN532Emu, RealClock

UIDS = ["04a1b2c3", "04112233445566", "04010203040506070809"]


def test_micropython_reads_taps_from_the_emulator_over_tcp():
    emu = PN532Emu(RealClock(), "uart")
    with TCPServer(emu) as srv:
        emu.script([(300, "place", bytes.fromhex(UIDS[0])), (1500, "remove"),
                    (2500, "place", bytes.fromhex(UIDS[1])), (3500, "remove"),
                    (4500, "place", bytes.fromhex(UIDS[2]))])
        faults = [threading.Timer(2.0, emu.inject, ("reset",)), threading.Timer(3.0, emu.inject, ("bad_dcs",))]
        for t in faults:
            t.start()
        try:
            proc = subprocess.run(micropython_cmd(os.path.join(DEVICE_TESTS, "pn532_tcp_reader.py"),
                                                  str(srv.port), "3"),
                                  env=micropython_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
        finally:
            for t in faults:
                t.cancel()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("TAP ")] == UIDS, proc.stdout
    health = [ln for ln in lines if ln.startswith("HEALTH ")]
    assert health and '"ok": true' in health[0]
    assert emu.resets == 1 and srv.clients == 1
