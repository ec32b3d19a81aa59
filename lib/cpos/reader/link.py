"""PN532 host links: how frames get to the chip and back over HSU/UART, I2C, SPI or TCP.

Owns the transport rules of each interface (UM0701-02 section 6.2.5 and the PN532
datasheet): the HSU wake-up sequence, the I2C ready byte that starts every read, the
SPI operation bytes (status read 02, data write 01, data read 03) sent LSB first,
and pulsing the reset pin. Frames themselves belong to `cpos.reader.frame`.

Every link offers the same small async interface to the driver (`pn532.py`):
`write(buf, n)`, `read_event(reader, timeout_ms, maxlen)`, `wake()`, `pulse_reset()`,
`drain()`, `close()`. No call blocks the event loop for longer than one frame's bus
transfer: links poll, and sleep through the clock between polls.

Below the links sit tiny byte-stream / bus objects. On an ESP32 they are
`machine.UART`, `machine.I2C`, `machine.SPI` and `machine.Pin` themselves (the thin
adapters here are the only code that touches them and cannot be tested without the
hardware); on the unix port and CPython the stream is a TCP socket to the chip
emulator (`simulator/pn532_emu.py`), and in CPython tests the emulator's fake buses
stand in with the same methods as the machine classes.

`make_link(cfg)` builds a link from the board configuration, a dict such as
`{"link": "uart", "uart": 1, "tx": 17, "rx": 16, "baud": 115200, "reset": 4}`,
`{"link": "i2c", "i2c": 0, "scl": 22, "sda": 21, "freq": 400000, "reset": 4}`,
`{"link": "spi", "spi": 2, "sck": 18, "mosi": 23, "miso": 19, "cs": 5, "baud": 1000000}`
or `{"link": "tcp", "host": "127.0.0.1", "port": 5532}`.
"""
from cpos.compat import const, sleep_ms, ticks_ms, ticks_diff
from cpos.reader import frame as F

try:
    import asyncio
except ImportError:  # pragma: no cover - very old MicroPython
    import uasyncio as asyncio

try:
    from errno import EAGAIN
except ImportError:  # pragma: no cover
    EAGAIN = 11

_EWOULDBLOCK = (EAGAIN, 11, 35, 115)  # EAGAIN / EWOULDBLOCK / EINPROGRESS on Linux and macOS
_IPPROTO_TCP = const(6)  # the unix port's socket module names neither (same numbers on Linux and macOS)
_TCP_NODELAY = const(1)
_HSU_WAKE = b"\x55\x55\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
_DRAIN_MAX = const(576)  # bytes a drain drops at most: the ESP32 UART's 512-byte receive buffer and a little
_SPI_STATUS = const(0x02)
_SPI_WRITE = const(0x01)
_SPI_READ = const(0x03)
_I2C_ADDR = const(0x24)
# The PN532 stretches SCL for hundreds of microseconds (more while it is busy):
# allow far more than that, and still never more than 25 ms in one bus call.
I2C_TIMEOUT_US = const(25000)


class SystemClock:
    """Milliseconds and asyncio sleeps of the running system (both runtimes)."""

    def ticks_ms(self):
        return ticks_ms()

    def ticks_diff(self, a, b):
        return ticks_diff(a, b)

    async def sleep_ms(self, ms):
        await sleep_ms(ms)


SYSTEM_CLOCK = SystemClock()


def _rev_table():
    t = bytearray(256)
    for i in range(256):
        r = 0
        v = i
        for _ in range(8):
            r = (r << 1) | (v & 1)
            v >>= 1
        t[i] = r
    return bytes(t)


REV = _rev_table()  # bit order reversal: the PN532's SPI is LSB first, most hosts MSB first


