"""Balance without double counting (issue 8, point 2): a hypothesis state machine.

Several terminals, each with the real card table (on a simulated NOR flash), the real
pending purchases and the real sync engine; the real ledger and downlink publisher as
the backend. Hypothesis interleaves purchases, uploads (with resends, and later batches
overtaking earlier ones), acks arriving late, deposits, pumps of deltas, deliveries, lost messages, sync requests (deltas or
snapshots) and reboots. It checks, always:

- pending = this terminal's purchases above the table's included_seq, counted from the
  full purchase history (so a journal record released too early is caught at the next
  reboot, when pending is rebuilt from the journal);
- the journal never released a record above included_seq;
and whenever a terminal has received everything the backend has made for it:
- its view of each account (synced balance - pending) equals the ledger's balance
  minus this terminal's purchases the ledger does not have yet (in flight);
- its day total for an account with a limit (synced window totals + pending) equals every
  till purchase the ledger has for it, from any terminal, plus its own in flight.
The network in between is modelled as queues (the broker tests cover the real one).
"""
import os
import tempfile

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cpos import rules
from cpos.cards import table as cardtable
from cpos.cards import unincluded
from cpos.net import messages as protocol
from cpos.net import signing
from cpos.net.sync import Sync
from downlink_fakes import FakeClient
from backend import Ledger
from backend.downlink import Downlink
from simulator.norflash import NorFlash

SITE = "skole-nord"
KEY = b"\x42" * 32
TERMINALS = (1, 2, 3)
CARDS = {1: "04000001", 2: "04000002"}  # account -> its card
LIMITED = 2  # has a day limit at school, so the backend sends its window totals
T0 = 1764072000


class Terminal:
    """What a terminal holds: flash (table), journal (records not yet released), own purchases not yet included."""

    def __init__(self, number):
        self.number = number
        self.tid = protocol.terminal_id(number)
        self.dev = NorFlash(24 * 4096)
        self.journal = {}  # seq -> (account, amount): what the flash journal still holds
        self.history = {}  # seq -> (account, amount): every purchase ever (the test's truth)
        self.next_seq = 1
        self.sent = 0  # highest seq uploaded on this "connection"
        self.acked = 0  # the backend's ack as the terminal heard it
        self.acks = []  # acks on their way
        self.inbox = []  # downlink messages on their way
        self.boot()

    def boot(self):
        self.table = cardtable.CardTable(self.dev, card_slots=32)
        self.pending = unincluded.Unincluded()
        self.client = FakeClient()
        self.sync = Sync(self.table, self.client, SITE, self.tid, signing.derive(KEY, signing.DOWN, self.tid, 0),
                         on_included=self.on_included)  # the terminal holds its own derived key
        self.rebuild()

    def rebuild(self):
        inc = self.table.included_seq
        self.pending.clear(inc)
        for seq in sorted(self.journal):
            a, amount = self.journal[seq]
            self.pending.add(seq, a, rules.PLACE_SCHOOL, amount, T0)

    def on_included(self, seq):  # what firmware/app.py does
        self.rebuild()
        self.release()

    def release(self):  # cpos.net.journal_feed.JournalFeed with ack_limit = table.included_seq
        w = min(self.acked, self.table.included_seq)
        for seq in [s for s in self.journal if s <= w]:
            del self.journal[seq]

    def view(self, account):
        card, spends = rules.CardRecord(), rules.Spends()
        r = self.table.lookup(bytes.fromhex(CARDS[account]), card, spends)
        if r != cardtable.FOUND:
            return None
        return card.balance - self.pending.amount(account)

    def spent_today(self, account):
        """What the tap path counts against a day limit: synced totals + own purchases not yet included."""
        card, spends = rules.CardRecord(), rules.Spends()
        if self.table.lookup(bytes.fromhex(CARDS[account]), card, spends) != cardtable.FOUND:
            return None
        self.pending.apply_to(card, spends, T0)
        return spends.spent(rules.PLACE_SCHOOL, rules.WINDOW_DAY, T0)


def record(seq, terminal, account, amount):
    return {"seq": seq, "t": T0, "uid": CARDS[account], "account": account, "amount": amount, "place": 0,
            "kind": 0, "terminal": terminal, "item": "1x Toast", "balance_after": 0, "reason": 0, "topup": False}


