"""The uplink wire protocol (docs/protocol.md): topic names, payload shapes and limits.

Owns what both ends must agree on: `cpos/v1/<site>/<terminal id>/{up,down}/...` topics,
the terminal id derived from the terminal number, the batch and acknowledgement
payloads (JSON, UTF-8, message version `v`), and their limits. No I/O here; the device
engine (cpos.net.uplink) and the reference backend (backend) both import it.
"""
import json

from cpos import reasons
from cpos.compat import const

VERSION = const(1)

# Limits (docs/protocol.md "Batch limits").
MAX_BATCH_RECORDS = const(100)  # records in one batch message
MAX_PAYLOAD = const(16384)  # bytes of one batch message (JSON)
RECOMMENDED_BATCH = const(50)  # measured in bench/bench_uplink.py
MAX_SPAN = const(100000)  # hi - lo of one batch (seq gaps included)
MAX_ITEM = const(64)  # characters of item text in a record
REVERSAL_CAUSES = ("vend_failure", "void")  # a reversal record's `cause` (cpos.purchase.CAUSES)

ROOT = "cpos/v1/"

class ProtocolError(ValueError):
    """A message that does not follow the protocol; it changes nothing."""


def terminal_id(number):
    """`t0001` for terminal number 1: the MQTT username and topic level of a terminal."""
    if not isinstance(number, int) or number < 0 or number > 0xFFFFFFFF:
        raise ProtocolError("bad terminal number")
    return "t%04d" % number


def terminal_number(tid):
    """Inverse of terminal_id; ProtocolError for anything else (e.g. `t01`, `x0001`)."""
    if not isinstance(tid, str) or len(tid) < 5 or tid[0] != "t" or not tid[1:].isdigit():
        raise ProtocolError("bad terminal id")
    n = int(tid[1:])
    if terminal_id(n) != tid:
        raise ProtocolError("bad terminal id")
    return n


def valid_site(site):
    """A site is 1..32 characters of a-z, 0-9 and `-` (it is a topic level)."""
    if not isinstance(site, str) or not 0 < len(site) <= 32:
        return False
    for c in site:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            return False
    return True


def topic(site, tid, leaf):
    """`cpos/v1/<site>/<tid>/<leaf>`, e.g. leaf `up/batch` or `down/ack`."""
    return ROOT + site + "/" + tid + "/" + leaf


BATCH = "up/batch"
STATUS = "up/status"
HEALTH = "up/health"  # terminal -> backend: the health report (QoS 0), card-table version included
ACK = "down/ack"
SYNC_UP = "up/sync"  # terminal -> backend: the card-table version it holds (a sync request)
SYNC_DOWN = "down/sync"  # backend -> terminal: deltas, snapshot chunks, "current" (cpos.net.signing)


def split_topic(t):
    """(site, tid, leaf) of a `cpos/v1/...` topic; ProtocolError otherwise."""
    if not t.startswith(ROOT):
        raise ProtocolError("not a cpos/v1 topic")
    parts = t[len(ROOT):].split("/", 2)
    if len(parts) != 3 or not valid_site(parts[0]):
        raise ProtocolError("bad topic")
    terminal_number(parts[1])
    return parts[0], parts[1], parts[2]


# --- payloads -----------------------------------------------------------------------------

def batch_head():
    return b'{"v":1,"recs":['


def batch_tail(lo, hi):
    return ('],"lo":%d,"hi":%d}' % (lo, hi)).encode()


def encode_batch(lo, hi, records):
    """A whole batch message from record dicts (host side and tests; the device engine
    streams the same bytes into a preallocated buffer)."""
    parts = [batch_head()]
    for i, r in enumerate(records):
        if i:
            parts.append(b",")
        parts.append(json.dumps(r).encode())
    parts.append(batch_tail(lo, hi))
    return b"".join(parts)


def encode_ack(watermark, t):
    return ('{"v":1,"w":%d,"t":%d}' % (watermark, t)).encode()


def decode_ack(payload):
    """The watermark of an ack message; ProtocolError when malformed or of another version."""
    m = _message(payload, "ack")
    w = m.get("w")
    if not isinstance(w, int) or isinstance(w, bool) or w < 0:
        raise ProtocolError("ack watermark")
    return w


def encode_status(online, t):
    return ('{"v":1,"online":%s,"t":%d}' % ("true" if online else "false", t)).encode()


