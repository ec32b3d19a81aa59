"""SNTP client (RFC 4330): one 48-byte UDP exchange, without holding the event loop.

Owns the request and the checks on the answer; the caller (cpos.timetask) hands the
time to cpos.timekeeper, which decides whether to believe it. Why not MicroPython's
`ntptime` on the ESP32: `ntptime.time()` blocks on its socket for up to its timeout
(holding every task, the tap path too), does not check that the answer echoes our
request, and `settime()` writes the RTC without asking anyone. This client sends a
random transmit timestamp, accepts only an answer that echoes it (a blind spoofer must
guess 64 bits), waits with `await` between non-blocking reads, and sets nothing.

    t, rtt_ms = await sntp.query(addr, timeout_ms=1500)   # addr from sntp.resolve(host, port)

Runs on both runtimes (the simulator serves SNTP on loopback: simulator/sntp_server.py).
"""
import os
import socket
import struct

from cpos.compat import const, sleep_ms, ticks_diff, ticks_ms

NTP_DELTA = 2208988800  # seconds from 1900-01-01 (NTP's era 0) to 1970-01-01
SIZE = const(48)
_MODE_CLIENT = const(3)
_MODE_SERVER = const(4)
_POLL_MS = const(10)


class SNTPError(OSError):
    """No usable answer: timed out, or the answer failed a check (the message says which)."""


def request(nonce):
    """A client request (version 4, mode 3) whose transmit timestamp is the 8-byte `nonce`."""
    buf = bytearray(SIZE)
    buf[0] = (4 << 3) | _MODE_CLIENT
    buf[40:48] = nonce
    return buf


def parse(buf, nonce):
    """(seconds since 1970, milliseconds) of the server's transmit time in answer `buf` to
    our request with `nonce`; SNTPError naming the check it fails."""
    if len(buf) < SIZE:
        raise SNTPError("short answer")
    if buf[0] & 7 != _MODE_SERVER:
        raise SNTPError("not a server answer")
    if buf[0] >> 6 == 3:
        raise SNTPError("server not synchronised")
    if not 1 <= buf[1] <= 15:
        raise SNTPError("stratum %d" % buf[1])  # 0: kiss-o'-death
    if bytes(buf[24:32]) != bytes(nonce):
        raise SNTPError("answer does not echo our request")
    secs, frac = struct.unpack_from(">II", buf, 40)
    if secs < NTP_DELTA:
        raise SNTPError("transmit time before 1970")
    return secs - NTP_DELTA, (frac * 1000) >> 32


def resolve(host, port=123):
    """The socket address of an SNTP server (a DNS lookup blocks: give an IP address, or call
    this once, not per query)."""
    return socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]


async def query(addr, timeout_ms=1500):
    """(UTC seconds, round trip ms) from the server at `addr`; SNTPError when no valid answer
    comes within `timeout_ms`. The time is the server's transmit time plus half the round trip."""
    nonce = os.urandom(8)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        t0 = ticks_ms()
        try:
            s.sendto(request(nonce), addr)
        except OSError as e:
            raise SNTPError("send failed: %s" % e)
        while True:
            try:
                data = s.recv(64)
            except OSError:  # nothing yet (EAGAIN)
                data = None
            rtt = ticks_diff(ticks_ms(), t0)
            if data:
                try:
                    secs, ms = parse(data, nonce)
                except SNTPError:
                    data = None  # a stray or forged datagram: keep waiting for ours
                else:
                    return secs + (ms + rtt // 2) // 1000, rtt
            if rtt >= timeout_ms:
                raise SNTPError("no answer in %d ms" % timeout_ms)
            await sleep_ms(_POLL_MS)
    finally:
        s.close()