class Site(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.TemporaryDirectory(prefix="cpos-dl-")
        self.led = Ledger(os.path.join(self.dir.name, "ledger.db"), synchronous="OFF", clock=lambda: T0)
        for acc, uid in CARDS.items():
            self.led.add_account("acc %d" % acc, 20000, account_id=acc)
            self.led.allow_place(acc, 0)
            self.led.add_card(uid, "card%d" % acc, acc)
        self.led.set_limit(LIMITED, rules.PLACE_SCHOOL, rules.WINDOW_DAY, 10 ** 7)  # window totals go down
        for n in TERMINALS:
            self.led.add_terminal(n, SITE, 0, 0)
        self.dl = Downlink(self.led, {SITE: KEY})
        self.terms = dict((n, Terminal(n)) for n in TERMINALS)
        self.checked = 0

    def teardown(self):
        self.led.close()
        self.dir.cleanup()

    def _route(self, msgs):
        for topic, payload in msgs:
            tid = protocol.split_topic(topic)[1]
            self.terms[protocol.terminal_number(tid)].inbox.append(payload)

    # -- the terminal side ---------------------------------------------------------------
    @rule(n=st.sampled_from(TERMINALS), account=st.sampled_from(sorted(CARDS)), amount=st.integers(1, 5000))
    def purchase(self, n, account, amount):
        t = self.terms[n]
        seq = t.next_seq
        t.next_seq += 1
        t.journal[seq] = t.history[seq] = (account, amount)
        t.pending.add(seq, account, rules.PLACE_SCHOOL, amount, T0)

    @rule(n=st.sampled_from(TERMINALS), k=st.integers(1, 4))
    def upload(self, n, k):
        t = self.terms[n]
        lo = t.sent + 1
        hi = min(t.next_seq - 1, t.sent + k)
        if hi < lo:
            return
        recs = [record(s, n, *t.history[s]) for s in range(lo, hi + 1)]
        res = self.led.apply_batch(SITE, t.tid, protocol.encode_batch(lo, hi, recs))
        t.sent = hi
        t.acks.append(res.watermark)

    @rule(n=st.sampled_from(TERMINALS), k=st.integers(1, 3))
    def later_batch_arrives_first(self, n, k):
        """The broker delivers a later batch before an earlier one: the ledger books its
        purchases, but the watermark cannot pass the hole (they are above included_seq)."""
        t = self.terms[n]
        lo = t.sent + 2
        hi = min(t.next_seq - 1, t.sent + 1 + k)
        if hi < lo:
            return
        recs = [record(s, n, *t.history[s]) for s in range(lo, hi + 1)]
        t.acks.append(self.led.apply_batch(SITE, t.tid, protocol.encode_batch(lo, hi, recs)).watermark)

    @rule(n=st.sampled_from(TERMINALS))
    def reconnect_resends(self, n):
        t = self.terms[n]
        t.sent = t.acked  # the uplink resends everything unacknowledged
        t.inbox = []  # what was on its way is lost (clean session)

    @rule(n=st.sampled_from(TERMINALS))
    def ack_arrives(self, n):
        t = self.terms[n]
        if t.acks:
            t.acked = max(t.acked, t.acks.pop(0))
            t.release()

    @rule(n=st.sampled_from(TERMINALS), k=st.integers(1, 3))
    def deliver(self, n, k):
        t = self.terms[n]
        for _ in range(k):
            if t.inbox:
                t.client.handler(t.sync.t_down, t.inbox.pop(0), False)

    @rule(n=st.sampled_from(TERMINALS))
    def ask(self, n):
        t = self.terms[n]
        self._route(self.dl.on_request(SITE, t.tid, t.sync._request()))

    @rule(n=st.sampled_from(TERMINALS))
    def ask_for_snapshot(self, n):
        t = self.terms[n]
        t.table.needs_resync = True
        self._route(self.dl.on_request(SITE, t.tid, t.sync._request()))
        t.table.needs_resync = t.table.state != cardtable.OK

    @rule(n=st.sampled_from(TERMINALS))
    def reboot(self, n):
        t = self.terms[n]
        t.inbox = []
        t.acks = []
        # After a reboot the feed's ack starts at the journal's release point.
        t.acked = t.sent = min(list(t.journal) + [t.next_seq]) - 1
        t.boot()

    # -- the backend side ----------------------------------------------------------------
    @rule(account=st.sampled_from(sorted(CARDS)), kr=st.integers(1, 300))
    def deposit(self, account, kr):
        self.led.deposit(account, kr * 100)

    @rule()
    def pump(self):
        self._route(self.dl.pump())

    @rule(n=st.sampled_from(TERMINALS), kr=st.integers(1, 300))
    def offline_for_a_day(self, n, kr):
        """Terminal n hears nothing while the site goes on, and the messages kept for it run
        out: its next request brings a catch-up from the ledger's changes (a JUMP from its
        version, then each account's state now), or a snapshot if that is smaller."""
        t = self.terms[n]
        t.inbox = []
        for acc in CARDS:
            self.led.deposit(acc, kr * 100)
        self._route(self.dl.pump())
        t.inbox = []
        self.led.db.execute("DELETE FROM dl_sent WHERE terminal = ?", (n,))

    @rule(n=st.sampled_from(TERMINALS))
    def settle(self, n):
        """Everything on its way arrives; then the terminal asks, as it would on a connect."""
        t = self.terms[n]
        self._route(self.dl.pump())
        for _ in range(3):
            while t.inbox:
                t.client.handler(t.sync.t_down, t.inbox.pop(0), False)
            if t.sync.synced and not t.inbox:
                break
            self._route(self.dl.on_request(SITE, t.tid, t.sync._request()))
        assert t.sync.synced or t.inbox == []

    # -- what must always hold ----------------------------------------------------------------
    @invariant()
    def pending_counts_each_purchase_above_included_once(self):
        for t in self.terms.values():
            inc = t.table.included_seq
            for acc in CARDS:
                want = sum(a for s, (ac, a) in t.history.items() if s > inc and ac == acc)
                assert t.pending.amount(acc) == want, (t.number, acc, inc)
            assert all(s in t.journal for s in t.history if s > inc), "released a record the table lacks"

    @invariant()
    def view_is_truth_minus_in_flight(self):
        stream = dict((r[0], r[1:]) for r in self.led.db.execute(
            "SELECT terminal, version, change_id FROM dl_streams"))
        last_change = self.led.db.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0]
        for t in self.terms.values():
            s = stream.get(t.number)
            if (s is None or t.inbox or t.table.state != cardtable.OK or t.table.version != s[0]
                    or s[1] != last_change):
                continue  # something is still on its way to this terminal
            booked = set(self.led.purchase_seqs(t.number))
            for acc in CARDS:
                in_flight = sum(a for seq, (ac, a) in t.history.items() if ac == acc and seq not in booked)
                assert t.view(acc) == self.led.balance(acc) - in_flight, (t.number, acc)
            # Window totals the same way: every till purchase the ledger has (any terminal)
            # plus this terminal's own in flight, each counted once.
            everywhere = sum(a for u in self.terms.values() for seq, (ac, a) in u.history.items()
                             if ac == LIMITED and seq in set(self.led.purchase_seqs(u.number)))
            own_in_flight = sum(a for seq, (ac, a) in t.history.items() if ac == LIMITED and seq not in booked)
            assert t.spent_today(LIMITED) == everywhere + own_in_flight, (t.number, t.spent_today(LIMITED))
            # No limit, no totals sent: only this terminal's own pending purchases count.
            own = sum(a for seq, (ac, a) in t.history.items() if ac == 1 and seq > t.table.included_seq)
            assert t.spent_today(1) == own, (t.number, t.spent_today(1), own)
            self.checked += 1


