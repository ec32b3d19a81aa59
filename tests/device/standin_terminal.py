"""A stand-in terminal process: cpos.net.uplink + cpos.net.mqtt over a file-backed fake journal.

Usage: standin_terminal.py JOURNAL_DIR|mem:N HOST PORT SITE TERMINAL PASSWORD BATCH ACK_TIMEOUT_MS
                           TAPS TAP_INTERVAL_MS DEADLINE_MS
Runs on MicroPython (under the heap cap) and CPython. Journals TAPS new records, one every
TAP_INTERVAL_MS, in a 'tap' task that never waits on the network, while the uplink task
sends and releases them; exits 0 once every record is acknowledged, 3 at the deadline.
Prints `PROGRESS <acked> <next_seq> <batches>` lines (the fault tests time their kills on
them) and a last `RESULT <json>` line. Stands in for the firmware until issue 6 wires the
real journal and app.
"""
import asyncio
import json
import sys
import time

from cpos.compat import ticks_ms, ticks_diff
from cpos.net.mqtt import MQTTClient, sleep_ms
from cpos.net.uplink import Uplink
from fake_journal import FileJournal, MemJournal, make_record
from loop_gap import LoopGap
from standin_io import say


async def main(argv):
    (jdir, host, port, site, term, pw, batch, ack_to, taps, tap_ms, deadline) = argv[1:12]
    port, term, batch, ack_to = int(port), int(term), int(batch), int(ack_to)
    taps, tap_ms, deadline = int(taps), int(tap_ms), int(deadline)
    if jdir.startswith("mem:"):  # in-memory fake journal, prefilled with N records
        j = MemJournal()
        for _ in range(int(jdir[4:])):
            j.append(make_record(j.next_seq, int(term)))
    else:
        j = FileJournal(jdir)
    tid = "t%04d" % term
    c = MQTTClient(tid, host, port, tid, pw, keepalive=5, backoff_min_ms=100, backoff_max_ms=1000)
    up = Uplink(j, c, site, term, batch_size=batch, ack_timeout_ms=ack_to, clock=time.time)
    c.will = up.will()
    state = {"done": taps == 0}
    gap = LoopGap()  # how late each tap came, less the time the process waited for a core

    async def tapper():
        gap.start()
        for _ in range(taps):
            j.append(make_record(j.next_seq, term))
            up.kick()
            await sleep_ms(tap_ms)
            gap.lap(tap_ms)
        state["done"] = True

    tasks = [asyncio.create_task(c.run()), asyncio.create_task(up.run()), asyncio.create_task(tapper())]
    t0 = ticks_ms()
    last_report = -1
    code = 0
    while True:
        if state["done"] and up.pending() == 0:
            break
        if ticks_diff(ticks_ms(), t0) > deadline:
            code = 3
            break
        if ticks_diff(ticks_ms(), last_report) >= 100:
            last_report = ticks_ms()
            say("PROGRESS %d %d %d" % (j.acked, j.next_seq, up.batches))
        await sleep_ms(20)
    say("PROGRESS %d %d %d" % (j.acked, j.next_seq, up.batches))
    res = {"acked": j.acked, "next_seq": j.next_seq, "batches": up.batches, "records": up.records,
           "resends": up.resends, "acks": up.acks, "bad_acks": up.bad_acks, "connects": c.connects,
           "max_tap_lag_ms": gap.worst_ms, "lag_corrected": gap.corrected, "ms": ticks_diff(ticks_ms(), t0), "oldest": j.oldest_unacked()}
    await c.stop()
    for t in tasks:
        t.cancel()
    if hasattr(j, "close"):
        j.close()
    say("RESULT " + json.dumps(res))
    return code


sys.exit(asyncio.run(main(sys.argv)))
