"""Run on the MicroPython unix port: our driver reads taps from the PN532 emulator
over TCP, the carrier the firmware's unix board uses.

Usage: pn532_tcp_reader.py PORT NTAPS   Prints `TAP <uid hex>` per tap, then
`HEALTH <json>`.
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


async def main(port, ntaps):
    link = make_link({"link": "tcp", "host": "127.0.0.1", "port": port})
    reader = CardReader(PN532(link))
    for _ in range(ntaps):
        uid = await reader.next_tap()
        print("TAP", bytes(uid).hex())
    print("HEALTH", json.dumps(reader.health()))
    link.close()


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
