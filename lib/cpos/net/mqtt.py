"""A small MQTT 3.1.1 client on asyncio streams, for MicroPython and CPython alike.

Owns the MQTT packet codec (pure functions, tested byte for byte) and one connection
to one broker: CONNECT with last will and keep-alive, PUBLISH at QoS 0/1 with PUBACK
tracking, SUBSCRIBE (re-sent on every connect), PINGREQ, receiving PUBLISH at QoS 0/1,
and reconnecting forever with exponential backoff and jitter. It never blocks the loop:
all socket work goes through asyncio streams (non-blocking sockets), so the tap path,
running in another task, never waits on the network.

Delivery guarantees above QoS 1 are not its business: the uplink resends from the
journal after any failure, so sessions are clean by default and nothing is kept here
across connections (docs/protocol.md explains why we wrote this instead of using a
registry package). It logs through a cpos.log.Log: a broker refusing the connection
(RefusedError) or a subscription at S, a lost link at I, a malformed packet at W.
"""
import asyncio
import struct

from cpos import log as logmod
from cpos.compat import const, sleep_ms, ticks_ms, ticks_diff

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)

PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"

CONNACK_TEXT = (
    "accepted",
    "unacceptable protocol version",
    "identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
)


class MQTTError(Exception):
    """Protocol violation, refused connection or refused subscription."""


class RefusedError(MQTTError):
    """The broker refused the connection (a CONNACK return code): bad user name or
    password, not authorized, identifier rejected. Logged at S, not I: a wrong or stolen
    credential, not a flaky link."""


# --- codec ---------------------------------------------------------------------------------