class _Link:
    """What every link shares: the clock, the reset pin and traffic counters."""

    kind = "?"

    def __init__(self, reset=None, clock=None):
        self.clock = clock or SYSTEM_CLOCK
        self.reset_pin = reset
        self.tx_bytes = 0  # bytes sent to the chip (for health and benchmarks)
        self.rx_bytes = 0  # bytes read from the chip
        self.bus_errors = 0  # OSErrors of the bus that were retried

    def _read_size(self, maxlen):
        """Bytes to clock in for a response of up to `maxlen` data bytes (frame overhead
        included), never more than the receive buffer of a bus link holds."""
        n = (maxlen or 32) + 8
        return n if n <= len(self._rx) else len(self._rx)

    async def pulse_reset(self):
        """Pulse RSTPD_N low if the board wires it; return True if it did."""
        pin = self.reset_pin
        if pin is None:
            return False
        pin.value(0)
        await self.clock.sleep_ms(2)  # datasheet: >= 20 ns low; 1-2 ms is the usual margin
        pin.value(1)
        await self.clock.sleep_ms(10)  # oscillator start and boot: a few ms
        return True

    async def wake(self):
        pass

    def drain(self):
        pass

    def close(self):
        pass


class StreamLink(_Link):
    """HSU (UART) framing over any byte stream: a machine.UART or a TCP socket.

    `port` has `write(buf) -> n` and a non-blocking `readinto(buf) -> n` (0 when
    nothing is there; OSError when the stream is gone). `reopen()` is optional.
    """

    kind = "uart"

    def __init__(self, port, reset=None, clock=None, poll_ms=1):
        _Link.__init__(self, reset, clock)
        self.port = port
        self.poll_ms = poll_ms
        self._rx = bytearray(64)

    async def write(self, buf, n):
        mv = memoryview(buf)
        off = 0
        t0 = self.clock.ticks_ms()
        while off < n:
            k = self.port.write(mv[off:n])
            if k:
                off += k
            else:
                if self.clock.ticks_diff(self.clock.ticks_ms(), t0) > 200:
                    raise F.PN532Timeout("link write stalled")
                await self.clock.sleep_ms(self.poll_ms)
        self.tx_bytes += n

    async def wake(self):
        """HSU wake-up: 55 55 then zeros, long enough for the chip's oscillator."""
        if hasattr(self.port, "reopen"):
            self.port.reopen()
        await self.write(_HSU_WAKE, len(_HSU_WAKE))
        await self.clock.sleep_ms(2)
        self.drain()

    def drain(self):
        """Drop what has arrived: at most one receive buffer's worth (a babbling line
        would otherwise keep us here for ever)."""
        left = _DRAIN_MAX
        try:
            while left > 0:
                n = self.port.readinto(self._rx)
                if not n:
                    break
                left -= n
        except OSError:
            pass

    async def read_event(self, reader, timeout_ms, maxlen=0):
        clock = self.clock
        t0 = clock.ticks_ms()
        quiet = 0  # empty reads since the last byte, each after a sleep
        while True:
            # Look past a false start only once the line has been quiet for a poll:
            # a chip sends each frame in one burst.
            ev = reader.next(quiet >= 2)
            if ev:
                return ev
            n = self.port.readinto(self._rx)
            if n:
                self.rx_bytes += n
                reader.feed(self._rx, 0, n)  # never more than the reader holds
                quiet = 0
                if clock.ticks_diff(clock.ticks_ms(), t0) >= timeout_ms:
                    return reader.next(True)  # a babbling line must not hold us
                await clock.sleep_ms(0)
                continue
            quiet += 1
            if quiet > 2 and clock.ticks_diff(clock.ticks_ms(), t0) >= timeout_ms:
                return F.NONE
            await clock.sleep_ms(self.poll_ms)

    def close(self):
        if hasattr(self.port, "close"):
            self.port.close()


