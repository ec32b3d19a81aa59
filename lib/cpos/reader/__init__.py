"""The card reader: PN532 frames, the links that carry them, the commands, and taps.

    frame.py   the PN532 host-link frame codec (no I/O)
    link.py    HSU/UART, I2C, SPI and TCP links to the chip (`make_link`)
    pn532.py   the command layer: the few commands a terminal sends
    tap.py     what a tap is, and the self-healing poll loop (`CardReader`)

Nothing is imported here: a module is loaded when it is first used, so the package
costs one small module object (docs/heap.md).
"""