def encode_length(n):
    """MQTT 'remaining length' varint (1..4 bytes)."""
    if n < 0 or n > 268435455:
        raise MQTTError("length out of range")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _str(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


def connect_packet(client_id, user=None, password=None, keepalive=30, will=None, clean=True):
    """CONNECT; `will` is (topic, payload, qos, retain) or None."""
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will:
        wt, wp, wq, wr = will
        flags |= 0x04 | (wq << 3) | (0x20 if wr else 0)
        payload += _str(wt) + _str(wp)
    if user is not None:
        flags |= 0x80
        payload += _str(user)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    var = b"\x00\x04MQTT\x04" + struct.pack("!BH", flags, keepalive)
    body = var + payload
    return bytes((_CONNECT,)) + encode_length(len(body)) + body


def publish_header(topic, payload_len, qos=0, retain=False, pid=0, dup=False):
    """Fixed + variable header of a PUBLISH; the payload follows unchanged (no copy)."""
    t = _str(topic)
    n = len(t) + payload_len + (2 if qos else 0)
    first = _PUBLISH | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    h = bytes((first,)) + encode_length(n) + t
    if qos:
        h += struct.pack("!H", pid)
    return h


def puback_packet(pid):
    return struct.pack("!BBH", _PUBACK, 2, pid)


def subscribe_packet(pid, topic, qos=1):
    body = struct.pack("!H", pid) + _str(topic) + bytes((qos,))
    return bytes((_SUBSCRIBE,)) + encode_length(len(body)) + body


def parse_publish(first, body):
    """(topic, qos, pid, payload, retain) of a PUBLISH packet's first byte and body."""
    qos = (first >> 1) & 3
    if qos > 1 or len(body) < 2:
        raise MQTTError("bad PUBLISH")
    n = struct.unpack_from("!H", body, 0)[0]
    end = 2 + n
    if end > len(body):
        raise MQTTError("bad PUBLISH topic length")
    topic = bytes(body[2:end]).decode()
    pid = 0
    if qos:
        if end + 2 > len(body):
            raise MQTTError("bad PUBLISH packet id")
        pid = struct.unpack_from("!H", body, end)[0]
        end += 2
    return topic, qos, pid, bytes(body[end:]), bool(first & 1)


def topic_matches(filt, topic):
    """MQTT topic filter match with `+` and `#`."""
    if filt == topic:
        return True
    f = filt.split("/")
    t = topic.split("/")
    for i in range(len(f)):
        if f[i] == "#":
            return True
        if i >= len(t):
            return False
        if f[i] != "+" and f[i] != t[i]:
            return False
    return len(f) == len(t)


# --- client --------------------------------------------------------------------------------

class _Pending:
    __slots__ = ("event", "acked")

    def __init__(self):
        self.event = asyncio.Event()
        self.acked = False


class MQTTClient:
    """One broker connection that keeps itself up. Run `run()` as a task.

    `subscribe(filter, qos, handler)`: `handler(topic, payload, retained)` is called for each
    matching message; it may return an awaitable, which is awaited before the PUBACK.
    `add_connect_hook(fn)`: `fn()` after every successful CONNACK.
    """

    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=30,
                 will=None, clean=True, backoff_min_ms=250, backoff_max_ms=30000,
                 connect_timeout_ms=5000, max_packet=16384 + 512, log=None, ssl=None, server_hostname=None):
        if keepalive < 1:
            raise ValueError("keepalive must be >= 1 s")
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.will = will
        self.clean = clean
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.max_packet = max_packet
        self.ssl = ssl  # an SSLContext (cpos.net.tls.context): TLS, the broker's certificate verified
        self.server_hostname = server_hostname or host  # the name the broker's certificate must carry
        self.refused_packets = 0  # oversized packets read past (and PUBACKed when QoS 1)
        self._skip_pid = 0
        self.log = log or logmod.NULL  # a cpos.log.Log
        self.connected = False
        self.generation = 0  # increments on every successful connect
        self.last_error = None
        self.connects = 0
        self.disconnects = 0
        self.dropped_packets = 0
        self._subs = []
        self._hooks = []
        self._pending = {}
        self._pid = 0
        self._writer = None
        self._reader = None
        self._last_rx = 0
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._stopping = False
        self._rng = (ticks_ms() ^ (len(client_id) * 2654435761)) & 0x7FFFFFFF or 1

    # public API

    def subscribe(self, filt, qos, handler):
        self._subs.append((filt, qos, handler))
        if self.connected:
            self._send(subscribe_packet(self._next_pid(), filt, qos))

    def add_connect_hook(self, fn):
        self._hooks.append(fn)

    async def wait_connected(self, timeout_ms=None):
        if self.connected:
            return True
        if timeout_ms is None:
            await self._up.wait()
            return self.connected
        try:
            await _wait(self._up.wait(), timeout_ms)
        except asyncio.TimeoutError:
            pass
        return self.connected

    async def publish(self, topic, payload, qos=1, retain=False, timeout_ms=10000, wait=True):
        """Send a PUBLISH. QoS 0: True once written. QoS 1: True when the broker's PUBACK
        arrived, False on disconnect or timeout (a timeout drops the connection, so the
        payload buffer is free to reuse either way). Never raises for network trouble.
        `wait=False` sends QoS 1 without waiting for the PUBACK: the only way to publish
        from inside a message handler, which runs in the task that reads PUBACKs."""
        if not self.connected:
            return False
        pid = 0
        p = None
        if qos and not wait:
            pid = self._next_pid()
        elif qos:
            pid = self._next_pid()
            p = _Pending()
            self._pending[pid] = p
        try:
            w = self._writer
            w.write(publish_header(topic, len(payload), qos, retain, pid))
            w.write(payload)
            await w.drain()
        except Exception as e:
            self._pending.pop(pid, None)
            self._fail(e)
            return False
        if p is None:
            return True
        try:
            await _wait(p.event.wait(), timeout_ms)
        except asyncio.TimeoutError:
            self._fail(MQTTError("PUBACK timeout"))
        self._pending.pop(pid, None)
        return p.acked

    async def stop(self):
        """Disconnect cleanly (no last will) and end run()."""
        self._stopping = True
        if self._writer is not None:
            try:
                self._writer.write(DISCONNECT)
                await self._writer.drain()
            except Exception:
                pass
        self._fail(MQTTError("stopped"))

    def abort(self):
        """Drop the connection as a dead link would (no DISCONNECT: the broker sends the
        will); run() reconnects after its backoff."""
        self._fail(MQTTError("aborted"))

    async def run(self):
        """Connect, serve, reconnect with backoff; forever (until stop())."""
        delay = self.backoff_min_ms
        while not self._stopping:
            try:
                await self._connect()
                delay = self.backoff_min_ms
                await self._serve()
            except asyncio.CancelledError:
                self._close()
                raise
            except Exception as e:
                self.last_error = e
                if isinstance(e, RefusedError):
                    self.log.security("mqtt: %s: %s" % (type(e).__name__, e))
                else:
                    self.log.info("mqtt: %s: %s" % (type(e).__name__, e))
            self._close()
            if self._stopping:
                break
            await sleep_ms(self._jitter(delay))
            delay = min(delay * 2, self.backoff_max_ms)

    # internals

    def _jitter(self, delay):
        # xorshift: a delay in [delay/2, delay] so that terminals do not reconnect in step.
        x = self._rng
        x ^= (x << 13) & 0x7FFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0x7FFFFFFF
        self._rng = x or 1
        return delay // 2 + x % (delay // 2 + 1)

    def _next_pid(self):
        while True:
            self._pid = self._pid % 65535 + 1
            if self._pid not in self._pending:
                return self._pid

    def _send(self, data):
        try:
            self._writer.write(data)
        except Exception as e:
            self._fail(e)

    def _fail(self, exc):
        """Mark the connection dead: wake every waiter, let run() reconnect.

        `connected` drops and `_up` clears here, at once, not later in run(): until then
        publish() would keep writing to a dead link without ever awaiting, and a task
        looping on it (the uplink) would spin without yielding and starve the reconnect.
        """
        if exc is not None and self.last_error is None:
            self.last_error = exc
        if self.connected:
            self.connected = False
            self.disconnects += 1
        self._up.clear()
        self._down.set()
        for p in self._pending.values():
            p.event.set()

    def _close(self):
        was = self.connected
        self.connected = False
        self._up.clear()
        w = self._writer
        self._writer = None
        if w is not None:
            _drop(w)
        for p in self._pending.values():
            p.event.set()
        if was:
            self.disconnects += 1

    async def _connect(self):
        self._down = asyncio.Event()
        self.last_error = None
        if self.ssl is not None:
            conn = asyncio.open_connection(self.host, self.port, ssl=self.ssl, server_hostname=self.server_hostname)
        else:
            conn = asyncio.open_connection(self.host, self.port)
        reader, writer = await _wait(conn, self.connect_timeout_ms)
        self._writer = writer
        self._reader = reader
        writer.write(connect_packet(self.client_id, self.user, self.password, self.keepalive,
                                    self.will, self.clean))
        await writer.drain()
        first, body = await _wait(self._read_packet(), self.connect_timeout_ms)
        if first != _CONNACK or len(body) != 2:
            raise MQTTError("expected CONNACK")
        rc = body[1]
        if rc:
            raise RefusedError("connection refused: %s" % (CONNACK_TEXT[rc] if rc < len(CONNACK_TEXT) else rc))
        for filt, qos, _ in self._subs:
            writer.write(subscribe_packet(self._next_pid(), filt, qos))
        await writer.drain()
        self.connected = True
        self.connects += 1
        self.generation += 1
        self._up.set()
        for fn in self._hooks:
            fn()

    async def _serve(self):
        down = self._down
        pinger = asyncio.create_task(self._pinger(down))
        reader = asyncio.create_task(self._reader_loop(down))
        try:
            await down.wait()
        finally:
            pinger.cancel()
            reader.cancel()
        if self.last_error is not None:
            raise self.last_error

    async def _pinger(self, down):
        period = self.keepalive * 500
        try:
            while not down.is_set():
                await sleep_ms(period)
                if down.is_set():
                    return
                if ticks_diff(ticks_ms(), self._last_rx) > self.keepalive * 1500:
                    self._fail(MQTTError("keep-alive timeout"))
                    return
                self._writer.write(PINGREQ)
                await self._writer.drain()
        except asyncio.CancelledError:
            pass
        except Exception as e:
            self._fail(e)

    async def _reader_loop(self, down):
        try:
            while True:
                first, body = await self._read_packet()
                if body is None:  # oversized packet, read past: acknowledged, never handled
                    if self._skip_pid:
                        self._writer.write(puback_packet(self._skip_pid))
                        await self._writer.drain()
                    continue
                kind = first & 0xF0
                if kind == _PUBLISH:
                    await self._on_publish(first, body)
                elif kind == _PUBACK:
                    if len(body) == 2:
                        p = self._pending.get(struct.unpack("!H", body)[0])
                        if p is not None:
                            p.acked = True
                            p.event.set()
                elif kind == _SUBACK:
                    if len(body) >= 3 and body[2] == 0x80:
                        self.log.security("mqtt: subscription refused")
                elif kind == _PINGRESP:
                    pass
                else:
                    raise MQTTError("unexpected packet 0x%02x" % first)
        except asyncio.CancelledError:
            pass
        except Exception as e:
            self._fail(e if not isinstance(e, EOFError) else MQTTError("connection closed"))

    async def _on_publish(self, first, body):
        try:
            topic, qos, pid, payload, retained = parse_publish(first, body)
        except (MQTTError, UnicodeError) as e:
            self.dropped_packets += 1
            self.log.warn("mqtt: dropped malformed PUBLISH: %s" % e)
            return
        for filt, _, handler in self._subs:
            if topic_matches(filt, topic):
                try:
                    r = handler(topic, payload, retained)
                    if r is not None and hasattr(r, "send"):
                        await r
                except Exception as e:  # a handler's bug must not take the link down
                    self.log.error("mqtt: handler error on %s: %s" % (topic, e))
                    if isinstance(e, _Fatal):
                        raise
        if qos:
            self._writer.write(puback_packet(pid))
            await self._writer.drain()

    async def _read_packet(self):
        """(first byte, body) of the next packet; body None when it was too large and skipped."""
        r = self._reader
        hdr = await r.readexactly(1)
        self._last_rx = ticks_ms()
        n = 0
        shift = 0
        while True:
            b = (await r.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("bad remaining length")
        if n > self.max_packet:
            await self._skip(hdr[0], n)
            return hdr[0], None
        body = await r.readexactly(n) if n else b""
        self._last_rx = ticks_ms()
        return hdr[0], body


    async def _skip(self, first, n):
        """Read past a packet larger than `max_packet` in small pieces (never an allocation
        of the sender's size), keeping the link: a QoS 1 PUBLISH is then acknowledged so that
        it does not pin the broker's in-flight window, and is never handled. Logged at S:
        nothing the backend sends is this large (docs/security.md)."""
        r = self._reader
        self._skip_pid = 0
        total = n
        head = True
        while n:
            k = min(n, 256)
            chunk = await r.readexactly(k)
            if head and first & 0xF6 == 0x32 and k >= 2:  # PUBLISH, QoS 1: find its packet id
                t = struct.unpack_from("!H", chunk, 0)[0]
                if t + 4 <= k:
                    self._skip_pid = struct.unpack_from("!H", chunk, 2 + t)[0]
            head = False
            n -= k
        self._last_rx = ticks_ms()
        self.dropped_packets += 1
        self.refused_packets += 1
        self.log.security("mqtt: refused a %d-byte packet (limit %d), link kept" % (total, self.max_packet))


class _Fatal(Exception):
    """Raised by a handler that wants the connection dropped without a PUBACK."""


Fatal = _Fatal


def _drop(w):
    """Close a stream's socket at once, unsent data included. CPython: abort the transport
    (close() would wait to flush to a dead peer). MicroPython: Stream.close() does nothing,
    the socket itself is `w.s`."""
    try:
        tr = getattr(w, "transport", None)
        if tr is not None:
            tr.abort()
            return
        w.close()
        sock = getattr(w, "s", None)
        if sock is not None:
            sock.close()
    except Exception:
        pass


async def _wait(aw, timeout_ms):
    if hasattr(asyncio, "wait_for_ms"):
        return await asyncio.wait_for_ms(aw, timeout_ms)
    return await asyncio.wait_for(aw, timeout_ms / 1000)
