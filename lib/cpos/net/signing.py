"""Downlink messages (backend -> terminal): the envelope, its HMAC-SHA256 tag, its codec.

Owns the byte layout of docs/protocol.md (Part 2, "Downlink"): every message on
`cpos/v1/<site>/<tid>/down/sync` is

    magic 'S' | format 1 | type | 0 | version u32 | arg u32 | index u16 | total u16 |
    body (0..4096 bytes) | tag (32 bytes)

with `tag = HMAC-SHA256(site key, topic + b"\\0" + everything before the tag)`. The topic
is inside the tag, so a message made for one terminal (or site) is refused by every
other terminal that shares the site key. MicroPython has `hashlib.sha256` but no `hmac`
module: `Key` is HMAC (RFC 2104) in a few lines, tags are compared in constant time.
JSON messages (the uplink's `down/ack`) carry the same tag as a last member
(`seal_json`, `open_json`). Runtime-neutral.
"""
import hashlib
import struct

from cpos.compat import const

MAGIC = const(0x53)  # 'S'
FORMAT = const(1)
HEAD = const(16)
TAG = const(32)
MAX_BODY = const(4096)
MAX_MESSAGE = const(4144)  # HEAD + MAX_BODY + TAG

# types
DELTA = const(1)  # body: one card-table delta (cpos.cards.delta); version = the delta's version
CHUNK = const(2)  # body: chunk `index` of `total` of a snapshot image; arg = included_seq
CURRENT = const(3)  # "you are up to date at `version`"; arg = the nonce of the request;
#                    body: none, or the backend's time (u32 UTC s, cpos.timekeeper)
DELTAS = const(4)  # body: consecutive deltas, each after a length byte; version = the last one's
TYPES = const(4)

_FMT = "<BBBBIIHH"
_BLOCK = const(64)


class DownlinkError(ValueError):
    """A message that is not an authentic, well-formed downlink message; `why` says which."""

    @property
    def why(self):
        return self.args[0]


class Key:
    """A per-site key (bytes, 16..64 long) ready to compute HMAC-SHA256 tags."""

    def __init__(self, key):
        if not 16 <= len(key) <= _BLOCK:
            raise ValueError("site key must be 16..64 bytes")
        k = bytearray(_BLOCK)
        k[:len(key)] = key
        self._ipad = bytes(b ^ 0x36 for b in k)
        self._opad = bytes(b ^ 0x5C for b in k)

    def digest(self, data):
        """HMAC-SHA256 of `data` alone (key derivation)."""
        h = hashlib.sha256(self._ipad)
        h.update(data)
        o = hashlib.sha256(self._opad)
        o.update(h.digest())
        return o.digest()

    def tag(self, topic, msg):
        """HMAC-SHA256 over topic + NUL + msg (`msg` any buffer)."""
        if type(topic) is str:
            topic = topic.encode()
        h = hashlib.sha256(self._ipad)
        h.update(topic)
        h.update(b"\0")
        h.update(msg)
        o = hashlib.sha256(self._opad)
        o.update(h.digest())
        return o.digest()


DOWN = "down"  # verifies the backend's downlink messages and acks to one terminal
UP = "up"  # signs one terminal's uplink batches


def derive(master, purpose, tid, generation=0):
    """One terminal's own key (32 bytes) from the site's master secret (docs/security.md):
    HKDF-Expand (RFC 5869, SHA-256, one block) with the master as the pseudorandom key and
    info `cpos/v1 <purpose> <terminal id> <generation>`. The backend derives every
    terminal's keys; a terminal holds only its own, so its keys forge nothing for another.
    `generation` moves on when a terminal's keys are rotated (cpos provision --rotate)."""
    info = "cpos/v1 %s %s %d" % (purpose, tid, generation)
    return Key(master).digest(info.encode() + b"\x01")


