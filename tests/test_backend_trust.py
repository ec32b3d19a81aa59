"""The backend trusts nothing a terminal says (backend.trust; issue 14 point 4).

Ledger level: every record that would book money is checked against the ledger and a
refused one is kept for staff, books nothing, and still lets the watermark move; a batch
cannot move the watermark past what a journal holds. Downlink level: a sync request's
`have` beyond what was sent is refused; one terminal's broken stream never stops another's.
Service level (real mosquitto, the backend process, a stand-in terminal): the same attacks
through the broker, and a flood of sync requests and health reports is rate-limited."""
import asyncio
import json

import pytest

from cpos.net import messages
from fake_journal import make_record
from backend import Ledger
from backend.downlink import Downlink
from backend.ledger import BatchRefused
from backend.trust import RateLimit, RecordChecks
from support.seeded import FAKE_NOW, fake_ledger, fake_uid

SITE = "skole-nord"
KEY = bytes(range(32))


def _good(seq, **kw):
    """An approved purchase by make_record's account 1000 + seq % 5 with its own card."""
    r = dict(make_record(seq), reason=0, topup=False)
    r.update(kw)
    return r


def _books(led):
    return (led.db.execute("SELECT count(*) FROM ledger").fetchone()[0],
            led.db.execute("SELECT id, balance FROM accounts ORDER BY id").fetchall())


# one row per attack of issue 14's table that the ledger must refuse
ATTACKS = [
    ("unknown account", dict(account=4242), "unknown account 4242"),
    ("unknown card", dict(uid="04deadbeef0001"), "unknown card 04deadbeef0001"),
    ("one account's card charging another", dict(account=1003), "belongs to account 1001, not 1003"),
    ("amount 0", dict(amount=0), "amount 0 øre is not positive"),
    ("amount over the cap", dict(amount=100001), "over the cap"),
    ("year 2106", dict(t=0xFFFFFFFF), "outside"),
    ("older than the window", dict(t=FAKE_NOW - 63 * 86400), "outside"),
    ("balance outside the format", dict(balance_after=-1000000001), "outside the format"),
]


