"""The point of sale: the till's or vending machine's line protocol and its server.

    lines.py   parsing requests and formatting replies (docs/pos-protocol.md)
    link.py    the transports a board offers for it (TCP server, UART)
    server.py  one open request at a time, and the sessions that make and cancel it

Nothing is imported here.
"""