def key_from_hex(text):
    """The site key of the configuration: exactly 64 hex digits (32 bytes)."""
    from binascii import unhexlify

    if type(text) is not str or len(text) != 64:
        raise ValueError("site key must be 64 hex digits")
    try:
        return unhexlify(text)
    except ValueError:
        raise ValueError("site key must be 64 hex digits")


def same(a, b):
    """Constant-time equality of two byte strings of equal length."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


_TAGF = b',"tag":"'


def seal_json(key, topic, msg):
    """A JSON downlink message (the uplink's `down/ack`) with its tag as a last member:
    `{...,"tag":"<64 hex>"}`, the tag over topic + NUL + the bytes before `,"tag"`."""
    from binascii import hexlify

    body = bytes(msg[:-1])
    return body + _TAGF + hexlify(key.tag(topic, body)) + b'"}'


def open_json(key, topic, payload):
    """The JSON message without its tag once the tag verifies; DownlinkError otherwise."""
    from binascii import unhexlify

    n = len(payload)
    k = n - 2 - 2 * TAG - len(_TAGF)
    if k < 2 or bytes(payload[k:k + len(_TAGF)]) != _TAGF or bytes(payload[n - 2:]) != b'"}':
        raise DownlinkError("malformed")
    try:
        tag = unhexlify(bytes(payload[k + len(_TAGF):n - 2]))
    except ValueError:
        raise DownlinkError("malformed")
    if not same(key.tag(topic, memoryview(payload)[:k]), tag):
        raise DownlinkError("bad tag")
    return bytes(payload[:k]) + b"}"


def seal_into(key, topic, buf, n):
    """Seal the JSON message in `buf[:n]` in place, like seal_json (the uplink's batch, built
    in a preallocated buffer); returns the new length. `buf` needs 73 bytes of room."""
    from binascii import hexlify

    mv = memoryview(buf)
    t = hexlify(key.tag(topic, mv[:n - 1]))
    k = n - 1
    mv[k:k + len(_TAGF)] = _TAGF
    k += len(_TAGF)
    mv[k:k + len(t)] = t
    k += len(t)
    mv[k:k + 2] = b'"}'
    return k + 2


SEAL_ROOM = const(75)  # bytes seal_into adds: ,"tag":" + 64 hex + "} - the closing }


def encode(key, topic, kind, version, body=b"", arg=0, index=0, total=0):
    """One sealed message (backend side)."""
    if len(body) > MAX_BODY:
        raise ValueError("downlink body too long")
    head = struct.pack(_FMT, MAGIC, FORMAT, kind, 0, version, arg, index, total)
    msg = head + bytes(body)
    return msg + key.tag(topic, msg)


class Message:
    """One verified message. `body` is a memoryview into the received payload (no copy)."""

    def __init__(self):
        self.kind = self.version = self.arg = self.index = self.total = 0
        self.body = b""


def decode(key, topic, payload, into=None):
    """Verify and parse `payload` received on `topic`; a Message, or DownlinkError.

    The tag is checked first: nothing in an unauthenticated message is looked at."""
    n = len(payload)
    if n < HEAD + TAG or n > MAX_MESSAGE:
        raise DownlinkError("malformed")
    mv = memoryview(payload)
    if not same(key.tag(topic, mv[:n - TAG]), mv[n - TAG:]):
        raise DownlinkError("bad tag")
    magic, fmt, kind, zero, version, arg, index, total = struct.unpack_from(_FMT, payload, 0)
    if magic != MAGIC or fmt != FORMAT or zero or kind < 1 or kind > TYPES:
        raise DownlinkError("malformed")
    m = into if into is not None else Message()
    m.kind, m.version, m.arg, m.index, m.total = kind, version, arg, index, total
    m.body = mv[HEAD:n - TAG]
    if kind == CHUNK and (total < 1 or index >= total or not len(m.body)):
        raise DownlinkError("malformed")
    if kind == CURRENT and len(m.body) not in (0, 4):  # 4: the backend's time, u32 UTC s
        raise DownlinkError("malformed")
    if kind == DELTA and not len(m.body):
        raise DownlinkError("malformed")
    return m