@pytest.mark.parametrize("name,change,why", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_a_record_that_fails_a_check_books_nothing_is_kept_and_acknowledged(name, change, why):
    led = fake_ledger()
    before = _books(led)
    bad = _good(1, **change)
    res = led.apply_batch(SITE, "t0001", messages.encode_batch(1, 2, [bad, _good(2)]))
    assert res.watermark == 2 and res.purchases == 1  # the good one is booked, the batch acknowledged
    assert [s for s, _ in res.refused] == [1] and why in res.refused[0][1]
    count, accounts = _books(led)
    assert count == before[0] + 1
    assert led.balance(4242) is None  # no account is created for a record
    assert led.purchase_seqs(1) == [2] and led.received_seqs(1) == [2]
    rows, dropped = led.refused(1)
    assert [(r["seq"], r["record"]) for r in rows] == [(1, bad)] and dropped == {}
    # Resent (the terminal never got the ack): a duplicate, kept once, still not booked.
    again = led.apply_batch(SITE, "t0001", messages.encode_batch(1, 2, [bad, _good(2)]))
    assert again.refused == [] and again.duplicates == 2 and _books(led) == (count, accounts)
    assert len(led.refused(1)[0]) == 1


def test_a_top_up_trigger_for_another_accounts_card_raises_no_trigger():
    led = fake_ledger()
    trig = dict(make_record(7), account=1004)  # seq 7: a refusal carrying the trigger; its card is 1002's
    res = led.apply_batch(SITE, "t0001", messages.encode_batch(7, 7, [trig]))
    assert res.triggers == 0 and led.topup_triggers() == [] and [s for s, _ in res.refused] == [7]
    plain = dict(make_record(8), reason=8, topup=False, account=4242)  # a plain refusal moves no money
    assert led.apply_batch(SITE, "t0001", messages.encode_batch(8, 8, [plain])).refused == []


def test_place_and_kind_must_be_the_terminals_own():
    led = fake_ledger()
    led.add_terminal(1, SITE, 0, 1)  # a vending machine at a school
    res = led.apply_batch(SITE, "t0001", messages.encode_batch(1, 3, [
        _good(1, place=0, kind=1), _good(2, place=1, kind=1), _good(3, place=0, kind=0)]))
    assert led.purchase_seqs(1) == [1]
    assert [(s, w.split(" is")[0]) for s, w in res.refused] == [(2, "place 1"), (3, "kind 0")]


def test_refused_records_are_capped_per_terminal_and_the_rest_counted():
    led = fake_ledger(checks=RecordChecks(keep_refused=3))
    bad = [_good(s, account=4242) for s in range(1, 6)]
    res = led.apply_batch(SITE, "t0001", messages.encode_batch(1, 5, bad))
    assert res.watermark == 5 and len(res.refused) == 5
    rows, dropped = led.refused()
    assert [r["seq"] for r in rows] == [1, 2, 3] and dropped == {1: 2}


def test_a_batch_cannot_move_the_watermark_past_what_a_journal_holds():
    led = fake_ledger()
    led.apply_batch(SITE, "t0001", messages.encode_batch(1, 2, [_good(1), _good(2)]))
    before = _books(led)
    with pytest.raises(BatchRefused, match="more than a journal of 4096 records"):
        led.apply_batch(SITE, "t0001", messages.encode_batch(3, 5000, []))  # an empty-range batch
    with pytest.raises(BatchRefused):
        led.apply_batch(SITE, "t0001", messages.encode_batch(199000, 200006, []))  # above: kept for later, once
    assert led.watermark(1) == 2 and _books(led) == before
    # Within a journal's reach, a range whose records never were written (a crash) is fine.
    assert led.apply_batch(SITE, "t0001", messages.encode_batch(3, 40, [_good(40)])).watermark == 40


def test_rate_limit_allows_a_burst_then_the_rate():
    now = [100.0]
    lim = RateLimit(3, 0.5, lambda: now[0])
    assert [lim.allow("t0001") for _ in range(5)] == [True, True, True, False, False]
    assert lim.allow("t0002")  # another terminal has its own budget
    now[0] += 2.0  # one token back
    assert [lim.allow("t0001") for _ in range(2)] == [True, False]
    assert lim.dropped == {"t0001": 3}


# --- downlink ------------------------------------------------------------------------------

def _dl_world():
    led = Ledger(":memory:", clock=lambda: FAKE_NOW)
    acc = led.add_account("Ada", 10000, account_id=1)
    led.add_card("04a1b2c3d4e5f6", "884263sae", acc)
    for n in (1, 2):
        led.add_terminal(n, SITE, 0, 0)
    logs = []
    dl = Downlink(led, {SITE: KEY}, log=logs.append)
    for n in (1, 2):  # each terminal's first request brings a snapshot
        dl.on_request(SITE, "t%04d" % n, messages.encode_sync(0, 0, True, 5))
    return led, dl, logs


def _versions(dl):
    return dict(dl.db.execute("SELECT terminal, version FROM dl_streams"))


def test_a_have_beyond_what_was_sent_is_refused_and_moves_nothing():
    led, dl, logs = _dl_world()
    before = _versions(dl)
    out = dl.on_request(SITE, "t0001", messages.encode_sync(4294967294, 1, False, 9))
    assert len(out) == 1 and dl.refused == 1  # only `current`, at the version the backend holds
    assert _versions(dl) == before
    assert any("SECURITY: t0001 says it holds v4294967294" in m for m in logs)
    led.set_card_status("884263sae", "blocked")
    sent = dl.pump()
    assert sorted(messages.split_topic(t)[1] for t, _ in sent) == ["t0001", "t0002"]  # both still get the block
    # After a ledger restore, staff adopt the version the terminal reported.
    dl.on_request(SITE, "t0002", messages.encode_sync(before[2] + 50, 1, False, 9))
    assert dl.adopt_version(2) == before[2] + 50
    out = dl.on_request(SITE, "t0002", messages.encode_sync(before[2] + 50, 1, False, 10))
    assert len(out) == 1 and _versions(dl)[2] == before[2] + 50  # current: the stream continues from there
    led.set_card_status("884263sae", "active")
    assert [messages.split_topic(t)[1] for t, _ in dl.pump()] == ["t0001", "t0002"]
    assert _versions(dl)[2] == before[2] + 51
    with pytest.raises(ValueError):
        dl.adopt_version(1)  # 4294967294: no room left


def test_one_terminals_failing_stream_does_not_stop_the_others():
    led, dl, logs = _dl_world()
    real = dl._pump_one

    def broken_for_t1(number, *a):
        if number == 1:
            raise ValueError("bad version")
        return real(number, *a)

    dl._pump_one = broken_for_t1
    led.set_card_status("884263sae", "blocked")
    sent = dl.pump()
    assert [messages.split_topic(t)[1] for t, _ in sent] == ["t0002"]
    assert dl.failed == {1: 1} and any("stream of t0001 failed" in m for m in logs)
    dl._pump_one = real
    assert [messages.split_topic(t)[1] for t, _ in dl.pump()] == ["t0001"]  # t0001's block is still coming


# --- through the broker ----------------------------------------------------------------------

def _flood(broker, tid, messages_):
    """Publish (topic, payload, qos) as terminal `tid` (its own credentials), as fast as it can."""
    from cpos.net.mqtt import MQTTClient

    async def go():
        c = MQTTClient(tid, broker.host, broker.port, tid, broker.users[tid], keepalive=10)
        task = asyncio.create_task(c.run())
        assert await c.wait_connected(5000)
        for topic, payload, qos in messages_:
            await c.publish(topic, payload, qos=qos)
        await c.publish(messages_[-1][0], messages_[-1][1], qos=1)  # the broker has all of it
        await c.stop()
        task.cancel()

    asyncio.run(asyncio.wait_for(go(), 60))


@pytest.fixture
def site(broker, tmp_path):
    from support.downlink_world import Standin, seed, start_backend
    from support.uplink_world import stop

    db = str(tmp_path / "ledger.db")
    led = Ledger(db)
    seed(led, broker.site, terminals=(1, 2))
    be = start_backend(broker, db)
    t2 = Standin("cpython", str(tmp_path), broker, 2)
    yield led, be, t2
    t2.stop()
    stop(be)
    led.close()


def test_through_the_broker_a_forged_have_and_a_flood_harm_no_other_terminal(broker, site):
    from cpos.rules import ACTIVE, BLOCKED
    from support.downlink_world import start_backend
    from support.uplink_world import stop

    led, be, t2 = site
    s = t2.wait(lambda s: s["synced"])
    up = messages.topic(broker.site, "t0001", messages.SYNC_UP)
    health = messages.topic(broker.site, "t0001", messages.HEALTH)
    report = json.dumps({"v": 1, "t": FAKE_NOW, "table_version": 1}).encode()
    # QoS 1 first (the broker queues those for the backend: the budgets must drop them; 200 of
    # each outrun a budget of 6 plus 1/s unless the backend took minutes to read them), then a
    # QoS 0 flood (the broker may drop some of those itself when the backend reads slower).
    _flood(broker, "t0001", [(up, messages.encode_sync(4294967294, 1, False, 7), 1)] +
           [(up, messages.encode_sync(0, 0, True, n), 1) for n in range(1, 200)] + [(health, report, 1)] * 200 +
           [(up, messages.encode_sync(0, 0, True, n), 0) for n in range(200, 400)] + [(health, report, 0)] * 200)
    led.set_card_status("884263sae", "blocked")  # the block reaches the other terminal
    assert t2.wait(lambda s: s["status"] == BLOCKED)["rejected"] == 0
    stop(be)
    err = be.stderr.read()
    assert "SECURITY: t0001 says it holds v4294967294" in err
    assert "t0001 over its sync request budget" in err and "t0001 over its health report budget" in err
    v1 = led.db.execute("SELECT version FROM dl_streams WHERE terminal = 1").fetchone()[0]
    assert v1 < 100  # the forged version was never taken
    be2 = start_backend(broker, led.path)  # and after a restart, the stream still flows
    try:
        led.set_card_status("884263sae", "active")
        assert t2.wait(lambda st: st["status"] == ACTIVE)["rejected"] == 0
    finally:
        stop(be2)
    assert s["version"] < t2.state["version"]
