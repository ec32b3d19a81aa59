"""Reversals in the reference backend: booked exactly once in any arrival order, the balance
back, the window totals down in the purchase's own window, the statement line, and the
downlink's view that keeps invariant 4 (synced balance - own unincluded) for every watermark.

Records are made with the device's own codec (cpos.purchase) and read back as the uplink
sends them (purchase.to_json_obj), so the backend is tested against the real wire form."""
import itertools

from hypothesis import given, settings, strategies as st

from backend import Ledger, format_statement
from backend.downlink import Downlink
from cpos import localtime, purchase, reasons, rules
from cpos.net import messages

T0 = 1764068400  # 2025-11-25 11:00 Copenhagen
SITE = "skole-nord"
KEY = bytes(range(32))
UIDS = {1: b"\x04\x11\x22\x33", 2: b"\x04\x11\x22\x44", 3: b"\x04\x11\x22\x55"}


def rec(seq, account, amount, t, reason=0, terminal=1, item="1x Sandwich", kind=rules.TILL, topup=False):
    b = bytearray(purchase.SIZE)
    purchase.encode_into(b, seq, t, UIDS[account], account, amount, rules.PLACE_SCHOOL, kind, terminal, item,
                         5000, reason, topup)
    return purchase.to_json_obj(purchase.decode(b))


def rev(seq, orig, t, cause=purchase.CAUSE_VOID, amount=None, account=None):
    """The reversal of record dict `orig`, as the terminal writes it (fields copied)."""
    b = bytearray(purchase.SIZE)
    purchase.encode_reversal_into(b, seq, t, bytes.fromhex(orig["uid"]), account or orig["account"],
                                  orig["amount"] if amount is None else amount, orig["place"], orig["kind"],
                                  orig["terminal"], orig["item"], 7000, orig["seq"], orig["t"], cause)
    return purchase.to_json_obj(purchase.decode(b))


def batch(recs, lo=None, hi=None):
    lo = recs[0]["seq"] if lo is None else lo
    hi = recs[-1]["seq"] if hi is None else hi
    return messages.encode_batch(lo, hi, recs)


def ledger(*accounts):
    led = Ledger(":memory:", clock=lambda: T0 + 2 * 86400)  # the newest records are a day after T0
    for a in accounts or (1, 2, 3):
        led.add_account("acct %d" % a, 10000, account_id=a, t=T0 - 86400)
        led.add_card(UIDS[a].hex(), "card%d" % a, a)
    led.add_terminal(1, SITE, rules.PLACE_SCHOOL, rules.TILL)
    return led


def test_a_reversal_gives_the_money_back_once_and_shows_in_the_statement():
    led = ledger()
    p = rec(1, 1, 2500, T0)
    r = rev(2, p, T0 + 60)
    a = led.apply_batch(SITE, "t0001", batch([p, r]))
    assert (a.purchases, a.reversals, a.watermark) == (1, 1, 2)
    assert led.balance(1) == 10000
    again = led.apply_batch(SITE, "t0001", batch([p, r]))  # at-least-once delivery
    assert (again.new_records, again.duplicates, again.reversals) == (0, 2, 0)
    assert led.balance(1) == 10000
    lines = led.statement("card1")
    assert [(ln["type"], ln["amount"], ln["balance"], ln["text"]) for ln in lines] == [
        ("Indsat", 2500, 10000, "Tilbageført: 1x Sandwich"), ("Hævet", 2500, 7500, "1x Sandwich"),
        ("Indsat", 10000, 10000, "Opening balance")]
    assert "Tilbageført: 1x Sandwich" in format_statement("card1", lines)
    assert led.reversals(1) == [{"terminal": 1, "seq": 2, "orig_seq": 1, "orig_t": T0, "cause": "void",
                                 "status": "booked", "why": None}]
    assert led.purchase_seqs(1) == [1]


def test_a_reversal_that_arrives_first_waits_for_its_purchase_and_is_booked_once():
    for order in itertools.permutations(range(3)):
        led = ledger()
        p = rec(1, 1, 2500, T0)
        q = rec(2, 2, 700, T0 + 1)
        r = rev(3, p, T0 + 60, purchase.CAUSE_VEND_FAILURE)
        batches = [batch([p]), batch([q]), batch([r])]
        for i in order:
            led.apply_batch(SITE, "t0001", batches[i])
            if i == 2 and 0 not in order[:order.index(2)]:
                assert led.reversals(1)[0]["status"] == "waiting"
                assert led.balance(1) == 10000  # nothing booked: the purchase is not here yet
        assert led.watermark(1) == 3
        assert (led.balance(1), led.balance(2)) == (10000, 9300), order
        assert led.db.execute("SELECT count(*) FROM ledger WHERE type = 'deposited' AND terminal = 1").fetchone()[0] == 1


