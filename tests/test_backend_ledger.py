"""The reference ledger alone: exactly-once apply under any duplication and order, the
watermark, refusal of malformed batches, and the statement's shape."""
import json

import pytest
from hypothesis import given, settings, strategies as st

from cpos.net import messages
from fake_journal import make_record
from backend import Ledger, format_statement  # noqa: F401
from support.seeded import fake_ledger

T0 = 1764000000


def batches_of(n, size, gaps=()):
    recs = [make_record(s) for s in range(1, n + 1) if s not in gaps]
    out = []
    lo = 1
    while lo <= n:
        hi = min(n, lo + size - 1)
        out.append(messages.encode_batch(lo, hi, [r for r in recs if lo <= r["seq"] <= hi]))
        lo = hi + 1
    return recs, out


def snapshot(led):
    return (led.received_seqs(1), led.purchase_seqs(1), led.watermark(1),
            led.db.execute("SELECT id, balance FROM accounts ORDER BY id").fetchall(),
            led.db.execute("SELECT count(*) FROM ledger").fetchone()[0], led.topup_triggers())


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_order_and_duplicates_give_the_in_order_result(data):
    n = data.draw(st.integers(1, 120))
    size = data.draw(st.integers(1, 30))
    gaps = set(data.draw(st.lists(st.integers(1, n), max_size=5)))
    recs, batches = batches_of(n, size, gaps)
    ref = fake_ledger()
    for b in batches:
        ref.apply_batch("skole-nord", "t0001", b)
    # Every batch at least once, some several times, in any order.
    seq = batches + data.draw(st.lists(st.sampled_from(batches), max_size=len(batches) * 2))
    seq = data.draw(st.permutations(seq))
    led = fake_ledger()
    watermarks = []
    for b in seq:
        watermarks.append(led.apply_batch("skole-nord", "t0001", b).watermark)
    assert watermarks == sorted(watermarks)  # the ack never goes back
    assert watermarks[-1] == n
    assert snapshot(led) == snapshot(ref)
    assert led.purchase_seqs(1) == [r["seq"] for r in recs if r["reason"] == 0]


def test_watermark_waits_for_the_missing_range():
    recs, b = batches_of(30, 10)
    led = fake_ledger()
    assert led.apply_batch("skole-nord", "t0001", b[2]).watermark == 0
    assert led.apply_batch("skole-nord", "t0001", b[0]).watermark == 10
    assert led.received_seqs(1) == list(range(1, 11)) + list(range(21, 31))  # booked, not yet acked
    assert led.apply_batch("skole-nord", "t0001", b[1]).watermark == 30
    # A batch that starts one past the watermark leaves a hole: the watermark must not jump it.
    led2 = fake_ledger()
    led2.apply_batch("skole-nord", "t0001", messages.encode_batch(1, 10, recs[:10]))
    assert led2.apply_batch("skole-nord", "t0001", messages.encode_batch(12, 20, recs[11:20])).watermark == 10
    assert led2.apply_batch("skole-nord", "t0001", messages.encode_batch(11, 11, recs[10:11])).watermark == 20


BAD = [
    b"", b"not json", b"[]", b'{"v":2,"lo":1,"hi":1,"recs":[]}', b'{"v":1,"lo":0,"hi":1,"recs":[]}',
    b'{"v":1,"lo":5,"hi":4,"recs":[]}', b'{"v":1,"lo":1,"hi":999999999,"recs":[]}',
]


def _with(**kw):
    r = make_record(1)
    r.update(kw)
    return messages.encode_batch(1, 1, [r])


@pytest.mark.parametrize("payload", BAD + [
    _with(amount=-5), _with(amount="5"), _with(uid="zz"), _with(uid="04a1"), _with(seq=2), _with(topup=1),
    _with(reason=True), _with(item="x" * 65), _with(terminal=2), _with(place=2),
    messages.encode_batch(1, 2, [make_record(2), make_record(1)]),
])
def test_malformed_batch_changes_nothing(payload):
    led = fake_ledger()
    led.apply_batch("skole-nord", "t0001", messages.encode_batch(1, 0 + 1, [make_record(1)]))
    before = snapshot(led)
    with pytest.raises(messages.ProtocolError):
        led.apply_batch("skole-nord", "t0001", payload)
    assert snapshot(led) == before