def _message(payload, what):
    """The JSON object of a message of this protocol version; ProtocolError otherwise."""
    try:
        m = json.loads(payload)
    except Exception:
        raise ProtocolError("%s is not JSON" % what)
    if not isinstance(m, dict) or m.get("v") != VERSION:
        raise ProtocolError("%s version" % what)
    return m


def decode_status(payload):
    m = _message(payload, "status")
    if not isinstance(m.get("online"), bool):
        raise ProtocolError("bad status")
    return m


def encode_health(h, t):
    """A health report: the app's figures (a dict of JSON values, `table_version` among
    them) with the protocol version and the time (UTC s). Adds "v" and "t" to `h`."""
    h["v"] = VERSION
    h["t"] = t
    return json.dumps(h).encode()


def decode_health(payload):
    """The health report as a dict; ProtocolError unless it says which table version it holds."""
    m = _message(payload, "health report")
    _int(m, "table_version", 0, 0xFFFFFFFF)
    _int(m, "t", 0, 0xFFFFFFFF)
    return m


def encode_sync(have, state, resync, nonce):
    """A sync request: the table version held, its state (0 empty, 1 ok, 2 broken), whether
    the terminal needs a snapshot, and a nonce the backend's `current` reply must echo."""
    return ('{"v":1,"have":%d,"state":%d,"resync":%s,"n":%d}' % (
        have, state, "true" if resync else "false", nonce)).encode()


def decode_sync(payload):
    """(have, state, resync, nonce) of a sync request; ProtocolError when malformed."""
    m = _message(payload, "sync request")
    if not isinstance(m.get("resync"), bool):
        raise ProtocolError("bad sync request")
    return _int(m, "have", 0, 0xFFFFFFFF), _int(m, "state", 0, 2), m["resync"], _int(m, "n", 1, 0xFFFFFFFF)


def _int(r, k, lo, hi):
    v = r.get(k)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > hi:
        raise ProtocolError("record field %s" % k)
    return v


def check_record(r):
    """Validate one record dict in place of trusting it; returns it."""
    if not isinstance(r, dict):
        raise ProtocolError("record is not an object")
    _int(r, "seq", 1, 0xFFFFFFFF)
    _int(r, "t", 0, 0xFFFFFFFF)
    _int(r, "account", 0, 0xFFFFFFFF)
    _int(r, "amount", 0, 0x7FFFFFFF)
    _int(r, "place", 0, 1)
    _int(r, "kind", 0, 1)
    _int(r, "terminal", 0, 0xFFFFFFFF)
    _int(r, "balance_after", -0x80000000, 0x7FFFFFFF)
    _int(r, "reason", 0, 255)
    uid = r.get("uid")
    if not isinstance(uid, str) or len(uid) not in (8, 14, 20):
        raise ProtocolError("record field uid")
    try:
        int(uid, 16)
    except ValueError:
        raise ProtocolError("record field uid")
    item = r.get("item")
    if not isinstance(item, str) or len(item) > MAX_ITEM:
        raise ProtocolError("record field item")
    if not isinstance(r.get("topup"), bool):
        raise ProtocolError("record field topup")
    if "reverses" in r or r["reason"] == reasons.REVERSED:  # a reversal (docs/protocol.md)
        _int(r, "reverses", 1, r["seq"] - 1)
        _int(r, "orig_t", 0, 0xFFFFFFFF)
        if r.get("cause") not in REVERSAL_CAUSES or r["reason"] != reasons.REVERSED or r["topup"]:
            raise ProtocolError("reversal record")
    if "time_unknown" in r and r["time_unknown"] is not True:  # present only on a flagged record
        raise ProtocolError("record field time_unknown")
    return r


def decode_batch(payload):
    """(lo, hi, records) of a batch message, every record checked; ProtocolError otherwise.

    A batch covers every journal record with lo <= seq <= hi: seqs in that range that are
    not in `recs` were never written (the journal skips numbers only across a crash).
    """
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("batch too large")
    m = _message(payload, "batch")
    lo = _int(m, "lo", 1, 0xFFFFFFFF)
    hi = _int(m, "hi", lo, 0xFFFFFFFF)
    if hi - lo > MAX_SPAN:
        raise ProtocolError("batch span")
    recs = m.get("recs")
    if not isinstance(recs, list) or len(recs) > MAX_BATCH_RECORDS:
        raise ProtocolError("batch records")
    prev = lo - 1
    for r in recs:
        check_record(r)
        if r["seq"] <= prev or r["seq"] > hi:
            raise ProtocolError("record seq outside batch or not increasing")
        prev = r["seq"]
    return lo, hi, recs
