"""The downlink end to end through a real mosquitto: the backend process with a site key, and
the stand-in sync terminal (cpos.net.sync + cpos.net.mqtt, tests/device/standin_sync.py) on the
MicroPython unix port under the heap cap and on CPython.

First start gets a snapshot in chunks; a block reaches the terminal; every malformed,
tampered, forged, replayed, out-of-order or misaddressed message injected into the
terminal's downlink changes nothing and is logged; an offline terminal applies what it
missed at reconnect before its next approval."""
import os

import pytest

from cpos import reasons
from cpos.cards import delta as carddelta
from cpos.net import signing
from cpos.net import messages as protocol
from cpos.rules import ACTIVE, BLOCKED, REPLACED
from backend import Ledger
from backend.portal import Portal
from support.downlink_world import KEY, Link, Standin, UID, publish_raw, seed, start_backend, terminal_down_key
from support.uplink_world import stop

RUNTIMES = ("micropython", "cpython")


@pytest.fixture
def world(broker, tmp_path):
    db = str(tmp_path / "ledger.db")
    led = Ledger(db)
    acc = seed(led, broker.site)
    be = start_backend(broker, db)
    made = []

    def terminal(runtime, n=1, port=None):
        t = Standin(runtime, str(tmp_path), broker, n, port=port)
        made.append(t)
        return t
    yield led, acc, be, terminal
    for t in made:
        t.stop()
    stop(be)
    led.close()


def _sent(led, version, terminal=1):
    return led.db.execute("SELECT payload FROM dl_sent WHERE terminal = ? AND version = ?",
                          (terminal, version)).fetchone()[0]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_first_start_snapshot_then_block_and_unblock(world, runtime):
    led, acc, be, terminal = world
    t = terminal(runtime)
    s = t.wait(lambda s: s["synced"])
    assert s["snapshots"] == 1 and s["version"] >= 1 and s["found"] == 0
    assert (s["status"], s["balance"]) == (ACTIVE, 10000)
    # What it holds, as it reported in its sync requests (the first said: empty, version 0).
    assert led.db.execute("SELECT reported, reported_state FROM dl_streams WHERE terminal = 1").fetchone() == (0, 0)
    led.set_card_status("884263sae", "blocked")
    s2 = t.wait(lambda s: s["status"] == BLOCKED)
    assert s2["version"] == s["version"] + 1
    led.deposit(acc, 2500)
    led.set_card_status("884263sae", "active")
    s3 = t.wait(lambda s: s["status"] == ACTIVE and s["balance"] == 12500)
    assert s3["version"] == s["version"] + 3 and s3["rejected"] == 0
    # A new card ordered in the portal: the watched one is replaced (a REPLACE delta).
    Portal(led).order_card("884263sae", "04112233445566", "NY4711")
    s4 = t.wait(lambda s: s["status"] == REPLACED)
    assert s4["version"] == s3["version"] + 1 and s4["snapshots"] == 1 and s4["rejected"] == 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bad_messages_through_the_broker_change_nothing_and_are_logged(world, broker, runtime):
    led, acc, be, terminal = world
    t = terminal(runtime)
    t.wait(lambda s: s["synced"])
    led.set_card_status("884263sae", "blocked")
    s0 = t.wait(lambda s: s["status"] == BLOCKED)
    v = s0["version"]
    topic = protocol.topic(broker.site, "t0001", protocol.SYNC_DOWN)
    key = signing.Key(terminal_down_key(KEY, 1))  # what t0001 holds; the site's master is not on it
    genuine = _sent(led, v)  # the block, exactly as the backend sent it
    unblock = carddelta.encode(v + 1, 0, carddelta.UNBLOCK, uid=bytes.fromhex(UID))
    tampered = bytearray(signing.encode(key, topic, signing.DELTA, v + 1, unblock))
    tampered[20] ^= 0x01  # flip a bit of the delta: still well formed, tag wrong
    other = protocol.topic(broker.site, "t0002", protocol.SYNC_DOWN)
    cases = [
        ("malformed", b"\x53\x01garbage"),
        ("bad tag", bytes(tampered)),
        ("bad tag", signing.encode(signing.Key(b"\x01" * 32), topic, signing.DELTA, v + 1, unblock)),  # no key
        ("bad tag", signing.encode(key, other, signing.DELTA, v + 1, unblock)),  # made for terminal 2
        ("replayed", genuine),
        ("out of order", signing.encode(key, topic, signing.DELTA, v + 2,
                                          carddelta.encode(v + 2, 0, carddelta.UNBLOCK, uid=bytes.fromhex(UID)))),
        ("replayed", signing.encode(key, topic, signing.CURRENT, v + 5, arg=7)),  # answers no request
    ]
    for why, payload in cases:
        n = t.state["rejected"]
        publish_raw(broker, topic, payload)
        s = t.wait(lambda s: s["rejected"] == n + 1)
        assert s["why"].get(why), (why, s["why"])
        assert (s["version"], s["included"], s["status"], s["balance"]) == (
            v, s0["included"], BLOCKED, s0["balance"]), why
        assert "S sync: refused message: " + why in t.logs, (why, t.logs)  # at the security level
    # The link still works for genuine messages afterwards.
    led.set_card_status("884263sae", "active")
    s = t.wait(lambda s: s["status"] == ACTIVE)
    assert s["version"] == v + 1


