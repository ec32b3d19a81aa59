"""Downlink envelope and sync engine (cpos.net.signing, cpos.net.sync) without a network: HMAC
against RFC 4231, every forged, replayed, out-of-order or malformed message changing
nothing, and a chunked snapshot then deltas reaching the card table. Both runtimes;
MicroPython under the WROOM heap cap. The same cases through a real broker:
tests/test_downlink_broker.py."""
import hashlib
from binascii import unhexlify

from cardtable_model import FLASH
from cpos import log
from cpos.cards import delta as carddelta
from cpos.cards import table as cardtable
from cpos.net import signing as downlink
from cpos.net import messages as protocol
from cpos.cards.table import CardTable
from cpos.rules import ACTIVE, BLOCKED, CardRecord, Spends
from cpos.net.sync import Sync
from downlink_fakes import KEY, SITE, TOPIC, UID, FakeClient, snapshot as _snapshot

UID2 = b"\x04\x11\x22\x33\x44\x55\x66"


def hmac_sha256(key, data):
    """Plain HMAC-SHA256(key, data) as RFC 2104 writes it (MicroPython has no hmac module):
    the reference Key.tag is checked against."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    k = bytes(key) + bytes(64 - len(key))
    h = hashlib.sha256(bytes(b ^ 0x36 for b in k))
    h.update(data)
    o = hashlib.sha256(bytes(b ^ 0x5C for b in k))
    o.update(h.digest())
    return o.digest()


def test_hmac_matches_rfc4231():
    cases = (  # RFC 4231 test cases 1, 2 and 6 (key longer than the block)
        (b"\x0b" * 20, b"Hi There",
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (b"Jefe", b"what do ya want for nothing?",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    )
    for key, data, want in cases:
        assert hmac_sha256(key, data) == unhexlify(want)
    k = downlink.Key(KEY)
    assert k.tag(TOPIC, b"abc") == hmac_sha256(KEY, TOPIC.encode() + b"\0abc")


def test_constant_time_compare_and_key_checks():
    assert downlink.same(b"abc", b"abc") and not downlink.same(b"abc", b"abd")
    assert not downlink.same(b"abc", b"ab")
    for bad in (b"short", b"x" * 65):
        try:
            downlink.Key(bad)
        except ValueError:
            continue
        raise AssertionError("accepted key of %d bytes" % len(bad))
    assert downlink.key_from_hex("ab" * 32) == b"\xab" * 32
    for bad in ("ab" * 31, "zz" * 32, None):
        try:
            downlink.key_from_hex(bad)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % (bad,))


def _why(key, topic, payload):
    try:
        downlink.decode(key, topic, payload)
    except downlink.DownlinkError as e:
        return e.why
    return None


def test_every_byte_is_covered_by_the_tag():
    k = downlink.Key(KEY)
    d = carddelta.encode(7, 3, carddelta.BLOCK, uid=UID)
    msg = downlink.encode(k, TOPIC, downlink.DELTA, 7, d)
    m = downlink.decode(k, TOPIC, msg)
    assert (m.kind, m.version, bytes(m.body)) == (downlink.DELTA, 7, d)
    for i in range(len(msg)):
        bad = bytearray(msg)
        bad[i] ^= 0x01
        assert _why(k, TOPIC, bad) == "bad tag", i
    assert _why(k, protocol.topic(SITE, "t0002", protocol.SYNC_DOWN), msg) == "bad tag"  # another terminal
    assert _why(downlink.Key(b"o" * 32), TOPIC, msg) == "bad tag"  # another site's key
    assert _why(k, TOPIC, msg[:20]) == "malformed"
    assert _why(k, TOPIC, b"") == "malformed"
    # authentic but nonsense: a chunk whose index is not below its total
    assert _why(k, TOPIC, downlink.encode(k, TOPIC, downlink.CHUNK, 1, b"x", 0, 3, 2)) == "malformed"
    assert _why(k, TOPIC, downlink.encode(k, TOPIC, 9, 1, b"x")) == "malformed"




def _world(lg=None):
    FLASH.wipe(1)
    t = CardTable(FLASH)
    c = FakeClient()
    seen = []
    s = Sync(t, c, SITE, "t0001", KEY, on_included=seen.append, clock=lambda: 1764072000, log=lg)
    assert c.filters == [TOPIC] and s.last_contact == 0
    return t, c, s, seen, downlink.Key(KEY)


def _synced(lg=None):
    """_world after the terminal asked and the backend sent its snapshot: version 4, records
    up to 10 included."""
    t, c, s, seen, k = _world(lg)
    s._request()
    for m in _snapshot(k, 4, 10):
        c.handler(TOPIC, m, False)
    return t, c, s, seen, k


def _look(t):
    card, sp = CardRecord(), Spends()
    r = t.lookup(UID, card, sp)
    return r, card.status, card.balance


def _delta(k, version, inc, kind, **kw):
    return downlink.encode(k, TOPIC, downlink.DELTA, version, carddelta.encode(version, inc, kind, **kw))


def test_snapshot_in_chunks_then_deltas_in_order():
    t, c, s, seen, k = _world()
    req = s._request()
    have, state, resync, nonce = protocol.decode_sync(req)
    assert (have, state, resync) == (0, cardtable.EMPTY, True)
    for m in _snapshot(k, 4, 10):
        assert t.state == cardtable.EMPTY  # nothing live until the last chunk
        c.handler(TOPIC, m, False)
    assert (t.state, t.version, t.included_seq) == (cardtable.OK, 4, 10) and seen == [10]
    c.handler(TOPIC, downlink.encode(k, TOPIC, downlink.CURRENT, 4, arg=nonce), False)
    assert s.synced and s.rejected == 0 and s.last_contact == 1764072000
    c.handler(TOPIC, _delta(k, 5, 12, carddelta.BALANCE, account=1, value=9000), False)
    c.handler(TOPIC, _delta(k, 6, 12, carddelta.BLOCK, uid=UID), False)
    assert _look(t) == (cardtable.FOUND, BLOCKED, 9000)
    assert (t.version, t.included_seq, seen, s.applied) == (6, 12, [10, 12], 2)
    assert s.status()["table_version"] == 6
    assert s.status()["last_contact"] == 1764072000  # cpos status shows the table's age from it


def test_forged_replayed_out_of_order_and_malformed_change_nothing_and_log_at_the_security_level():
    lines = []
    t, c, s, seen, k = _synced(log.Log(lines.append))
    d5 = _delta(k, 5, 11, carddelta.BLOCK, uid=UID)
    c.handler(TOPIC, d5, False)
    before = (_look(t), t.version, t.included_seq, list(seen))
    tampered = bytearray(_delta(k, 6, 99, carddelta.UNBLOCK, uid=UID))
    tampered[-40] ^= 4
    forged = downlink.encode(downlink.Key(b"x" * 32), TOPIC, downlink.DELTA, 6,
                             carddelta.encode(6, 99, carddelta.UNBLOCK, uid=UID))
    cases = (
        (b"\x00garbage", "malformed"),
        (bytes(tampered), "bad tag"),
        (forged, "bad tag"),
        (d5, "replayed"),  # the same delta again
        (_delta(k, 7, 99, carddelta.UNBLOCK, uid=UID), "out of order"),  # 6 is missing
        (_snapshot(k, 4, 10)[0], "replayed"),  # the old snapshot's first chunk
        (_snapshot(k, 4, 10)[1], "replayed"),  # and a later one
        (downlink.encode(k, TOPIC, downlink.CURRENT, 5, arg=12345), "replayed"),  # answers no request
        (downlink.encode(k, TOPIC, downlink.DELTA, 6, carddelta.encode(8, 99, carddelta.UNBLOCK, uid=UID)),
         "malformed"),  # envelope and delta disagree on the version
    )
    for payload, why in cases:
        n = s.rejected
        c.handler(TOPIC, payload, False)
        assert s.rejected == n + 1 and s.why.get(why), (why, s.why)
        assert (_look(t), t.version, t.included_seq, seen) == before, why
        assert lines[-1] == "S sync: refused message: " + why, lines[-1]
    assert s._want  # the gap made it ask for a sync


def test_interrupted_snapshot_leaves_the_old_table_and_a_newer_one_wins():
    t, c, s, seen, k = _world()
    for m in _snapshot(k, 4, 10):
        c.handler(TOPIC, m, False)
    a = _snapshot(k, 9, 20, chunk=1024, balance=5)
    for i in range(3):  # the link drops mid-transfer
        c.handler(TOPIC, a[i], False)
    assert (t.version, _look(t)[2]) == (4, 10000)
    c.handler(TOPIC, a[5], False)  # a chunk after a lost one: out of order
    assert s.why.get("out of order") == 1 and t.version == 4
    a = None  # the capped heap holds one snapshot's messages at a time
    b = _snapshot(k, 10, 21, chunk=1024, balance=7)  # the answer to the next request
    for m in b:
        c.handler(TOPIC, m, False)
    assert (t.version, t.included_seq, _look(t)[2]) == (10, 21, 7)
    b = None
    late = _snapshot(k, 9, 20, chunk=1024, balance=5)[3:]  # the same bytes again: signing is deterministic
    for m in late:  # stragglers of the superseded snapshot
        c.handler(TOPIC, m, False)
    assert (t.version, t.included_seq, _look(t)[2]) == (10, 21, 7)



def test_a_redelivered_first_chunk_does_not_restart_the_install():
    t, c, s, seen, k = _world()
    msgs = _snapshot(k, 3, 7, chunk=2048)
    c.handler(TOPIC, msgs[0], False)
    c.handler(TOPIC, msgs[1], False)
    c.handler(TOPIC, msgs[0], False)  # QoS 1 delivers at least once
    for m in msgs[2:]:
        c.handler(TOPIC, m, False)
    assert (t.state, t.version, t.included_seq, s.snapshots) == (cardtable.OK, 3, 7, 1)
    assert s.why == {"replayed": 1}
    have, state, resync, nonce = protocol.decode_sync(s._request())
    assert (have, resync) == (3, False)
    c.handler(TOPIC, downlink.encode(k, TOPIC, downlink.CURRENT, 5, arg=nonce), False)  # it says 5
    assert not s.synced and protocol.decode_sync(s._request())[2]  # so: a snapshot, please


def _deltas(k, first, ds):
    """A DELTAS message: consecutive deltas from version `first`, each after its length."""
    body = bytearray()
    for i, (kind, kw) in enumerate(ds):
        d = carddelta.encode(first + i, 10, kind, **kw)
        body.append(len(d))
        body.extend(d)
    return downlink.encode(k, TOPIC, downlink.DELTAS, first + len(ds) - 1, bytes(body))


def test_several_deltas_in_one_message_apply_in_order_and_an_overlapping_resend_skips_what_is_held():
    lines = []
    t, c, s, seen, k = _synced(log.Log(lines.append))
    three = _deltas(k, 5, [(carddelta.BALANCE, dict(account=1, value=9000)),
                           (carddelta.BLOCK, dict(uid=UID)),
                           (carddelta.BALANCE, dict(account=1, value=8000))])
    c.handler(TOPIC, three, False)
    assert _look(t) == (cardtable.FOUND, BLOCKED, 8000) and (t.version, s.applied, s.rejected) == (7, 3, 0)
    # The backend resends a message the terminal holds part of: the held deltas are skipped.
    c.handler(TOPIC, _deltas(k, 6, [(carddelta.BLOCK, dict(uid=UID)), (carddelta.BALANCE, dict(account=1, value=8000)),
                                    (carddelta.UNBLOCK, dict(uid=UID))]), False)
    assert _look(t) == (cardtable.FOUND, ACTIVE, 8000) and (t.version, s.applied, s.rejected) == (8, 4, 0)
    c.handler(TOPIC, three, False)  # all held: a replay
    assert s.rejected == 1 and s.why.get("replayed") and lines[-1] == "S sync: refused message: replayed"
    good = bytearray(_deltas(k, 9, [(carddelta.BALANCE, dict(account=1, value=1)),
                                    (carddelta.BALANCE, dict(account=1, value=2))]))
    for bad in (downlink.encode(k, TOPIC, downlink.DELTAS, 9, bytes(good[16:-32 - 5])),  # cut inside a delta
                downlink.encode(k, TOPIC, downlink.DELTAS, 9, b"\x05abcde"),  # too short for a delta
                downlink.encode(k, TOPIC, downlink.DELTAS, 9, b""),  # none at all
                downlink.encode(k, TOPIC, downlink.DELTAS, 11, bytes(good[16:-32]))):  # header names another last
        n = s.rejected
        c.handler(TOPIC, bad, False)
        assert s.rejected == n + 1 and s.why.get("malformed") and t.version == 8
    assert _look(t) == (cardtable.FOUND, ACTIVE, 8000)  # a malformed message changes nothing, not even a part
    c.handler(TOPIC, _deltas(k, 10, [(carddelta.BALANCE, dict(account=1, value=5))]), False)
    assert s.why.get("out of order") and s._want and t.version == 8  # 9 is missing: ask for a sync


def test_a_message_of_several_deltas_yields_to_other_tasks_after_each_delta():
    import asyncio

    t, c, s, seen, k = _synced()
    work = s._on_msg(TOPIC, _deltas(k, 5, [(carddelta.BALANCE, dict(account=1, value=9000)),
                                           (carddelta.BALANCE, dict(account=1, value=8000)),
                                           (carddelta.BALANCE, dict(account=1, value=7000))]), False)
    assert work is not None and t.version == 4  # nothing applied before the MQTT client awaits it
    seen_by_a_tap = []

    async def tap():  # what a tap between two deltas would find
        for _ in range(3):
            seen_by_a_tap.append(_look(t)[2])
            await asyncio.sleep_ms(0) if hasattr(asyncio, "sleep_ms") else await asyncio.sleep(0)

    async def both():
        w = asyncio.create_task(work)
        await tap()
        await w
    asyncio.run(both())
    assert seen_by_a_tap == [10000, 9000, 8000] and t.version == 7 and _look(t)[2] == 7000


def test_a_catch_up_jump_inside_a_deltas_message_applies_from_exactly_its_from_version():
    """A catch-up (docs/protocol.md): JUMP from the terminal's version, then deltas, packed in
    one DELTAS message; the framing reads the version at bytes 3..6 of every delta, the JUMP's
    too. A JUMP from another version is out of order: nothing after it applies."""
    lines = []
    t, c, s, seen, k = _world(log.Log(lines.append))
    s._request()
    for m in _snapshot(k, 4, 10):
        c.handler(TOPIC, m, False)
    assert t.version == 4

    def catch_up(frm, to, value):
        body = bytearray()
        for d in (carddelta.encode(to, 10, carddelta.JUMP, value=frm),
                  carddelta.encode(to + 1, 10, carddelta.BLOCK, uid=UID),
                  carddelta.encode(to + 2, 12, carddelta.BALANCE, account=1, value=value)):
            body.append(len(d))
            body.extend(d)
        return downlink.encode(k, TOPIC, downlink.DELTAS, to + 2, bytes(body))
    wrong = catch_up(3, 40, 1)
    c.handler(TOPIC, wrong, False)
    assert s.why.get("out of order") == 1 and s._want and t.version == 4 and _look(t) == (cardtable.FOUND, ACTIVE, 10000)
    right = catch_up(4, 40, 7000)
    c.handler(TOPIC, right, False)
    assert (t.version, t.included_seq, s.applied) == (42, 12, 3) and _look(t) == (cardtable.FOUND, BLOCKED, 7000)
    assert seen[-1] == 12
    c.handler(TOPIC, right, False)  # again, whole: every delta held
    assert s.why.get("replayed") == 1 and t.version == 42
    t2 = CardTable(FLASH)  # a reboot: the jump and what followed replay
    assert (t2.version, t2.included_seq) == (42, 12) and _look(t2) == (cardtable.FOUND, BLOCKED, 7000)