def test_what_must_not_be_booked_is_kept_refused_for_staff():
    led = ledger()
    p = rec(1, 1, 2500, T0)
    refusal = rec(2, 3, 2000, T0, reason=reasons.INSUFFICIENT_FUNDS, topup=True)
    recs = [p, refusal, rev(3, p, T0 + 5), rev(4, p, T0 + 6),  # a second reversal of 1 (a faulty terminal)
            rev(5, refusal, T0 + 7), rev(6, rec(6 - 6 + 1, 1, 999, T0), T0 + 8)]
    recs[5]["reverses"] = 1  # names purchase 1 but states another amount
    led.apply_batch(SITE, "t0001", batch(recs))
    got = {r["seq"]: (r["status"], r["why"]) for r in led.reversals(1)}
    assert got == {3: ("booked", None), 4: ("refused", "purchase 1 already reversed by 3"),
                   5: ("refused", "reverses a refusal"), 6: ("refused", "does not match purchase 1")}
    assert led.balance(1) == 10000 and led.balance(3) == 10000


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_order_and_duplicates_book_each_reversal_once(data):
    n = data.draw(st.integers(2, 40))
    recs, expect = [], {1: 10000, 2: 10000, 3: 10000}
    purchases = []
    seq = 0
    for i in range(n):
        seq += 1
        if purchases and data.draw(st.booleans()):
            p = purchases.pop(data.draw(st.integers(0, len(purchases) - 1)))
            recs.append(rev(seq, p, T0 + 10 * seq))
            expect[p["account"]] += p["amount"]
        else:
            account = data.draw(st.sampled_from((1, 2, 3)))
            amount = data.draw(st.integers(1, 3000))
            p = rec(seq, account, amount, T0 + 10 * seq)
            recs.append(p)
            purchases.append(p)
            expect[account] -= amount
    size = data.draw(st.integers(1, 8))
    batches = [batch(recs[i:i + size]) for i in range(0, len(recs), size)]
    order = data.draw(st.permutations(batches + data.draw(st.lists(st.sampled_from(batches), max_size=6))))
    led = ledger()
    for b in order:
        led.apply_batch(SITE, "t0001", b)
    assert led.watermark(1) == seq
    assert {a: led.balance(a) for a in (1, 2, 3)} == expect
    assert all(r["status"] == "booked" for r in led.reversals(1))
    assert len(led.reversals(1)) == sum(1 for r in recs if "reverses" in r)


def _view(dl, number, w, account, now):
    """What terminal `number` with watermark `w` would see before its own unincluded
    records: (synced balance, day total at school in the window holding `now`)."""
    bal, _, _, _, _, keys, totals = dl._account(account, number, w)
    s = rules.Spends()
    s.keys[:] = list(keys)
    s.totals[:] = list(totals)
    return bal, s.spent(rules.PLACE_SCHOOL, localtime.WINDOW_DAY, now)


def test_the_downlink_counts_a_reversal_once_for_every_watermark():
    led = ledger()
    led.set_limit(2, rules.PLACE_SCHOOL, localtime.WINDOW_DAY, 3000)
    p = rec(1, 2, 2500, T0)
    r = rev(2, p, T0 + 60)
    led.apply_batch(SITE, "t0001", batch([p, r]))
    dl = Downlink(led, {SITE: KEY})
    now = T0 + 120
    # Terminal 1's own records above its watermark w it counts itself (cpos.cards.unincluded):
    # the purchase spends 2500 and adds it to the day total, the reversal the opposite.
    own = {0: (2500 - 2500, 2500 - 2500), 1: (-2500, -2500), 2: (0, 0)}
    for w in (0, 1, 2):
        bal, day = _view(dl, 1, w, 2, now)
        money_own, total_own = own[w]
        assert (bal - money_own, day + total_own) == (10000, 0), w
    assert _view(dl, 2, 0, 2, now) == (10000, 0)  # another terminal: the reversal is simply booked


def test_a_reversal_next_day_takes_the_amount_out_of_the_purchase_day_only():
    led = ledger()
    led.set_limit(2, rules.PLACE_SCHOOL, localtime.WINDOW_DAY, 3000)
    p = rec(1, 2, 2500, T0)
    q = rec(2, 2, 400, T0 + 86400)  # the next day
    r = rev(3, p, T0 + 86400 + 60)
    led.apply_batch(SITE, "t0001", batch([p, q, r]))
    dl = Downlink(led, {SITE: KEY})
    assert _view(dl, 2, 0, 2, T0 + 86400 + 120) == (10000 - 400, 400)
    assert _view(dl, 2, 0, 2, T0 + 60) == (10000 - 400, 0)  # the keys are the newest day's: older counts 0


def test_rescue_reads_reversal_records_and_submits_them_once(tmp_path):
    """A dead terminal's journal with reversals: `cpos rescue` prints them (JSON with
    `reverses`) and submitting the dump books each purchase and each reversal once."""
    from cpos.journal import Journal
    from cpos.refund import Refunds
    from host_tools import rescue
    from simulator.norflash import NorFlash
    from test_rescue import run_rescue

    f = NorFlash(4 * 4096)
    j = Journal(f)
    j.recover()
    for i in range(6):
        j.append(T0 + i, UIDS[1 + i % 2], 1 + i % 2, 1000 + i, rules.PLACE_SCHOOL, rules.TILL, 7, "1x Suppe",
                 5000, reasons.APPROVED)
    refunds = Refunds(j, 7, 900)
    for orig in (2, 5):
        assert refunds.check(orig, T0 + 100) == reasons.APPROVED
        refunds.record(T0 + 100, 6000, purchase.CAUSE_VOID)
    dump = tmp_path / "journal.bin"
    dump.write_bytes(bytes(f.mem))
    code, recs, err = run_rescue(dump)
    assert code == 0, err
    assert [(r["seq"], r.get("reverses"), r["reason"]) for r in recs] == [
        (1, None, 0), (2, None, 0), (3, None, 0), (4, None, 0), (5, None, 0), (6, None, 0),
        (7, 2, reasons.REVERSED), (8, 5, reasons.REVERSED)]
    led = ledger(1, 2)
    for _ in range(2):  # a second submission changes nothing
        rescue.submit(led, SITE, 7, bytes(f.mem))
        assert (led.balance(1), led.balance(2)) == (10000 - 1000 - 1002 - 1004 + 1004,
                                                    10000 - 1001 - 1003 - 1005 + 1001)
    assert [(r["seq"], r["orig_seq"], r["status"]) for r in led.reversals(7)] == [(7, 2, "booked"), (8, 5, "booked")]
