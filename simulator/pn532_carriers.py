"""Carriers for the PN532 emulator: the ways bytes reach `PN532Emu` (CPython).

Owns the bus side of each host interface, as seen by a driver:
* `EmuStreamPort`: a non-blocking byte stream (`write`, `readinto`) for our
  `StreamLink`, in process.
* `FakeUART`: the object adafruit's `PN532_UART` wants (`write`, `read(n)` with a
  timeout, `in_waiting`, `reset_input_buffer`, which drops what has arrived).
* `EmuI2C`: a bus at address 0x24 with both machine.I2C's and busio.I2C's methods
  (`writeto`, `readfrom_into`, `try_lock`, `unlock`). Every read starts with the ready
  byte; a read longer than that byte delivers the waiting frame and consumes it.
  Each transfer stretches the clock `stretch_us`; with a bus `timeout_us` shorter
  than that it raises OSError(ETIMEDOUT), as an ESP32 whose I2C timeout is too short.
  A muted or reset-held chip does not acknowledge its address (OSError(ENODEV)).
* `EmuSPI` + `EmuCS` (machine.Pin style) / `EmuDigitalInOut` (digitalio style):
  a chip-select transaction begins with an operation byte, LSB first on the wire
  (02 status read, 01 data write, 03 data read); status is repeated for every
  further byte clocked while NSS stays low.
* `EmuResetPin`: the RSTPD_N line (`value(v)`).
* `TCPServer`: serves one client (the firmware on the unix port) with the HSU byte
  stream over TCP, on a thread, with a real clock.

Run a server by hand: `python -m simulator.pn532_carriers --port 5532 --script
"500:place:04a1b2c3,3000:remove"` (times in ms from start).
"""
import errno
import select
import socket
import threading
import time

from simulator.pn532_emu import Card, PN532Emu, RealClock


def _rev(b):
    r = 0
    for _ in range(8):
        r = (r << 1) | (b & 1)
        b >>= 1
    return r


REV = bytes(_rev(i) for i in range(256))


class EmuStreamPort:
    """Non-blocking stream for cpos.reader.link.StreamLink."""

    def __init__(self, emu):
        self.emu = emu

    def write(self, buf):
        self.emu.host_write(bytes(buf))
        return len(buf)

    def readinto(self, buf):
        data = self.emu.uart_read(len(buf))
        buf[: len(data)] = data
        return len(data)


class FakeUART:
    """busio.UART / pyserial-like object for adafruit's PN532_UART."""

    def __init__(self, emu, timeout=0.05):
        self.emu = emu
        self.timeout = timeout
        self.written = bytearray()

    def write(self, buf):
        self.written += buf
        self.emu.host_write(bytes(buf))
        return len(buf)

    def read(self, n):
        out = bytearray()
        t_end = time.monotonic() + self.timeout
        while len(out) < n:
            out += self.emu.uart_read(n - len(out))
            if len(out) >= n or time.monotonic() >= t_end:
                break
            time.sleep(0.0005)
        return bytes(out) if out else None

    @property
    def in_waiting(self):
        return self.emu.uart_available()

    def reset_input_buffer(self):
        self.emu.uart_drop_received()


class _BusLock:
    def __init__(self):
        self._locked = False

    def try_lock(self):
        if self._locked:
            return False
        self._locked = True
        return True

    def unlock(self):
        self._locked = False

    def configure(self, **kw):
        self.config = kw

    def deinit(self):
        pass


def _span(buf, start, end):
    if end is None:
        end = len(buf)
    return start, end


