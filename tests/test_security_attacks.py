"""Issue 14's attack table, row by row, against the real mosquitto with the site's
configuration (TLS listener, client certificates, client id bound to the login, packet
size limit, logging), the reference backend with the site's master secret, and the
terminal's MQTT client on both runtimes. Each attack fails, is logged (broker log,
backend log, the terminal's log) and loses or doubles nothing.

The attacker (tests/support/attacker.py) holds terminal t0001's credentials (its client
certificate, or its derived keys) unless a test says otherwise; t0002 is the victim.
The rows about the backend's own checks (issue 14 point 4) are the last four tests; the
same checks are tested without a broker in tests/test_backend_trust.py.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from cpos.net import messages as protocol
from cpos.net import signing
from backend import Ledger
from support.attacker import Attacker, LinkClosed
from support.downlink_world import KEY, seed, start_backend
from support.uplink_world import stop

SITE = "skole-nord"


@pytest.fixture
def site(tmp_path):
    """The site broker with TLS and the backend (site master KEY) on a seeded ledger."""
    from simulator.broker import Broker

    broker = Broker(str(tmp_path / "broker"), tls=True).start()
    db = str(tmp_path / "ledger.db")
    led = Ledger(db)
    acc = seed(led, SITE, terminals=(1, 2))
    be = start_backend(broker, db)
    yield broker, led, acc, be
    stop(be)
    led.close()
    broker.stop()


def backend_log(be):
    """Stop the backend and return what it logged (stderr)."""
    stop(be)
    return be.stderr.read()


def broker_log(broker):
    time.sleep(0.2)  # mosquitto writes its log line after answering
    return open(broker.log).read()


def record(seq, amount, tid_no=2, account=1):
    # Made a few minutes ago: the backend books no record far from its own clock (backend.trust).
    return {"seq": seq, "t": int(time.time()) - 600 + seq, "account": account, "amount": amount, "place": 0, "kind": 0,
            "terminal": tid_no, "balance_after": 10000 - amount, "reason": 0, "uid": "04a1b2c3d4e5f6",
            "item": "1x Frokost", "topup": False}


def signed_batch(tid, lo, hi, recs, master=KEY, generation=0):
    topic = protocol.topic(SITE, tid, protocol.BATCH)
    key = signing.Key(signing.derive(master, signing.UP, tid, generation))
    return topic, signing.seal_json(key, topic.encode(), protocol.encode_batch(lo, hi, recs))


def wait_for(pred, timeout=15):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not reached")


# --- row 1: another terminal's or the backend's client id --------------------------------------

def test_client_id_of_the_backend_or_another_terminal_takes_over_nothing(site):
    broker, led, acc, be = site
    victim = Attacker(broker.host, broker.port, "whatever", "injector", broker.users["injector"])  # a listener
    assert victim.rc == 0 and victim.subscribe(protocol.ROOT + "+/+/up/#") == 1
    for cid in ("cpos-backend", "backend", "t0002", "injector"):
        a = Attacker.for_terminal(broker, "t0001", client_id=cid)
        assert a.rc == 0
        a.close()
    # The victim's session survived every attempt: it still receives, on the same connection.
    tid = "t0002"
    v2 = Attacker.for_terminal(broker, tid)
    v2.publish(protocol.topic(SITE, tid, protocol.HEALTH), b'{"v":1}', qos=0)
    got = victim.messages(1.0)
    assert (protocol.topic(SITE, tid, protocol.HEALTH), b'{"v":1}') in got
    log = broker_log(broker)
    # every attempt logged as the login it was, the client id replaced by it
    assert log.count("as t0001 (p2, c1, k30, u't0001')") == 4, log[-3000:]
    assert "as backend" in log and "as injector" in log  # the real ones, from their own logins only
    # and the real backend keeps working: a genuine signed batch of t0002 is booked
    t, p = signed_batch("t0002", 1, 1, [record(1, 500)])
    assert v2.publish(t, p)
    wait_for(lambda: led.purchase_seqs(2) == [1])


# --- row 3: publishing the victim's next seqs first --------------------------------------------

def test_publishing_into_another_terminals_uplink_is_denied_and_logged_and_its_sale_books(site):
    broker, led, acc, be = site
    a = Attacker.for_terminal(broker, "t0001")
    t, p = signed_batch("t0002", 1, 3, [record(s, 1) for s in (1, 2, 3)])  # 0.01 kr "sales" under t0002's seqs
    a.publish(t, p)  # PUBACKed (MQTT 3.1.1 cannot say no) but dropped
    # Its own credentials without its uplink key (broker login alone): not booked either.
    own = protocol.topic(SITE, "t0001", protocol.BATCH)
    a.publish(own, protocol.encode_batch(1, 1, [record(1, 1, tid_no=1)]))
    wrong = signing.seal_json(signing.Key(b"\x07" * 32), own.encode(), protocol.encode_batch(2, 2, [record(2, 1, 1)]))
    a.publish(own, wrong)
    # The victim's real 40 kr sale lands, booked once.
    v = Attacker.for_terminal(broker, "t0002")
    t, p = signed_batch("t0002", 1, 1, [record(1, 4000)])
    v.publish(t, p)
    wait_for(lambda: led.purchase_seqs(2) == [1])
    assert led.db.execute("SELECT amount FROM ledger WHERE terminal = 2").fetchall() == [(4000,)]
    assert led.purchase_seqs(1) == [] and led.conflicts() == []
    assert "Denied PUBLISH from t0001 (d0, q1, r0, m1, 'cpos/v1/skole-nord/t0002/up/batch'" in broker_log(broker)
    log = backend_log(be)
    assert log.count("SECURITY: refused batch on cpos/v1/skole-nord/t0001/up/batch: uplink signature") == 2, log
    assert led.db.execute("SELECT count(*) FROM rejected WHERE tid = 't0001'").fetchone()[0] == 2


# --- row 6: 22 QoS 1 messages of 18 KB ---------------------------------------------------------

def test_oversized_publishes_are_refused_by_the_broker_and_uploads_go_on(site):
    broker, led, acc, be = site
    own = protocol.topic(SITE, "t0001", protocol.BATCH)
    refused = 0
    for _ in range(22):
        a = Attacker.for_terminal(broker, "t0001")
        try:
            a.publish(own, b"x" * (18 * 1024))
        except LinkClosed:
            refused += 1
    assert refused == 22  # the broker cut each one off; nothing reached the backend
    v = Attacker.for_terminal(broker, "t0002")
    for seq in range(1, 4):
        t, p = signed_batch("t0002", seq, seq, [record(seq, 500)])
        assert v.publish(t, p)
    wait_for(lambda: led.purchase_seqs(2) == [1, 2, 3])
    assert broker_log(broker).count("Client t0001 disconnected due to oversize packet.") == 22
    # The largest real batch still passes the limit.
    from backend import broker_conf

    assert broker_conf.MAX_PACKET >= protocol.MAX_PAYLOAD + len(own) + 9


# --- row 8: a 16 KB downlink message ------------------------------------------------------------

@pytest.mark.parametrize("runtime", ("micropython", "cpython"))
def test_a_16_kb_downlink_message_is_refused_and_the_link_kept(runtime, tmp_path):
    from simulator.broker import Broker
    from test_security_tls import probe

    broker = Broker(str(tmp_path / "broker"), tls=True).start()
    try:
        inj = Attacker(broker.host, broker.port, "inj", "injector", broker.users["injector"])
        down = protocol.topic(SITE, "t0001", protocol.SYNC_DOWN)

        def attack():
            inj.publish(down, b"\x53" * (16 * 1024))  # as someone with the backend's rights would
            inj.publish(down, b"small")

        r = probe(runtime, broker, broker.terminal_tls("t0001"), tmp_path, during=attack)
        assert r["refused"] == 1 and r["got"] == [5], r  # refused, then the next message arrived
        assert r["still_up"] is True and r["generation"] == 1, r  # the same link, never dropped
        assert any(l.startswith("S mqtt: refused a 16") for l in r["log"]), r
        # acknowledged: the broker holds nothing for the terminal (no redelivery pinning its window)
        log = broker_log(broker)
        assert "Received PUBACK from t0001" in log
    finally:
        broker.stop()


# --- row 10: a key copied from one terminal's config.json ----------------------------------------

def test_one_terminals_keys_forge_nothing_for_another(site):
    broker, led, acc, be = site
    from cpos.cards import delta as carddelta

    stolen_down = signing.derive(KEY, signing.DOWN, "t0001", 0)  # all that t0001's config.json holds
    victim = "t0002"
    topic = protocol.topic(SITE, victim, protocol.SYNC_DOWN)
    block = carddelta.encode(1, 0, carddelta.BLOCK, uid=bytes.fromhex("04a1b2c3d4e5f6"))
    forged = signing.encode(signing.Key(stolen_down), topic.encode(), signing.DELTA, 1, block)
    with pytest.raises(signing.DownlinkError) as e:
        signing.decode(signing.Key(signing.derive(KEY, signing.DOWN, victim, 0)), topic.encode(), forged)
    assert e.value.why == "bad tag"
    # and the terminal's login cannot even publish there: its ACL is up/ only (denied and logged)
    a = Attacker.for_terminal(broker, "t0001")
    a.publish(topic, forged)
    assert "Denied PUBLISH from t0001 (d0, q1, r0, m1, '%s'" % topic in broker_log(broker)
    # its stolen uplink key books nothing for the victim either
    t, p = signed_batch(victim, 1, 1, [record(1, 1)])
    body = protocol.encode_batch(1, 1, [record(1, 1)])
    forged_up = signing.seal_json(signing.Key(signing.derive(KEY, signing.UP, "t0001", 0)), t.encode(), body)
    inj = Attacker(broker.host, broker.port, "inj", "injector", broker.users["injector"])
    v = Attacker.for_terminal(broker, victim)
    v.publish(t, forged_up)  # as if sent by a rogue device holding the victim's broker login too
    time.sleep(0.5)
    assert led.purchase_seqs(2) == []
    assert "SECURITY: refused batch on %s: uplink signature: bad tag" % t in backend_log(be)
    inj.close()


# --- row 11: sniffing the school Wi-Fi ---------------------------------------------------------

def test_off_loopback_the_broker_speaks_only_tls_and_the_wire_shows_no_secret(site, tmp_path):
    broker, led, acc, be = site
    conf = open(broker.conf).read()
    listeners = [l for l in conf.splitlines() if l.startswith("listener ")]
    assert listeners == ["listener %d 127.0.0.1" % broker.port, "listener %d 127.0.0.1" % broker.tls_port]
    from backend import broker_conf

    real = broker_conf.conf(1883, "/l", "/p", "/a", tls_port=8883, cafile="/c", certfile="/b", keyfile="/k")
    assert [l for l in real.splitlines() if l.startswith("listener ")] == ["listener 1883 127.0.0.1",
                                                                          "listener 8883 0.0.0.0"]
    # plain MQTT on the TLS port gets nowhere
    with pytest.raises(Exception):
        Attacker(broker.host, broker.tls_port, "t0001", "t0001", broker.users["t0001"], timeout=3)
    # what a sniffer sees of a terminal's session: a relay records every byte both ways
    wire = _relay_capture(broker, tmp_path)
    assert len(wire) > 500
    # (TLS 1.2 shows the certificates: the site's and the terminal's names, no secret)
    for clear in (b"cpos/v1", b"t0001/", b'"recs"', b"secret purchase"):
        assert clear not in wire, clear


def _relay_capture(broker, tmp_path):
    import socket
    import threading

    from test_security_tls import probe

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    seen = []

    def pump(src, dst):
        try:
            while True:
                b = src.recv(4096)
                if not b:
                    break
                seen.append(b)
                dst.sendall(b)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def serve():
        c, _ = lsock.accept()
        u = socket.create_connection((broker.host, broker.tls_port))
        threading.Thread(target=pump, args=(c, u), daemon=True).start()
        pump(u, c)

    threading.Thread(target=serve, daemon=True).start()
    inj = Attacker(broker.host, broker.port, "inj", "injector", broker.users["injector"])
    down = protocol.topic(SITE, "t0001", protocol.SYNC_DOWN)
    r = probe("micropython", broker, broker.terminal_tls("t0001"), tmp_path, port=lsock.getsockname()[1],
              during=lambda: inj.publish(down, b'{"recs": "secret purchase"}'))
    assert r["up"] and r["got"] == [27], r
    lsock.close()
    return b"".join(seen)


# --- row 12: ACL-denied publish and subscribe --------------------------------------------------

def test_denied_publish_and_subscribe_are_logged_and_deliver_nothing(site):
    broker, led, acc, be = site
    a = Attacker.for_terminal(broker, "t0001")
    a.subscribe("#")
    a.subscribe(protocol.ROOT + SITE + "/t0002/down/#")
    a.publish(protocol.topic(SITE, "t0002", protocol.STATUS), b'{"v":1,"online":false,"t":0}')
    inj = Attacker(broker.host, broker.port, "inj", "injector", broker.users["injector"])
    inj.publish(protocol.topic(SITE, "t0002", protocol.ACK), b"victim's ack")
    assert a.messages(1.0) == []
    log = broker_log(broker)
    assert "t0001 1 #" in log and "t0001 1 cpos/v1/skole-nord/t0002/down/#" in log  # subscriptions logged
    assert "Denied PUBLISH from t0001" in log and "cpos/v1/skole-nord/t0002/up/status" in log


# --- point 4 rows: the backend trusts nothing a terminal says (backend.trust) -----------------

def _sync_request(a, tid, have, nonce, qos=1):
    a.publish(protocol.topic(SITE, tid, protocol.SYNC_UP), protocol.encode_sync(have, 1 if have else 0, have == 0,
                                                                                nonce), qos=qos)


def _stream(led, number):
    row = led.db.execute("SELECT version FROM dl_streams WHERE terminal = ?", (number,)).fetchone()
    return row[0] if row else None


def test_sync_request_with_have_4294967294_harms_no_other_terminal(site):
    broker, led, acc, be = site
    victim = Attacker.for_terminal(broker, "t0002")
    _sync_request(victim, "t0002", 0, 11)  # the victim's stream starts (a snapshot)
    wait_for(lambda: _stream(led, 2))
    a = Attacker.for_terminal(broker, "t0001")
    _sync_request(a, "t0001", 0, 12)
    wait_for(lambda: _stream(led, 1))
    _sync_request(a, "t0001", 4294967294, 13)
    wait_for(lambda: led.db.execute("SELECT reported FROM dl_streams WHERE terminal = 1").fetchone()[0] == 4294967294)
    before = _stream(led, 2)
    led.set_card_status("884263sae", "blocked")  # the block still reaches the other terminal ...
    wait_for(lambda: _stream(led, 2) > before)
    assert _stream(led, 1) < 100  # ... and the forged version was never taken
    log = backend_log(be)
    assert "downlink: SECURITY: t0001 says it holds v4294967294" in log, log
    be2 = start_backend(broker, led.path)  # after a restart too
    try:
        at = _stream(led, 2)
        led.set_card_status("884263sae", "active")
        wait_for(lambda: _stream(led, 2) > at)
    finally:
        stop(be2)


def test_an_empty_range_batch_cannot_jump_the_watermark(site):
    broker, led, acc, be = site
    a = Attacker.for_terminal(broker, "t0001")
    a.publish(*signed_batch("t0001", 1, 2, [record(s, 100, tid_no=1, account=acc) for s in (1, 2)]))
    wait_for(lambda: led.watermark(1) == 2)
    a.publish(*signed_batch("t0001", 3, 200006, []))  # signed with the attacker's own key: authentic
    wait_for(lambda: led.db.execute("SELECT count(*) FROM rejected WHERE tid = 't0001'").fetchone()[0] == 1)
    assert led.watermark(1) == 2
    log = backend_log(be)
    assert "SECURITY: rejected batch from t0001: batch" in log, log


def test_well_formed_but_false_records_are_refused_and_kept_for_staff(site):
    broker, led, acc, be = site
    other = led.add_account("Bo", 5000)
    led.add_card("0411223344", "BO1", other)
    now = int(time.time())
    good = dict(record(5, 4000, tid_no=1, account=acc), t=now)
    false = [dict(record(1, 100, tid_no=1, account=424242), t=now),  # an account that does not exist
             dict(record(2, 100, tid_no=1, account=other), t=now),  # one account's card charging another
             dict(record(3, 0, tid_no=1, account=acc), t=now),  # nothing
             dict(record(4, 100, tid_no=1, account=acc), t=0xFFFFFFFF)]  # the year 2106
    before = {a: led.balance(a) for a in (acc, other)}
    a = Attacker.for_terminal(broker, "t0001")
    a.publish(*signed_batch("t0001", 1, 5, false + [good]))
    wait_for(lambda: led.watermark(1) == 5)  # acknowledged: the terminal cannot send them better
    assert led.purchase_seqs(1) == [5] and led.balance(424242) is None
    assert led.balance(acc) == before[acc] - 4000 and led.balance(other) == before[other]
    rows, _ = led.refused(1)
    assert [(r["seq"], r["why"].split(" ")[0]) for r in rows] == [(1, "unknown"), (2, "card"), (3, "amount"),
                                                                 (4, "time")]
    log = backend_log(be)
    assert "SECURITY: t0001: 4 record(s) refused, kept for staff, not booked" in log, log


def test_a_flood_of_sync_requests_or_health_reports_does_not_delay_other_terminals(site):
    """The budgets, through the real broker (the latency with and without a flood is
    bench/bench_backend_flood.py's, not asserted on a shared machine's clock)."""
    broker, led, acc, be = site
    a = Attacker.for_terminal(broker, "t0001")
    health = protocol.topic(SITE, "t0001", protocol.HEALTH)
    for n in range(1, 201):
        _sync_request(a, "t0001", 0, n)
        a.publish(health, b'{"v":1,"t":1764068400,"table_version":1}')
    v = Attacker.for_terminal(broker, "t0002")
    v.publish(*signed_batch("t0002", 1, 1, [record(1, 4000, account=acc)]))
    wait_for(lambda: led.purchase_seqs(2) == [1])  # the other terminal's sale is booked
    log = backend_log(be)
    assert "t0001 over its sync request budget" in log and "t0001 over its health report budget" in log, log
