"""Automatic top-up on the backend: the simulated payment provider's outcomes and its
identical-amount window, the processor's bookkeeping, at most one attempt per account in
flight (concurrent triggers, several processors, a crash mid-attempt), payout ending it."""
import threading
import time

import pytest

from cpos.net import messages
from fake_journal import make_record
from backend import Ledger
from backend import payments as pay
from backend.payments import PaymentProvider
from backend.portal import Portal
from backend.topup import TopupProcessor

T0 = 1764000000  # 2025-11-24


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def test_provider_outcomes():
    clock = Clock()
    p = PaymentProvider(clock=clock)
    p.add_card("visa-ok", "2026-03", 100000)
    p.add_card("visa-poor", "2026-03", 1999)
    p.add_card("visa-old", "2025-10", 100000)
    p.add_card("visa-edge", "2025-11", 100000)  # valid through the end of November
    assert p.charge("visa-ok", 20000, "o1").outcome == pay.APPROVED
    assert p.funds("visa-ok") == 80000
    assert p.charge("visa-poor", 2000, "o2").outcome == pay.DECLINED
    assert p.funds("visa-poor") == 1999
    assert p.charge("visa-old", 2000, "o3").outcome == pay.EXPIRED
    assert p.charge("visa-edge", 2000, "o4").outcome == pay.APPROVED
    assert p.charge("mc-none", 2000, "o5").outcome == pay.UNKNOWN
    clock.t = 1764547200  # 2025-12-01 00:00 UTC: now the November card has expired
    assert p.charge("visa-edge", 2100, "o6").outcome == pay.EXPIRED
    with pytest.raises(ValueError):
        p.add_card("x", "2026-13", 1)
    with pytest.raises(ValueError):
        p.charge("visa-ok", 0, "o7")


def test_identical_amount_rejected_within_the_window_and_orders_are_idempotent():
    clock = Clock()
    p = PaymentProvider(clock=clock)
    p.add_card("visa", "2030-01", 100000)
    assert p.charge("visa", 30000, "a").ok
    assert p.charge("visa", 30000, "a").ok  # the same order asked again: answered, not charged again
    assert p.funds("visa") == 70000
    clock.t += 14 * 60
    assert p.charge("visa", 30000, "b").outcome == pay.IDENTICAL  # the guide's "Identisk Transaktion"
    assert p.charge("visa", 29900, "c").ok  # ... so try 299 kr. instead, as the guide suggests
    assert p.funds("visa") == 70000 - 29900
    clock.t += 60 + 1  # 15 minutes after the first charge
    assert p.charge("visa", 30000, "d").ok
    assert [o[4] for o in p.orders("visa")] == ["approved", "identical", "approved", "approved"]
    # A declined charge does not start a window: the same amount may be tried again at once.
    p.add_card("poor", "2030-01", 100)
    assert p.charge("poor", 5000, "e").outcome == pay.DECLINED
    p.add_card("poor", "2030-01", 10000)
    assert p.charge("poor", 5000, "f").ok


def _trigger_batch(terminal, seqs, account, uid="04a1b2c3", balance_after=1000):
    recs = [dict(make_record(s, terminal), account=account, uid=uid, topup=True, reason=8, amount=3000,
                 balance_after=balance_after) for s in seqs]
    return messages.encode_batch(seqs[0], seqs[-1], recs)


