"""MDB links: how 9-bit bytes reach the reader and its replies reach the VMC.

    link = make_link({"link": "tcp", "host": "0.0.0.0", "port": 7201})   # the virtual board
    link = make_link({"link": "uart", "uart": 1, "tx": 32, "rx": 35})     # an ESP32
    await link.open(log)
    n = await link.read(data, modes)   # >= 1 byte: data[i], modes[i] (1, 0, or 0xFF unknown)
    link.gap                           # True: the bus was idle before this chunk (UART)
    link.send(buf, n)                  # buf[:n], the mode bit on the last byte only

Owns the transport of the bus's 9-bit bytes; blocks and their meaning belong to
`cpos.mdb.bus` and `cpos.mdb.cashless`. Every link offers `open(log)`, `read(data,
modes)`, `gap`, `send(buf, n)` and `close()`.

TCP (virtual board, docs/mdb.md "The virtual bus"): the terminal listens, one VMC at a
time connects; each MDB byte travels as two bytes, the mode bit (0 or 1) then the
data. Any VMC, or a bridge from a real bus, can drive the virtual terminal that way.

UART (ESP32): 9600 baud, 8 data bits, one stop bit. The ESP32's UART has no ninth
data bit, so the mode bit rides in the parity bit: before each run of bytes the link
picks even or odd parity so that the parity bit equals the mode bit (the last byte of
a reply has it set, the others clear). MicroPython cannot tell a received byte's
parity, so received bytes come with mode 0xFF (unknown) and the framer cuts blocks by
address, length and checksum; an idle bus (no byte for more than `_GAP_US`, the
standard's 1 ms inter-byte maximum with margin) starts a new block. Tested against a
model of the wire's ninth bit (tests/device/test_mdb_uart.py), not on hardware yet:
docs/mdb.md gives its timing budget and what to check on a bench.
"""
import asyncio

from cpos.compat import const, sleep_ms, ticks_diff, ticks_us

_CHUNK = const(64)
UNKNOWN = const(0xFF)


class TcpLink:
    """The virtual bus: a TCP server, each byte as (mode, data)."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.gap = False
        self._raw = bytearray(2 * _CHUNK)
        self._rawv = memoryview(self._raw)
        self._tx = bytearray(2 * 40)
        self._odd = -1  # a mode byte whose data byte has not arrived yet
        self._conn = None  # (reader, writer) of the VMC connected now
        self._new = asyncio.Event()
        self._server = None
        self.connections = 0

    async def open(self, log):
        for attempt in range(20):
            try:
                self._server = await asyncio.start_server(self._accept, self.host, self.port)
                break
            except OSError as e:
                if attempt == 19:
                    raise
                log.warn("MDB: cannot listen on %s:%d yet (%s), retrying" % (self.host, self.port, e))
                await sleep_ms(250)
        log.info("MDB: listening on %s:%d" % (self.host, self.port))

    async def _accept(self, reader, writer):
        old = self._conn
        if old is not None:
            try:
                old[1].close()
            except Exception:  # noqa: BLE001 - the old VMC may be gone already
                pass
        self._conn = (reader, writer)
        self._odd = -1
        self.connections += 1
        self._new.set()

    async def read(self, data, modes):
        """Wait for at least one byte; returns how many were put into data/modes."""
        while True:
            conn = self._conn
            if conn is None:
                await self._new.wait()
                self._new.clear()
                continue
            want = min(len(data), _CHUNK) * 2
            try:
                if hasattr(conn[0], "readinto"):  # MicroPython: into the preallocated buffer
                    got = await conn[0].readinto(self._rawv[:want])
                    raw = self._raw
                else:  # CPython
                    raw = await conn[0].read(want)
                    got = len(raw)
            except (OSError, ValueError):
                got = 0
            if not got:
                if self._conn is conn:
                    self._conn = None
                continue
            n = 0
            i = 0
            if self._odd >= 0:
                modes[0] = self._odd
                data[0] = raw[0]
                self._odd = -1
                n, i = 1, 1
            while i + 1 < got:
                modes[n] = raw[i]
                data[n] = raw[i + 1]
                n += 1
                i += 2
            if i < got:
                self._odd = raw[i]
            if n:
                return n

    def send(self, buf, n):
        conn = self._conn
        if conn is None:
            return
        tx = self._tx
        for i in range(n):
            tx[2 * i] = 1 if i == n - 1 else 0
            tx[2 * i + 1] = buf[i]
        try:
            conn[1].write(memoryview(tx)[:2 * n])
        except Exception:  # noqa: BLE001 - a VMC that hung up
            self._conn = None

    async def drain(self):
        conn = self._conn
        if conn is not None:
            try:
                await conn[1].drain()
            except Exception:  # noqa: BLE001
                self._conn = None

    def close(self):
        if self._server is not None:
            self._server.close()


_GAP_US = const(1500)  # no byte for this long: the VMC's block is over (1 ms allowed inside one)


class UartLink:
    """An ESP32 UART through an opto-isolated MDB interface (docs/technician.md)."""

    def __init__(self, uart_id, tx, rx, invert="none"):
        import machine  # only on a board

        U = machine.UART
        inv = (U.INV_TX if invert in ("tx", "both") else 0) | (U.INV_RX if invert in ("rx", "both") else 0)
        self.uart = U(uart_id, baudrate=9600, bits=8, parity=0, stop=1, tx=tx, rx=rx,
                      timeout=0, timeout_char=2, rxbuf=256, invert=inv)
        self._args = (uart_id, tx, rx)
        self._parity = 0
        self.gap = False
        self._last_us = ticks_us()
        self._one = bytearray(1)

    async def open(self, log):
        log.info("MDB: UART %d tx %d rx %d at 9600 baud, mode bit by parity" % self._args)

    async def read(self, data, modes):
        uart = self.uart
        while True:
            n = uart.readinto(data) if uart.any() else 0
            if n:
                now = ticks_us()
                self.gap = ticks_diff(now, self._last_us) > _GAP_US
                self._last_us = now
                for i in range(n):
                    modes[i] = UNKNOWN
                return n
            await sleep_ms(0)  # the loop's other tasks; the UART's FIFO keeps arriving bytes

    def _parity_for(self, b, mode):
        """Even parity (0) sets the parity bit when b has an odd number of ones; odd (1) when even."""
        ones = 0
        while b:
            ones += b & 1
            b >>= 1
        return 0 if (ones & 1) == mode else 1

    def send(self, buf, n):
        uart, one = self.uart, self._one
        for i in range(n):
            p = self._parity_for(buf[i], 1 if i == n - 1 else 0)
            if p != self._parity:
                uart.flush()  # the bytes already queued go out with the old parity
                uart.init(parity=p)
                self._parity = p
            one[0] = buf[i]
            uart.write(one)

    async def drain(self):
        pass

    def close(self):
        pass


def make_link(spec):
    """Build an MDB link from the config's `mdb` section."""
    kind = spec.get("link")
    if kind == "tcp":
        return TcpLink(spec["host"], spec["port"])
    if kind == "uart":
        return UartLink(spec.get("uart", 1), spec["tx"], spec["rx"], spec.get("invert", "none"))
    raise ValueError("unknown MDB link %r" % (kind,))
