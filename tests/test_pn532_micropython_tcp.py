"""End to end on the real runtime: our driver on the MicroPython unix port (heap
capped like a WROOM) reads cards from the CPython emulator over TCP, with a chip
reset and a corrupted frame on the way, and waits for a card through pending polls
that end without one, each command sent at once (no Nagle on the TCP stand-in for
the UART)."""
import json
import os
import socket
import subprocess
import threading

from cpos.reader.link import SocketPort
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


def test_pending_polls_that_end_without_a_card_cost_no_command_over_tcp():
    """Every pending poll that sees no card ends with an abort (a host ACK the chip does not
    answer) and the next poll's command follows at once. Over TCP with Nagle's algorithm on,
    that command waited for the emulator's delayed ACK, past the driver's ACK limit: a failed
    poll each time, and a card arriving then waited for the poll after."""
    emu = PN532Emu(RealClock(), "uart")
    with TCPServer(emu) as srv:
        emu.script([(1500, "place", bytes.fromhex(UIDS[0]))])
        proc = subprocess.run(micropython_cmd(os.path.join(DEVICE_TESTS, "pn532_tcp_reader.py"),
                                              str(srv.port), "1", "60"),
                              env=micropython_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("TAP ")] == UIDS[:1], proc.stdout
    health = json.loads([ln for ln in lines if ln.startswith("HEALTH ")][0][len("HEALTH "):])
    assert emu.aborted >= 5, "pending polls that ended without a card: %d" % emu.aborted
    # with Nagle on, every one of them cost a failed command; a loaded machine may cost one
    assert health["errors"] <= emu.aborted // 4, (emu.aborted, health)


def test_the_tcp_stream_to_the_chip_sends_each_write_at_once():
    """The unix board's stand-in for the UART: Nagle's algorithm is off on the firmware's
    socket (the emulator's end sets it too), so a command is not held back behind an
    unanswered abort."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        port = SocketPort("127.0.0.1", srv.getsockname()[1])
        try:
            assert port.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            port.close()
    finally:
        srv.close()