def test_statement_in_the_guides_shape():
    led = Ledger(":memory:", clock=lambda: T0 + 86400)
    acc = led.add_account("Test Barn 1", account_id=1001)
    led.deposit(acc, 10000, t=T0 - 86400, text="1x Online Indbetaling")
    led.add_card("04A1B2C3D4E5F6", "884263sae", acc)
    led.add_card("04A1B2C3D4E5F7", "884263saf", acc, status="replaced")
    r1 = dict(make_record(1), uid="04a1b2c3d4e5f6", account=acc, amount=2000, t=T0, item="1x Toast", reason=0)
    r2 = dict(make_record(2), uid="04a1b2c3d4e5f7", account=acc, amount=500, t=T0 + 60, item="1x Æble", reason=0)
    r3 = dict(make_record(3), uid="04a1b2c3d4e5f6", account=acc, amount=1000, t=T0 + 120, item="1x Juice", reason=0)
    led.apply_batch("skole-nord", "t0001", messages.encode_batch(1, 3, [r1, r2, r3]))
    lines = led.statement("884263sae")
    assert [(ln["type"], ln["amount"], ln["balance"], ln["text"]) for ln in lines] == [
        ("Hævet", 1000, 6500, "1x Juice"),     # newest first; the other card's 5 kr. counts in the balance
        ("Hævet", 2000, 8000, "1x Toast"),
        ("Indsat", 10000, 10000, "1x Online Indbetaling"),
    ]
    assert lines[1]["time"] == "2025-11-24 17:00:00"  # 16:00 UTC in CET
    assert led.balance(acc) == 6500
    text = format_statement("884263sae", lines)
    assert "Hævet" in text and "65.00 kr." in text and "100.00 kr." in text
    with pytest.raises(KeyError):
        led.statement("nope")


def test_schema_holds_cards_limits_places_enrolments():
    led = Ledger(":memory:")
    acc = led.add_account("A")
    led.add_card("04a1b2c3", "728F9661", acc)
    with pytest.raises(Exception):
        led.add_card("04a1b2c4", "728F9661", acc)  # card numbers unique (case-sensitive)
    led.add_card("04a1b2c5", "728f9661", acc)
    led.set_card_status("728F9661", "blocked")
    with pytest.raises(Exception):
        led.set_card_status("728f9661", "lost")
    led.allow_place(acc, 0)
    led.set_limit(acc, 0, 0, 2500)
    led.enrol_topup(acc, 100, "visa-1234")
    led.cancel_enrolment(acc)
    assert led.db.execute("SELECT status FROM cards ORDER BY number").fetchall() == [("blocked",), ("active",)]
    assert led.db.execute("SELECT * FROM limits").fetchall() == [(acc, 0, 0, 2500)]
    assert led.db.execute("SELECT status FROM enrolments").fetchall() == [("cancelled",)]


def test_ack_payload_roundtrip_and_refusals():
    assert messages.decode_ack(messages.encode_ack(42, T0)) == 42
    for bad in (b"", b"{}", b'{"v":1,"w":-1}', b'{"v":1,"w":true}', b'{"v":2,"w":3}', json.dumps([1]).encode()):
        with pytest.raises(messages.ProtocolError):
            messages.decode_ack(bad)


def test_health_report_keeps_the_table_version_and_refuses_malformed(tmp_path):
    led = fake_ledger(str(tmp_path / "l.db"))
    assert led.health(1) is None
    report = messages.decode_health(messages.encode_health({"table_version": 41, "synced": True}, 1764000000))
    led.set_health("t0001", report)
    led.set_health("t0001", messages.decode_health(messages.encode_health({"table_version": 42}, 1764000030)))
    t, version, whole = led.health(1)
    assert (t, version, whole) == (1764000030, 42, {"table_version": 42, "v": 1, "t": 1764000030})
    for bad in (b"{}", b'{"v":1,"t":1}', b'{"v":2,"t":1,"table_version":1}', b'{"v":1,"t":1,"table_version":-1}',
                b"not json"):
        with pytest.raises(messages.ProtocolError):
            messages.decode_health(bad)
    led.close()


# --- a reused (terminal, seq): duplicate only when identical --------------------------

def _money(led):
    return (led.db.execute("SELECT id, balance FROM accounts ORDER BY id").fetchall(),
            led.db.execute("SELECT account, card, t, type, amount, text, terminal, seq FROM ledger ORDER BY id").fetchall(),
            led.topup_triggers())


