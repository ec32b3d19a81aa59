"""A stand-in terminal for the downlink: cpos.net.sync + cpos.net.mqtt over a card table in a file.

Usage: standin_sync.py FLASH_FILE HOST PORT SITE TERMINAL PASSWORD KEY_HEX WATCH_UID_HEX CTL_DIR
Runs on MicroPython (under the heap cap) and CPython. Keeps its card table in FLASH_FILE
(so a restart is a reboot), syncs it with the backend, and prints a line
`STATE {json}` whenever what it believes changes: table version, included_seq, synced,
refusal counts by reason, and the watched card as a lookup sees it. Every line of
the engine's cpos.log.Log is printed as `LOG ...` (`LOG S sync: refused message: bad tag`).
A file CTL_DIR/tap holding an amount in øre is a tap of the watched card at a till: the
stand-in waits as the firmware does (`Sync.settled`), decides with cpos.rules and prints `DECISION <reason name> <ms>`.
Stops at CTL_DIR/stop.
"""
import asyncio
import json
import os
import sys
import time

from cpos import log, reasons, rules
from cpos.cards import table as cardtable
from cpos.blockfile import BlockFile
from cpos.compat import sleep_ms, ticks_diff, ticks_ms
from cpos.net.signing import key_from_hex
from cpos.net.mqtt import MQTTClient
from cpos.net.sync import Sync
from standin_io import say


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


async def main(argv):
    flash, host, port, site, term, pw, key, watch, ctl = argv[1:10]
    tid = "t%04d" % int(term)
    uid = bytes(int(watch[i:i + 2], 16) for i in range(0, len(watch), 2))
    table = cardtable.CardTable(BlockFile(flash, 24 * 4096), card_slots=32)
    c = MQTTClient(tid, host, int(port), tid, pw, keepalive=5, backoff_min_ms=50, backoff_max_ms=500)
    s = Sync(table, c, site, tid, key_from_hex(key), log=log.Log(lambda line: say("LOG " + line)), retry_ms=2000)
    card, spends = rules.CardRecord(), rules.Spends()
    profile = rules.Profile()

    def state():
        r = table.lookup(uid, card, spends)
        return {"version": table.version, "included": table.included_seq, "synced": s.synced,
                "connected": c.connected, "rejected": s.rejected, "why": s.why, "applied": s.applied,
                "snapshots": s.snapshots, "found": r, "status": card.status if r == cardtable.FOUND else -1,
                "balance": card.balance if r == cardtable.FOUND else 0}

    tasks = [asyncio.create_task(c.run()), asyncio.create_task(s.run())]
    last = None
    tap = ctl + "/tap"
    while not _exists(ctl + "/stop"):
        if _exists(tap):
            with open(tap) as f:
                amount = int(f.read())
            os.remove(tap)
            t0 = ticks_ms()
            await s.settled()
            r = table.lookup(uid, card, spends)
            d = rules.authorize(card if r == cardtable.FOUND else None, spends, profile, amount, int(time.time()))
            say("DECISION %s %d" % (reasons.name(rules.reason(d)), ticks_diff(ticks_ms(), t0)))
        st = json.dumps(state())
        if st != last:
            last = st
            say("STATE " + st)
        await sleep_ms(5)
    await c.stop()
    for t in tasks:
        t.cancel()
    return 0


sys.exit(asyncio.run(main(sys.argv)))
