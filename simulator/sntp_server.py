"""The simulated site's SNTP server on loopback: the world's time, or a lie, or silence.

Owns answering SNTP requests (RFC 4330, the server side) from the simulated terminals with
the run's clock (simulator/terminal.py ScenarioClock), shifted by `skew` seconds when a
scenario makes it lie (`clock_skew`), and not at all while it is `down` (`ntp_down`). It
runs in a thread of its own with a blocking socket, so it answers even while the
simulator's event loop is busy. Shares no code with the client it serves (cpos.sntp).
"""
import socket
import struct
import threading

NTP_EPOCH_OFFSET = 2208988800  # 1900-01-01 to 1970-01-01, in seconds


class SNTPServer:
    def __init__(self, clock, host="127.0.0.1"):
        self.clock = clock  # float UTC seconds
        self.skew = 0  # seconds added to every answer (a lying server)
        self.up = True
        self.answered = 0
        self.ignored = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.2)
        self.host, self.port = self._sock.getsockname()
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._serve, name="sntp", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._sock.close()

    def answer(self, req):
        """The 48-byte answer to request `req` (None for something that is no client request)."""
        if len(req) < 48 or req[0] & 7 != 3:
            return None
        t = self.clock() + self.skew
        secs = int(t)
        frac = int((t - secs) * (1 << 32)) & 0xFFFFFFFF
        ntp = secs + NTP_EPOCH_OFFSET
        out = bytearray(48)
        out[0] = (0 << 6) | (4 << 3) | 4  # no leap warning, version 4, server
        out[1] = 2  # stratum: synchronised to a stratum-1 clock
        out[2] = req[2] or 6  # poll
        out[3] = 0xEC  # precision ~2^-20 s
        out[12:16] = b"SIM\0"  # reference id
        struct.pack_into(">II", out, 16, ntp - 60, 0)  # reference time: a minute ago
        out[24:32] = req[40:48]  # originate = the client's transmit timestamp
        struct.pack_into(">IIII", out, 32, ntp, frac, ntp, frac)  # receive, transmit
        return bytes(out)

    def _serve(self):
        while not self._stop.is_set():
            try:
                req, addr = self._sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            if not self.up:
                self.ignored += 1
                continue
            out = self.answer(req)
            if out is not None:
                self._sock.sendto(out, addr)
                self.answered += 1