def test_replayed_identical_batch_is_a_duplicate_not_a_conflict():
    recs, batches = batches_of(20, 10)
    led = fake_ledger()
    for b in batches:
        led.apply_batch("skole-nord", "t0001", b)
    before = (snapshot(led), _money(led))
    # The same records again, one uid in upper case (the ledger keeps uids in lower case).
    again = [dict(r, uid=r["uid"].upper()) if r["seq"] == 3 else r for r in recs[:10]]
    res = led.apply_batch("skole-nord", "t0001", messages.encode_batch(1, 10, again))
    assert (res.new_records, res.duplicates, res.purchases, res.conflicts) == (0, 10, 0, 0)
    assert (snapshot(led), _money(led)) == before
    assert led.conflicts() == []


def _wiped_journal_record(seq):
    """What a terminal with a wiped journal writes under an old seq: another purchase."""
    return dict(make_record(seq, t0=T0 + 86400), item="1x Ny journal %d" % seq, reason=0, topup=False)


def test_reused_seq_with_other_content_is_kept_as_a_conflict_across_a_restart(tmp_path):
    path = str(tmp_path / "l.db")
    recs, batches = batches_of(10, 10)
    led = fake_ledger(path)
    led.apply_batch("skole-nord", "t0001", batches[0])
    before = _money(led)
    # The terminal's journal was replaced: its seqs start at 1 again, under new purchases.
    fresh = [_wiped_journal_record(s) for s in range(1, 6)]
    payload = messages.encode_batch(1, 5, fresh)
    res = led.apply_batch("skole-nord", "t0001", payload)
    assert (res.new_records, res.duplicates, res.purchases, res.triggers) == (0, 0, 0, 0)
    assert (res.conflicts, res.conflict_seqs) == (5, [1, 2, 3, 4, 5])
    assert res.watermark == 10  # acknowledged: stored as a conflict, not lost
    assert _money(led) == before  # nothing booked twice, old records untouched
    assert led.received_seqs(1) == list(range(1, 11))
    # At-least-once: the conflicting batch again keeps nothing twice.
    res = led.apply_batch("skole-nord", "t0001", payload)
    assert (res.new_records, res.duplicates, res.conflicts) == (0, 5, 0)
    assert len(led.conflicts()) == 5 and _money(led) == before
    led.close()

    led = fake_ledger(path)  # the backend restarted: the conflicts are in the file
    kept = led.conflicts()
    assert [(c["terminal"], c["seq"]) for c in kept] == [(1, s) for s in range(1, 6)]
    for c, r, old in zip(kept, fresh, recs):
        assert {k: c[k] for k in r if k not in ("terminal", "seq")} == {
            k: v for k, v in r.items() if k not in ("terminal", "seq")}
        assert c["stored"] == {k: v for k, v in old.items() if k not in ("terminal", "seq")}
        assert c["received"] > 0
    assert led.conflicts(terminal=1) == kept and led.conflicts(terminal=2) == []
    assert _money(led) == before
    led.close()


@pytest.mark.parametrize("field, value", [
    ("t", T0 + 1), ("uid", "04ffffffffffff"), ("account", 4242), ("amount", 1), ("place", 1), ("kind", 1),
    ("item", "1x Andet"), ("balance_after", 1), ("reason", 5), ("topup", True),
])
def test_any_differing_field_is_a_conflict(field, value):
    r = dict(make_record(1), reason=0, topup=False, kind=0)
    led = fake_ledger()
    led.apply_batch("skole-nord", "t0001", messages.encode_batch(1, 1, [r]))
    before = _money(led)
    other = dict(r, **{field: value})
    assert other != r
    res = led.apply_batch("skole-nord", "t0001", messages.encode_batch(1, 1, [other]))
    assert (res.duplicates, res.conflicts) == (0, 1)
    assert led.conflicts()[0][field] == value and _money(led) == before


def test_conflicts_and_new_records_in_one_batch():
    recs, batches = batches_of(4, 4)
    led = fake_ledger()
    led.apply_batch("skole-nord", "t0001", batches[0])
    # seq 1 the same record, 2..4 other ones, 5..6 new: one batch from a half-rebuilt journal
    mixed = [recs[0]] + [_wiped_journal_record(s) for s in range(2, 7)]
    res = led.apply_batch("skole-nord", "t0001", messages.encode_batch(1, 6, mixed))
    assert (res.new_records, res.duplicates, res.conflict_seqs, res.watermark) == (2, 1, [2, 3, 4], 6)
    assert led.purchase_seqs(1) == [r["seq"] for r in recs if r["reason"] == 0] + [5, 6]