class _BusLink(_Link):
    """I2C and SPI: the host polls the chip's ready status, then reads a frame's worth.

    A subclass says whether the chip is ready (`_ready()`) and reads into a buffer
    (`_read_into(mv)`: where the frame bytes start in it, -1 if the read failed).
    """

    async def read_event(self, reader, timeout_ms, maxlen=0):
        clock = self.clock
        t0 = clock.ticks_ms()
        nread = self._read_size(maxlen)
        while True:
            if self._ready():
                mv = memoryview(self._rx)[:nread]
                start = self._read_into(mv)
                if start >= 0:
                    self.rx_bytes += nread
                    reader.feed(mv, start, nread)
                    ev = reader.next(True)
                    if ev:
                        await clock.sleep_ms(0)  # yield between reads: a babbling chip holds no one up
                        return ev
            if clock.ticks_diff(clock.ticks_ms(), t0) >= timeout_ms:
                return F.NONE
            await clock.sleep_ms(self.poll_ms)


class I2CLink(_BusLink):
    """I2C: writes are plain; every read begins with the ready byte (01 = ready).

    `i2c` has machine.I2C's `writeto(addr, buf)` and `readfrom_into(addr, buf)`.
    An OSError (the chip NACKed its address while busy, or stretched the clock past
    the bus timeout) is counted in `bus_errors` and the poll is simply repeated.
    """

    kind = "i2c"

    def __init__(self, i2c, addr=_I2C_ADDR, reset=None, clock=None, poll_ms=2):
        _Link.__init__(self, reset, clock)
        self.i2c = i2c
        self.addr = addr
        self.poll_ms = poll_ms
        self._st = bytearray(1)
        self._rx = bytearray(F.frame_size(F.MAX_DATA) + 1)
        self._tx = bytearray(F.frame_size(F.MAX_DATA))

    async def write(self, buf, n):
        mv = memoryview(self._tx)
        mv[:n] = memoryview(buf)[:n]
        for attempt in range(3):
            try:
                self.i2c.writeto(self.addr, mv[:n])
                self.tx_bytes += n
                return
            except OSError:
                self.bus_errors += 1
                await self.clock.sleep_ms(self.poll_ms)
        raise F.PN532Timeout("i2c write not acknowledged")

    async def wake(self):
        # The chip wakes on its own address; a failed first try is expected.
        try:
            self.i2c.writeto(self.addr, b"\x00")
        except OSError:
            pass
        await self.clock.sleep_ms(2)

    def _ready(self):
        try:
            self.i2c.readfrom_into(self.addr, self._st)
            return self._st[0] == 0x01
        except OSError:
            self.bus_errors += 1
            return False

    def _read_into(self, mv):
        """The frame follows the ready byte, which must still say ready."""
        try:
            self.i2c.readfrom_into(self.addr, mv)
        except OSError:
            self.bus_errors += 1
            return -1
        return 1 if mv[0] == 0x01 else -1


class SPILink(_BusLink):
    """SPI mode 0, LSB first: bytes are bit-reversed here so any MSB-first SPI works.

    `spi` has machine.SPI's `write(buf)` and `readinto(buf, write_byte)`; `cs` is a
    machine.Pin (`value(v)`), driven low around every transfer.
    """

    kind = "spi"

    def __init__(self, spi, cs, reset=None, clock=None, poll_ms=2):
        _Link.__init__(self, reset, clock)
        self.spi = spi
        self.cs = cs
        self.poll_ms = poll_ms
        cs.value(1)
        self._op = bytearray(1)
        self._st = bytearray(1)
        n = F.frame_size(F.MAX_DATA) + 1
        self._tx = bytearray(n)
        self._rx = bytearray(n)

    def _xfer_read(self, op, buf):
        self._op[0] = REV[op]
        self.cs.value(0)
        try:
            self.spi.write(self._op)
            self.spi.readinto(buf, 0)
        finally:
            self.cs.value(1)
        for i in range(len(buf)):
            buf[i] = REV[buf[i]]

    async def write(self, buf, n):
        tx = self._tx
        tx[0] = REV[_SPI_WRITE]
        for i in range(n):
            tx[i + 1] = REV[buf[i]]
        self.cs.value(0)
        try:
            self.spi.write(memoryview(tx)[:n + 1])
        finally:
            self.cs.value(1)
        self.tx_bytes += n

    async def wake(self):
        self.cs.value(0)
        await self.clock.sleep_ms(2)
        self.cs.value(1)
        await self.clock.sleep_ms(1)

    def _ready(self):
        try:
            self._xfer_read(_SPI_STATUS, self._st)
            return self._st[0] & 0x01
        except OSError:
            self.bus_errors += 1
            return 0

    def _read_into(self, mv):
        self._xfer_read(_SPI_READ, mv)  # an OSError goes up to the tap loop, as one from `write` does
        return 0


