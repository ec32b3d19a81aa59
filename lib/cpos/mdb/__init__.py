"""MDB/ICP 4.2 cashless reader (device #1, address 0x10): what a vending machine's
controller (the VMC) talks to. docs/mdb.md is the map.

`bus` frames the VMC's blocks and builds replies; `cashless` is the reader's state
machine (pure, no I/O); `link` carries 9-bit bytes (ESP32 UART, or TCP on the virtual
board); `settings` validates the config's `mdb` section; `service` runs it all as one
asyncio task beside the app's decision path.
"""
