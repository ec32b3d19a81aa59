"""Run on the MicroPython unix port: our driver reads taps from the PN532 emulator
over TCP, the carrier the firmware's unix board uses.

Usage: pn532_tcp_reader.py PORT NTAPS [WAIT_MS]   Prints `TAP <uid hex>` per tap,
then `HEALTH <json>`. WAIT_MS > 0: pending polls of that length (0: plain polling).
"""
import json
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from cpos.reader.pn532 import PN532
from cpos.reader.link import make_link
from cpos.reader.tap import CardReader


async def main(port, ntaps, wait_ms):
    link = make_link({"link": "tcp", "host": "127.0.0.1", "port": port})
    reader = CardReader(PN532(link), wait_ms=wait_ms)
    for _ in range(ntaps):
        uid = await reader.next_tap()
        print("TAP", bytes(uid).hex())
    print("HEALTH", json.dumps(reader.health()))
    link.close()


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0))