class SocketPort:
    """A non-blocking TCP byte stream (unix port and CPython): the emulator's wire."""

    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.sock = None
        self.reopen()

    def reopen(self):
        import socket

        if self.sock is not None:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(socket.getaddrinfo(self.host, self.port)[0][-1])
        # Each write goes out at once, as on a UART. With Nagle's algorithm a command
        # written after a host ACK (an abort, which the chip does not answer) waited in
        # the kernel for the emulator's delayed TCP ACK (40 ms on Linux): longer than
        # ACK_TIMEOUT_MS, so the command failed and the tap waited for the next poll.
        s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        s.setblocking(False)
        self.sock = s
        self._recv_into = getattr(s, "recv_into", None)

    def write(self, buf):
        if self.sock is None:
            raise OSError(107)
        try:
            return self.sock.send(buf) or 0
        except OSError as e:
            if e.args and e.args[0] in _EWOULDBLOCK:
                return 0
            self.close()
            raise

    def readinto(self, buf):
        if self.sock is None:
            raise OSError(107)
        try:
            if self._recv_into is not None:
                n = self._recv_into(buf)
            else:
                n = self.sock.readinto(buf)
                if n is None:
                    return 0
        except OSError as e:
            if e.args and e.args[0] in _EWOULDBLOCK:
                return 0
            self.close()
            raise
        if n == 0:
            self.close()
            raise OSError(104)  # the emulator hung up
        return n

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


class UartPort:
    """machine.UART as a non-blocking byte stream (ESP32; untested without hardware)."""

    def __init__(self, uart):
        self.uart = uart

    def write(self, buf):
        return self.uart.write(buf) or 0

    def readinto(self, buf):
        if not self.uart.any():
            return 0
        return self.uart.readinto(buf) or 0


def make_link(cfg, clock=None):
    """Build a link from a board configuration dict (see the module docstring)."""
    kind = cfg.get("link")
    if kind == "tcp":
        return StreamLink(SocketPort(cfg.get("host", "127.0.0.1"), cfg["port"]), clock=clock)
    import machine  # only on a board

    reset = None
    if cfg.get("reset") is not None:
        reset = machine.Pin(cfg["reset"], machine.Pin.OUT, value=1)
    if kind == "uart":
        u = machine.UART(cfg.get("uart", 1), baudrate=cfg.get("baud", 115200), tx=cfg["tx"], rx=cfg["rx"],
                         timeout=0, rxbuf=512)
        return StreamLink(UartPort(u), reset=reset, clock=clock)
    if kind == "i2c":
        bus = machine.I2C(cfg.get("i2c", 0), scl=machine.Pin(cfg["scl"]), sda=machine.Pin(cfg["sda"]),
                          freq=cfg.get("freq", 400000), timeout=cfg.get("timeout_us", I2C_TIMEOUT_US))
        return I2CLink(bus, cfg.get("addr", _I2C_ADDR), reset=reset, clock=clock)
    if kind == "spi":
        bus = machine.SPI(cfg.get("spi", 2), baudrate=cfg.get("baud", 1000000), polarity=0, phase=0,
                          sck=machine.Pin(cfg["sck"]), mosi=machine.Pin(cfg["mosi"]), miso=machine.Pin(cfg["miso"]))
        cs = machine.Pin(cfg["cs"], machine.Pin.OUT, value=1)
        return SPILink(bus, cs, reset=reset, clock=clock)
    raise ValueError("unknown PN532 link %r" % (kind,))
