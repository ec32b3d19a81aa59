"""POS links: the transports a board offers for the till's line protocol (TCP server, UART).

    link = make_link({"link": "tcp", "host": "0.0.0.0", "port": 7101})

Owns how request and reply lines travel between the POS and `cpos.pos.server`.
`make_link(cfg)` builds a link from the config's `pos` section (docs/config.md):
`{"link": "tcp", "host": ..., "port": ...}` (the terminal listens; the unix board's
simulated till connects), `{"link": "uart", "uart": 1, "tx": 32, "rx": 33,
"baud": 115200}` (an ESP32's serial line), or `{"link": "none"}`, which gives None (no
POS). A board's `pos_link(spec)` calls it (boards/README.md), as its `pn532_link(spec)`
calls `cpos.reader.link.make_link`; `machine` is imported only for a UART.

Every link has `serve(session, log)`, awaited once by the server: each connection runs
`session(reader, writer)` (asyncio streams). TCP listens and returns its server
(`close()` stops it); UART runs the line's one session until it ends and returns None.
"""
import asyncio

from cpos.compat import const, sleep_ms

_BIND_TRIES = const(20)  # attempts to listen, _BIND_PAUSE_MS apart, before the POS task fails
_BIND_PAUSE_MS = const(250)


class TcpServer:
    """The POS connects to the terminal: a TCP server on host:port."""

    def __init__(self, host, port):
        self.host = host
        self.port = port

    async def serve(self, session, log):
        """Listen and return the server. Right after a reset the port may still be held
        by the previous run for a moment (EADDRINUSE): retry for a few seconds, then
        raise the OSError."""
        host, port = self.host, self.port
        for attempt in range(_BIND_TRIES):
            try:
                server = await asyncio.start_server(session, host, port)
            except OSError as e:
                if attempt == _BIND_TRIES - 1:
                    raise
                log.warn("POS: cannot listen on %s:%d yet (%s), retrying" % (host, port, e))
                await sleep_ms(_BIND_PAUSE_MS)
            else:
                log.info("POS: listening on %s:%d" % (host, port))
                return server


class UartLine:
    """The POS on a serial line (`machine.UART`, ESP32; untested without hardware)."""

    def __init__(self, uart):
        self.uart = uart

    async def serve(self, session, log):
        """Run the line's one session until its reader ends; return None."""
        uart = self.uart
        await session(asyncio.StreamReader(uart), asyncio.StreamWriter(uart, {}))


def make_link(cfg):
    """Build a POS link from the config's `pos` section (see the module docstring)."""
    kind = cfg.get("link")
    if kind == "tcp":
        return TcpServer(cfg["host"], cfg["port"])
    if kind == "uart":
        import machine  # only on a board

        return UartLine(machine.UART(cfg.get("uart", 1), baudrate=cfg.get("baud", 115200),
                                     tx=cfg.get("tx"), rx=cfg.get("rx")))
    if kind == "none":
        return None
    raise ValueError("unknown POS link %r" % (kind,))