class EmuI2C(_BusLock):
    """I2C bus with a PN532 at `addr` (machine.I2C and busio.I2C methods)."""

    def __init__(self, emu, addr=0x24, stretch_us=300, timeout_us=None):
        _BusLock.__init__(self)
        self.emu = emu
        self.addr = addr
        self.stretch_us = stretch_us
        self.timeout_us = timeout_us
        self.transfers = 0
        self.timeouts = 0
        self.bus_bytes = 0  # address + data bytes clocked (for benchmarks)

    def _transfer(self, addr, nbytes):
        self.transfers += 1
        self.bus_bytes += nbytes + 1
        if addr != self.addr or self.emu._dead():
            raise OSError(errno.ENODEV, "no ACK from 0x%02x" % addr)
        if self.timeout_us is not None and self.stretch_us > self.timeout_us:
            self.emu.clock.sleep_us(self.timeout_us)
            self.timeouts += 1
            raise OSError(errno.ETIMEDOUT, "SCL held low past the bus timeout")
        self.emu.clock.sleep_us(self.stretch_us + (nbytes + 1) * self.emu.byte_us)

    def writeto(self, addr, buf, *args, start=0, end=None, stop=True):
        start, end = _span(buf, start, end)
        self._transfer(addr, end - start)
        data = bytes(buf[start:end])
        if data:
            self.emu.host_write(data)
        return end - start

    def readfrom_into(self, addr, buf, *args, start=0, end=None, stop=True):
        start, end = _span(buf, start, end)
        self._transfer(addr, end - start)
        n = end - start
        ready = self.emu.frame_ready()
        buf[start] = 1 if ready else 0
        if n > 1:
            frame = self.emu.take_frame() if ready else b""
            body = (frame + bytes(n))[: n - 1]
            buf[start + 1:end] = body

    def scan(self):
        return [] if self.emu._dead() else [self.addr]


class EmuSPI(_BusLock):
    """SPI bus to a PN532 (machine.SPI and busio.SPI methods); pair with a CS pin."""

    def __init__(self, emu):
        _BusLock.__init__(self)
        self.emu = emu
        self._selected = False
        self._lost = False
        self._op = None
        self._wdata = bytearray()
        self._frame = None
        self._rpos = 0
        self.transfers = 0
        self.bus_bytes = 0  # bytes clocked (for benchmarks)

    def select(self, low):
        if low and not self._selected:
            self._selected = True
            self._lost = self.emu.wake_by_select()
            self._op = None
            self._wdata = bytearray()
        elif not low and self._selected:
            self._selected = False
            if self._op == 0x01 and self._wdata and not self._lost:
                self._frame = None  # a new command: what was left of the last frame is gone
                self.emu.host_write(bytes(self._wdata))
            if self._op == 0x03 and self._frame is not None and self._rpos >= len(self._frame):
                self._frame = None  # read out in full
            self._op = None

    def _byte(self, wire_out):
        """Clock one byte: the host sends `wire_out`, gets the returned byte."""
        self.bus_bytes += 1
        if not self._selected or self.emu._dead():
            return 0xFF if not self._selected else 0x00
        self.emu.clock.sleep_us(self.emu.byte_us)
        v = REV[wire_out]
        if self._lost:
            return 0x00
        if self._op is None:
            self._op = v
            if v == 0x03 and self._frame is None:
                # a data read takes the waiting frame; a read that stopped early is
                # continued by the next one (a host may read a frame in parts)
                self._frame = self.emu.take_frame()
                self._rpos = 0
            return 0x00
        if self._op == 0x02 and self._frame is not None:
            return REV[1]  # the rest of a frame read in part is still waiting
        if self._op == 0x02:
            return REV[1 if self.emu.frame_ready() else 0]
        if self._op == 0x01:
            self._wdata.append(v)
            return 0x00
        if self._op == 0x03:
            f = self._frame or b""
            b = f[self._rpos] if self._rpos < len(f) else 0
            self._rpos += 1
            return REV[b]
        return 0x00

    def write(self, buf, *args, start=0, end=None):
        self.transfers += 1
        start, end = _span(buf, start, end)
        for i in range(start, end):
            self._byte(buf[i])

    def readinto(self, buf, *args, start=0, end=None, write_value=0):
        self.transfers += 1
        if args:
            write_value = args[0]
        start, end = _span(buf, start, end)
        for i in range(start, end):
            buf[i] = self._byte(write_value)

    def write_readinto(self, out, into, *args, out_start=0, out_end=None, in_start=0, in_end=None):
        self.transfers += 1
        out_start, out_end = _span(out, out_start, out_end)
        in_start, in_end = _span(into, in_start, in_end)
        data = bytes(out[out_start:out_end])
        for k, b in enumerate(data):
            into[in_start + k] = self._byte(b)