Site.TestCase.settings = settings(max_examples=int(os.environ.get("CPOS_DOWNLINK_EXAMPLES", "150")),
                                      stateful_step_count=40, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
TestBalanceWithoutDoubleCounting = Site.TestCase


def deliver_checking_money_after_each_delta(site, t):
    """Deliver terminal `t`'s inbox; after each delta applied (as the next tap would see the
    table: the sync engine yields between the deltas of a message) no account shows more
    money than the ledger gives it less the terminal's own purchases in flight (some counted
    twice at most), and pending counts each purchase once. The included_seq after each."""
    seen = []
    apply = t.sync._apply

    def applied_one(b):
        r = apply(b)
        site.pending_counts_each_purchase_above_included_once()
        seen.append(t.table.included_seq)
        booked = set(site.led.purchase_seqs(t.number))
        for acc in CARDS:
            in_flight = sum(a for seq, (ac, a) in t.history.items() if ac == acc and seq not in booked)
            assert t.view(acc) <= site.led.balance(acc) - in_flight, (acc, t.view(acc), seen)
        return r
    t.sync._apply = applied_one
    try:
        while t.inbox:
            t.client.handler(t.sync.t_down, t.inbox.pop(0), False)
    finally:
        t.sync._apply = apply
    return seen


def test_a_purchase_booked_before_the_watermark_reaches_it_is_resent_once_it_does():
    """Found by the machine above: a later batch arrives first and is booked above the
    watermark (the terminal still counts it as its own, in flight); when the earlier batch
    fills the hole, the watermark passes it, and the backend must send that purchase's
    account again with the new included_seq, or the terminal forgets the purchase."""
    site = Site()
    try:
        site.purchase(3, 1, 1)  # seq 1, account 1
        site.purchase(3, LIMITED, 1)  # seq 2, account 2
        site.later_batch_arrives_first(3, 1)  # seq 2 is booked; the watermark stays at 0
        site.ask(3)
        site.upload(3, 1)  # seq 1: the watermark jumps to 2
        site.settle(3)
        site.pending_counts_each_purchase_above_included_once()
        checked = site.checked
        site.view_is_truth_minus_in_flight()
        assert site.checked == checked + 1  # the terminal had everything: the views were compared
    finally:
        site.teardown()


def test_a_terminal_whose_kept_messages_ran_out_catches_up_with_its_purchases_in_flight_counted_once():
    """A catch-up while the terminal's own purchases are in flight and its watermark moved
    while it was away: each delta of the catch-up but the last carries the included_seq the
    terminal holds, so no purchase is forgotten while it is applied; at its end the views
    equal the ledger's truth minus what is in flight."""
    site = Site()
    try:
        site.settle(1)
        site.purchase(1, LIMITED, 700)  # seq 1
        site.upload(1, 1)  # seq 1 booked: the watermark is 1
        site.settle(1)  # the terminal's table includes it
        assert site.terms[1].table.included_seq == 1
        site.purchase(1, 1, 300)  # seq 2
        site.offline_for_a_day(1, 1)  # 1 kr deposits: less than the purchase booked meanwhile
        site.upload(1, 1)  # seq 2 arrives at reconnect: the watermark is 2
        site.purchase(1, 1, 200)  # seq 3, in flight
        site.ask(1)
        catchups = site.dl.catchups
        assert catchups == 1 and site.dl.snapshots == 1, (catchups, site.dl.snapshots)
        t = site.terms[1]
        seen = deliver_checking_money_after_each_delta(site, t)
        assert len(seen) >= 3 and seen[:-1] == [1] * (len(seen) - 1) and seen[-1] == 2 and t.sync.synced, seen
        checked = site.checked
        site.view_is_truth_minus_in_flight()
        assert site.checked == checked + 1
    finally:
        site.teardown()


def test_between_the_deltas_of_one_pumped_message_no_account_shows_more_money_than_it_has():
    """A pump that packs several deltas (both accounts changed) after the watermark passed
    the terminal's own purchases on both: the terminal serves taps between the deltas of a
    message, so every delta but the last carries the included_seq it holds, and no account
    shows money it does not have at any step (it failed with every delta carrying `w`)."""
    site = Site()
    try:
        site.settle(1)
        site.purchase(1, 1, 300)  # seq 1
        site.purchase(1, LIMITED, 400)  # seq 2
        site.upload(1, 2)  # both booked: the watermark is 2, and both accounts changed
        t = site.terms[1]
        site.pump()
        assert len(t.inbox) == 1 and t.table.included_seq == 0
        seen = deliver_checking_money_after_each_delta(site, t)
        assert len(seen) >= 2 and seen[:-1] == [0] * (len(seen) - 1) and seen[-1] == 2, seen
        site.view_is_truth_minus_in_flight()
    finally:
        site.teardown()