def _world(path=":memory:", balance=1000, ref="visa", funds=100000, expiry="2030-01", clock=None):
    clock = clock or Clock()
    led = Ledger(path, clock=clock)
    prov = PaymentProvider(clock=clock)
    prov.add_card(ref, expiry, funds)
    portal = Portal(led, clock=clock)
    acc = led.add_account("Test Barn 1", account_id=1)
    portal.issue_card(acc, "04a1b2c3", "884263sae")
    if balance:
        portal.top_up(acc, balance // 100)
    portal.enrol(acc, 200, ref)
    return led, prov, portal, acc, clock


def triggers(led):
    return [(t, s, st, r) for t, s, _, _, st, r in led.db.execute(
        "SELECT terminal, seq, account, t, status, reason FROM topup_triggers ORDER BY terminal, seq")]


def test_approved_top_up_is_booked_and_noted_for_the_downlink():
    led, prov, _, acc, clock = _world()
    proc = TopupProcessor(led, prov, clock=clock)
    assert led.apply_batch("s", "t0001", _trigger_batch(1, [1], acc)).triggers == 1
    mark = led.changes_since(0)[-1][0]
    assert proc.process_pending() == 1
    assert led.balance(acc) == 1000 + 20000
    assert prov.funds("visa") == 80000
    assert triggers(led) == [(1, 1, "done", "charged 200.00 kr.")]
    assert [(k, a) for _, k, a, _, _, _ in led.changes_since(mark)] == [("balance", acc)]
    top = led.statement("884263sae")[0]
    assert (top["type"], top["amount"], top["text"]) == ("Indsat", 20000, "1x Automatisk optankning")
    assert proc.process_pending() == 0  # nothing left to do, nothing charged twice
    assert len(prov.orders()) == 1


@pytest.mark.parametrize("funds,expiry,ref,reason", [
    (19999, "2030-01", "visa", "payment card declined: insufficient funds"),
    (100000, "2025-10", "visa", "payment card expired"),
    (100000, "2030-01", "other", "payment card unknown to the provider"),
])
def test_failed_charges_book_nothing_and_say_why(funds, expiry, ref, reason):
    led, prov, _, acc, clock = _world(funds=funds, expiry=expiry, ref=ref)
    if ref != "visa":
        led.db.execute("UPDATE enrolments SET payment_ref = 'visa'")  # the provider knows no 'visa'
        prov.db.execute("DELETE FROM cards WHERE ref = 'visa'")
    proc = TopupProcessor(led, prov, clock=clock)
    led.apply_batch("s", "t0001", _trigger_batch(1, [1], acc))
    assert proc.process_pending() == 1
    assert led.balance(acc) == 1000
    assert triggers(led) == [(1, 1, "failed", reason)]
    assert led.db.execute("SELECT status, reason FROM topup_attempts").fetchall() == [("failed", reason)]


def test_identical_amount_within_the_window_fails_the_second_top_up():
    led, prov, portal, acc, clock = _world()
    proc = TopupProcessor(led, prov, clock=clock)
    led.apply_batch("s", "t0001", _trigger_batch(1, [1], acc))
    proc.process_pending()
    portal.payout(acc, 18000, "1234", "1")  # the balance is under 50 kr. again ...
    portal.enrol(acc, 200, "visa")  # (payout cancelled the enrolment; enrol again)
    clock.t += 5 * 60
    led.apply_batch("s", "t0001", _trigger_batch(1, [2], acc))
    proc.process_pending()
    assert triggers(led)[1] == (1, 2, "failed", "identical transaction: the same amount was charged "
                                                "less than 15 minutes ago")
    clock.t += 10 * 60 + 1
    led.apply_batch("s", "t0001", _trigger_batch(1, [3], acc))
    proc.process_pending()
    assert triggers(led)[2][2] == "done"
    assert led.balance(acc) == 3000 + 20000


def test_no_charge_when_not_needed_not_enrolled_or_card_blocked():
    led, prov, portal, acc, clock = _world(balance=5000)  # exactly 50 kr.: not under the threshold
    proc = TopupProcessor(led, prov, clock=clock)
    led.apply_batch("s", "t0001", _trigger_batch(1, [1], acc))
    proc.process_pending()
    assert triggers(led) == [(1, 1, "skipped", "balance 50.00 kr. is not under 50.00 kr.")]
    portal.payout(acc, 100, "1234", "1")
    led.apply_batch("s", "t0001", _trigger_batch(1, [2], acc))
    proc.process_pending()
    assert triggers(led)[1] == (1, 2, "failed", "not enrolled in automatic top-up")  # payout cancelled it
    portal.enrol(acc, 200, "visa")
    portal.block("884263sae")
    led.apply_batch("s", "t0001", _trigger_batch(1, [3], acc))
    proc.process_pending()
    assert triggers(led)[2] == (1, 3, "failed", "canteen card blocked")
    assert prov.orders() == [] and led.balance(acc) == 4900


class SlowProvider(PaymentProvider):
    """Counts charges in progress per card reference, and takes its time over each."""

    def __init__(self, delay, **kw):
        super().__init__(**kw)
        self.delay = delay
        self.busy = {}
        self.most = 0
        self.count_lock = threading.Lock()

    def charge(self, ref, amount, order_id):
        with self.count_lock:
            self.busy[ref] = self.busy.get(ref, 0) + 1
            self.most = max(self.most, self.busy[ref])
        try:
            time.sleep(self.delay)
            return super().charge(ref, amount, order_id)
        finally:
            with self.count_lock:
                self.busy[ref] -= 1


def test_one_attempt_in_flight_under_concurrent_triggers_and_processors(tmp_path):
    db = str(tmp_path / "l.db")
    clock = Clock()
    prov = SlowProvider(0.02, clock=clock)
    setup = Ledger(db, clock=clock)
    portal = Portal(setup, clock=clock)
    accounts = list(range(1, 5))
    for a in accounts:
        setup.add_account("A%d" % a, account_id=a)
        portal.issue_card(a, "04a1b2c%d" % a, "card%d" % a)
        portal.top_up(a, 10)
        portal.enrol(a, 100 + a, "visa-%d" % a)
        prov.add_card("visa-%d" % a, "2030-01", 10 ** 7)
    stop = threading.Event()
    errors = []

    def terminal(n):  # 4 terminals, each sending triggers for every account, batch by batch
        try:
            led = Ledger(db, clock=clock)
            for i in range(12):
                a = accounts[i % len(accounts)]
                led.apply_batch("s", "t%04d" % n, _trigger_batch(n, [i + 1], a, uid="04a1b2c%d" % a))
                time.sleep(0.003)
        except Exception as e:
            errors.append(e)

    def processor():
        try:
            proc = TopupProcessor(Ledger(db), prov, clock=clock)
            while not stop.is_set():
                proc.process_pending()
                inflight = proc.db.execute("SELECT account, count(*) FROM topup_attempts WHERE status = 'inflight' "
                                           "GROUP BY account HAVING count(*) > 1").fetchall()
                assert inflight == []
        except Exception as e:
            errors.append(e)

    procs = [threading.Thread(target=processor) for _ in range(3)]
    terms = [threading.Thread(target=terminal, args=(n,)) for n in range(1, 5)]
    for t in procs + terms:
        t.start()
    for t in terms:
        t.join()
    time.sleep(0.3)
    stop.set()
    for t in procs:
        t.join()
    TopupProcessor(setup, prov, clock=clock).process_pending()
    assert errors == []
    assert prov.most == 1  # never two charges for one account's card at once
    rows = triggers(setup)
    assert len(rows) == 4 * 12
    assert {st for _, _, st, _ in rows} <= {"done", "skipped"}
    for a in accounts:  # the first trigger charged; every later one found the balance topped up
        assert [o[2] for o in prov.orders("visa-%d" % a)] == [(100 + a) * 100]
        assert setup.balance(a) == 1000 + (100 + a) * 100


class Crash(BaseException):
    """The processor dies here (not an Exception: nothing in the processor may catch it)."""


class CrashingProvider(PaymentProvider):
    def __init__(self, when, **kw):
        super().__init__(**kw)
        self.when = when  # "before": the charge never reached us; "after": charged, answer lost

    def charge(self, ref, amount, order_id):
        if self.when == "before":
            self.when = None
            raise Crash()
        res = super().charge(ref, amount, order_id)
        if self.when == "after":
            self.when = None
            raise Crash()
        return res


@pytest.mark.parametrize("when", ["before", "after"])
def test_restart_mid_attempt_charges_once_and_books_once(tmp_path, when):
    db = str(tmp_path / "l.db")
    clock = Clock()
    led = Ledger(db, clock=clock)
    prov = CrashingProvider(when, clock=clock)
    prov.add_card("visa", "2030-01", 100000)
    portal = Portal(led, clock=clock)
    acc = led.add_account("A", account_id=1)
    portal.issue_card(acc, "04a1b2c3", "884263sae")
    portal.top_up(acc, 10)
    portal.enrol(acc, 200, "visa")
    led.apply_batch("s", "t0001", _trigger_batch(1, [1], acc))
    with pytest.raises(Crash):
        TopupProcessor(led, prov, clock=clock).process_pending()
    led.close()  # the process is gone; what survives is in SQLite
    led = Ledger(db, clock=clock)
    assert led.db.execute("SELECT account, status FROM topup_attempts").fetchall() == [(acc, "inflight")]
    # More triggers arrive from other terminals before recovery: a new processor that does
    # not recover yet must not start a second attempt for the account.
    led.apply_batch("s", "t0002", _trigger_batch(2, [1, 2], acc))
    fresh = TopupProcessor(led, prov, clock=clock)
    assert fresh.process_pending() == 0
    assert [st for _, _, st, _ in triggers(led)] == ["inflight", "pending", "pending"]
    assert fresh.recover() == 1
    assert fresh.process_pending() == 0
    assert [st for _, _, st, _ in triggers(led)] == ["done", "skipped", "skipped"]
    assert len([o for o in prov.orders() if o[4] == pay.APPROVED]) == 1
    assert prov.funds("visa") == 80000
    assert led.balance(acc) == 1000 + 20000
    assert led.db.execute("SELECT count(*) FROM ledger WHERE text = '1x Automatisk optankning'").fetchone() == (1,)
    # An attempt left by a crash is also re-driven without a restart once it is stale.
    assert fresh.recover() == 0


def test_stale_attempt_is_redriven_by_process_pending(tmp_path):
    led, prov, _, acc, clock = _world(str(tmp_path / "l.db"))
    led.apply_batch("s", "t0001", _trigger_batch(1, [1], acc))
    proc = TopupProcessor(led, prov, clock=clock, stale_s=30)
    attempt = proc._claim(acc)
    assert attempt is not None and proc._claim(acc) is None  # claimed, then crashed before charging
    assert proc.process_pending() == 0  # too fresh: maybe another processor is still on it
    clock.t += 31
    assert proc.process_pending() == 1
    assert triggers(led)[0][2] == "done" and led.balance(acc) == 21000