class EmuCS:
    """machine.Pin-style chip select for EmuSPI."""

    def __init__(self, spi):
        self.spi = spi

    def value(self, v=None):
        if v is not None:
            self.spi.select(not v)
        return 0 if self.spi._selected else 1

    def __call__(self, v=None):
        return self.value(v)


class EmuDigitalInOut:
    """digitalio.DigitalInOut-style chip select for adafruit's SPIDevice."""

    def __init__(self, spi):
        self.spi = spi
        self.direction = None

    def switch_to_output(self, value=False, drive_mode=None):
        self.value = value

    @property
    def value(self):
        return not self.spi._selected

    @value.setter
    def value(self, v):
        self.spi.select(not v)


class EmuResetPin:
    """RSTPD_N of the emulated chip, machine.Pin style."""

    def __init__(self, emu):
        self.emu = emu
        self.level = 1
        self.pulses = 0

    def value(self, v=None):
        if v is not None:
            if self.level and not v:
                self.pulses += 1
            self.level = 1 if v else 0
            self.emu.set_reset_pin(self.level)
        return self.level


class TCPServer:
    """Serve the emulator's HSU byte stream to one TCP client at a time."""

    def __init__(self, emu, host="127.0.0.1", port=0):
        self.emu = emu
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._run = False
        self._thread = None
        self.clients = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def start(self):
        self._run = True
        self._thread = threading.Thread(target=self._serve, name="pn532-emu", daemon=True)
        self._thread.start()
        return self.port

    def stop(self):
        self._run = False
        if self._thread:
            self._thread.join(5)
        self.sock.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _serve(self):
        client = None
        while self._run:
            if client is None:
                try:
                    client, _ = self.sock.accept()
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.clients += 1
                except (socket.timeout, OSError):
                    continue
            try:
                r, _, _ = select.select([client], [], [], 0.0005)
                if r:
                    data = client.recv(4096)
                    if not data:
                        client.close()
                        client = None
                        continue
                    self.bytes_in += len(data)
                    self.emu.host_write(data)
                out = self.emu.uart_read(4096)
                if out:
                    client.sendall(out)
                    self.bytes_out += len(out)
            except OSError:
                try:
                    client.close()
                except OSError:
                    pass
                client = None
        if client is not None:
            client.close()


def parse_script(text):
    """"500:place:04a1b2c3,3000:remove" -> [(500, "place", b"..."), (3000, "remove")]."""
    steps = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        f = part.split(":")
        if f[1] == "place":
            steps.append((float(f[0]), "place", Card(bytes.fromhex(f[2]))))
        elif f[1] == "remove":
            steps.append((float(f[0]), "remove"))
        else:
            raise ValueError("bad step %r" % part)
    return steps


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description="PN532 emulator on a TCP port (HSU byte stream)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5532)
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--script", default="", help='e.g. "500:place:04a1b2c3,3000:remove" (ms)')
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    a = ap.parse_args(argv)
    emu = PN532Emu(RealClock(), "uart", a.baud)
    srv = TCPServer(emu, a.host, a.port)
    emu.script(parse_script(a.script))
    print("PN532 emulator on %s:%d" % (a.host, srv.port), flush=True)
    srv.start()
    try:
        t0 = time.monotonic()
        while not a.seconds or time.monotonic() - t0 < a.seconds:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    srv.stop()


if __name__ == "__main__":
    main()