def test_offline_terminal_applies_a_block_at_reconnect_before_its_next_approval(world, broker):
    led, acc, be, terminal = world
    link = Link(broker)
    t = terminal("micropython", port=link.port)
    t.wait(lambda s: s["synced"])
    assert t.tap(500)[0] == reasons.name(reasons.APPROVED)
    link.cut()  # the terminal's network is gone; broker and backend stay up
    t.wait(lambda s: not s["connected"])
    led.set_card_status("884263sae", "blocked")  # the parent blocks the lost card meanwhile
    v = led.db.execute("SELECT version FROM dl_streams WHERE terminal = 1").fetchone()[0]
    import time
    deadline = time.time() + 10
    while led.db.execute("SELECT version FROM dl_streams WHERE terminal = 1").fetchone()[0] == v:
        assert time.time() < deadline, "the backend never sent the block"
        time.sleep(0.02)
    assert t.tap(500)[0] == reasons.name(reasons.APPROVED)  # offline: it cannot know yet
    link.restore()
    t.wait(lambda s: s["connected"], timeout=30)
    reason, waited = t.tap(500)  # the very first tap after the reconnect
    assert reason == reasons.name(reasons.BLOCKED), (reason, t.state, t.logs[-5:])
    assert waited < 1000
    s = t.wait(lambda s: s["synced"])
    assert s["status"] == BLOCKED and s["snapshots"] == 1  # caught up by deltas, no new snapshot
    link.close()


def test_gap_and_reboot_resync_from_the_sent_deltas(world, broker, tmp_path):
    """A terminal that was down misses deltas: on restart it asks with the version it holds
    and gets exactly the missed deltas (same bytes, same tags), not a snapshot."""
    led, acc, be, terminal = world
    t = terminal("micropython")
    s0 = t.wait(lambda s: s["synced"])
    t.kill()
    led.set_card_status("884263sae", "blocked")
    led.deposit(acc, 100)
    led.set_card_status("884263sae", "active")
    led.deposit(acc, 100)
    t.start()
    s = t.wait(lambda s: s["synced"] and s["balance"] == 10200)
    assert s["status"] == ACTIVE and s["snapshots"] == 0 and s["applied"] >= 3
    assert s["version"] >= s0["version"] + 3
    # At restart it reported the version it held before the missed deltas.
    assert led.db.execute("SELECT reported, reported_state FROM dl_streams WHERE terminal = 1").fetchone() == (
        s0["version"], 1)
    assert os.path.getsize(t.flash) == 24 * 4096
