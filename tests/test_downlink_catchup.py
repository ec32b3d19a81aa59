"""A terminal offline for a school day catches up from the ledger's changes (backend.downlink
`_catch_up`; issue 13 point 6): when the kept messages no longer reach back to its version,
it gets a JUMP from that version and one delta per account or card changed since (their
state now), not a snapshot, unless a snapshot is smaller. The terminal here is the real one:
card table on a simulated NOR flash, the sync engine, its pending purchases."""
import pytest

from cpos import rules
from cpos.cards import delta as carddelta
from cpos.cards import layout
from cpos.cards import table as cardtable
from cpos.net import messages as protocol
from cpos.net import signing
from cpos.net.sync import Sync
from downlink_fakes import FakeClient
from backend import Ledger
from backend.downlink import Downlink
from simulator.norflash import CUT_AFTER, NorFlash, PowerCut

SITE = "skole-nord"
KEY = b"\x42" * 32
T0 = 1764072000
CARDS = 2000  # accounts, one card each; a school day changes 300 of them
DAY = 300


def uid(a):
    return "04%06x" % a


def record(seq, account, amount):
    return {"seq": seq, "t": T0, "uid": uid(account), "account": account, "amount": amount, "place": 0,
            "kind": 0, "terminal": 2, "item": "1x Toast", "balance_after": 0, "reason": 0, "topup": False}


class Terminal:
    """The terminal's table (flash survives a reboot) and sync engine; the test is the broker."""

    def __init__(self, number, blocks=64):
        self.number = number
        self.tid = protocol.terminal_id(number)
        self.dev = NorFlash(blocks * 4096)
        self.boot()

    def boot(self):
        self.dev.reboot()
        self.table = cardtable.CardTable(self.dev, card_slots=32)
        self.client = FakeClient()
        self.sync = Sync(self.table, self.client, SITE, self.tid, signing.derive(KEY, signing.DOWN, self.tid, 0))

    def ask(self, dl):
        return dl.on_request(SITE, self.tid, self.sync._request())

    def take(self, msgs):
        for _, p in msgs:
            self.client.handler(self.sync.t_down, p, False)

    def lookups(self, led):
        """Every card as the tap path sees it: status, account, balance, limits, places, totals."""
        out = {}
        card, spends = rules.CardRecord(), rules.Spends()
        for (u,) in led.db.execute("SELECT uid FROM cards ORDER BY uid"):
            r = self.table.lookup(bytes.fromhex(u), card, spends)
            assert r == cardtable.FOUND, (u, r)
            a = layout.card_account(card, spends)
            out[u] = (card.account, card.status, a[0], a[1], list(a[2]), a[3], a[4],
                      [spends.spent(p, w, T0) for p in range(rules.PLACE_KINDS) for w in range(rules.WINDOWS)])
        return out


def kinds(msgs):
    """(delta kind, version) of every delta, in order; CHUNK for a snapshot's chunks."""
    out = []
    for _, p in msgs:
        kind, version = p[2], int.from_bytes(p[4:8], "little")
        body = p[16:len(p) - signing.TAG]
        if kind == signing.DELTA:
            out.append((body[2], version))
        elif kind == signing.DELTAS:
            i = 0
            while i < len(body):
                out.append((body[i + 3], int.from_bytes(body[i + 4:i + 8], "little")))
                i += 1 + body[i]
        elif kind == signing.CHUNK:
            out.append(("chunk", version))
    return out


def school(cards=CARDS, keep=50, logs=None):
    led = Ledger(":memory:", synchronous="OFF", clock=lambda: T0)
    with led._tx():
        for a in range(1, cards + 1):
            led.db.execute("INSERT INTO accounts (id, name, balance) VALUES (?, ?, 50000)", (a, "A%d" % a))
            led.db.execute("INSERT INTO cards (uid, number, account, status, issued) VALUES (?, ?, ?, 'active', 0)",
                           (uid(a), "card%d" % a, a))
            led.db.execute("INSERT INTO places (account, place) VALUES (?, 0)", (a,))
    for a in range(10, cards + 1, 10):  # a tenth has a day limit: their window totals go down too
        led.set_limit(a, rules.PLACE_SCHOOL, rules.WINDOW_DAY, 10 ** 6)
    led.add_terminal(1, SITE, 0, 0)
    led.add_terminal(2, SITE, 0, 0)
    led.add_terminal(3, SITE, 0, 0)
    dl = Downlink(led, {SITE: KEY}, keep=keep, log=(logs.append if logs is not None else None))
    return led, dl


def a_school_day(led, dl, changes=2000, accounts=DAY, step=CARDS // DAY, seed=5):
    """`changes` changes over `accounts` accounts (every `step`th): deposits, purchases at
    terminal 2, a few blocks and new cards; pumped every 10 changes, as the backend does all day."""
    import random
    rng = random.Random(seed)
    seq = led.db.execute("SELECT coalesce(max(seq), 0) FROM uplink WHERE terminal = 2").fetchone()[0]
    made = 0
    while made < changes:
        a = rng.randrange(1, accounts + 1) * step
        r = rng.random()
        if r < 0.5:
            led.deposit(a, rng.randrange(1, 500) * 100)
        elif r < 0.995:
            seq += 1
            led.apply_batch(SITE, "t0002", protocol.encode_batch(seq, seq, [record(seq, a, rng.randrange(1, 3000))]))
        elif r < 0.9975:
            led.set_card_status("card%d" % a, "blocked" if rng.random() < 0.7 else "active")
        else:
            with led._tx():
                n = led.db.execute("SELECT count(*) FROM cards").fetchone()[0] + 1
            led.add_card("05%06x" % n, "new%d" % n, a)
        made += 1
        if made % 10 == 0:
            dl.pump()
    dl.pump()


def synced_with_a_fresh_snapshot(led, dl, t):
    """t's table is current and every lookup equals a fresh snapshot's (terminal 3's, which
    has no purchases of its own in flight either)."""
    assert t.table.state == cardtable.OK and t.sync.synced, (t.table.state, t.sync.synced)
    assert t.table.version == dl._stream(1)[0]
    fresh = Terminal(3)
    fresh.take(fresh.ask(dl))
    assert fresh.sync.snapshots == 1
    got, want = t.lookups(led), fresh.lookups(led)
    assert len(got) >= CARDS and got == want, [(u, got[u], want.get(u)) for u in got if got[u] != want.get(u)][:5]


def test_a_terminal_offline_for_a_school_day_catches_up_from_the_ledger_not_from_a_snapshot():
    logs = []
    led, dl = school(logs=logs)
    t = Terminal(1)
    t.take(t.ask(dl))  # first start: a snapshot
    assert t.sync.synced and dl.snapshots == 1
    t.take(dl.pump())
    have = t.table.version
    a_school_day(led, dl)  # offline: nothing arrives
    v = dl._stream(1)[0]
    assert v - have > 2 * dl.keep  # the kept messages cover minutes, not the day
    assert dl._resend(1, SITE, "t0001", have, v) is None
    out = t.ask(dl)
    sent = kinds(out[:-1])
    assert dl.snapshots == 1 and dl.catchups == 1 and "chunk" not in [k for k, _ in sent]
    assert sent[0] == (carddelta.JUMP, v + 1)
    assert [ver for _, ver in sent] == list(range(v + 1, v + len(sent) + 1))
    start = led.db.execute("SELECT change_id FROM dl_marks WHERE terminal = 1 AND version <= ? ORDER BY version DESC "
                           "LIMIT 1", (have,)).fetchone()[0]
    rows = led.changes_since(start, limit=-1)
    limited = {a for (a,) in led.db.execute("SELECT DISTINCT account FROM limits")}
    balances = {a for _, k, a, _, _, _ in rows if k == "balance"}
    totals = {a for _, k, a, _, _, _ in rows if k == "totals" and a in limited}
    cards = {(k, u) for _, k, _, u, _, _ in rows if k in ("block", "unblock", "new_card")}
    assert len(rows) >= 2000 and DAY * 0.9 <= len(balances) <= DAY and totals and cards
    assert len(sent) - 1 == len(balances) + len(totals) + len(cards), (len(sent), len(balances), len(totals))
    assert len(out) - 1 <= 6  # a handful of packed messages
    line = [m for m in logs if "catch-up for t0001" in m]
    assert line and "from v%d: %d deltas" % (have, len(sent) - 1) in line[0] and "a snapshot would be" in line[0]
    t.take(out)
    synced_with_a_fresh_snapshot(led, dl, t)
    assert t.sync.snapshots == 1  # only the first start's


@pytest.mark.parametrize("kept", [True, False])
def test_a_terminal_cut_in_the_middle_of_its_catch_up_ends_equal_too(kept):
    """A power cut after a flash write while the second message of the catch-up is applied; the
    terminal reboots and asks with a version inside the catch-up: the rest comes from the
    kept messages, or (kept=False, they are gone too) from a new catch-up from the mark the
    catch-up left at its jump, which covers the whole catch-up again."""
    led, dl = school()
    t = Terminal(1)
    t.take(t.ask(dl))
    t.take(dl.pump())
    a_school_day(led, dl)
    out = t.ask(dl)
    sent = kinds(out[:-1])
    assert sent[0][0] == carddelta.JUMP and len(out) >= 3
    t.take(out[:1])
    v1 = t.table.version
    assert v1 > sent[0][1]  # the jump and the first message's deltas applied
    t.dev.arm(20, CUT_AFTER)  # between two writes (a torn append asks for a resync: a snapshot)
    with pytest.raises(PowerCut):
        t.take(out[1:2])
    t.boot()
    have = t.table.version
    assert t.table.state == cardtable.OK and v1 <= have < sent[-1][1], (v1, have, sent[-1])
    if not kept:
        led.db.execute("DELETE FROM dl_sent WHERE terminal = 1")
    catchups = dl.catchups
    again = t.ask(dl)
    assert "chunk" not in [k for k, _ in kinds(again)]
    if kept:
        assert dl.catchups == catchups and again[:-1] == out[1:-1]  # the same messages again
    else:
        assert dl.catchups == catchups + 1 and kinds(again[:-1])[0] == (carddelta.JUMP, sent[-1][1] + 1)
        assert len(kinds(again[:-1])) >= len(sent) - 1  # from the jump's mark: all of it again
    t.take(again)
    assert dl.snapshots == 1 and t.sync.snapshots == 0  # the first start's only (counted before the reboot)
    synced_with_a_fresh_snapshot(led, dl, t)


def test_a_catch_up_bigger_than_a_snapshot_is_a_snapshot():
    logs = []
    led, dl = school(cards=300, logs=logs)
    t = Terminal(1)
    t.take(t.ask(dl))
    have = t.table.version
    a_school_day(led, dl, changes=2000, accounts=300, step=1)
    for a in range(1, 301):  # and the term's new rules: every account changed in every way
        led.allow_place(a, 1)
        led.set_limit(a, rules.PLACE_SCHOOL, rules.WINDOW_WEEK, 5000)
    dl.pump()
    out = t.ask(dl)
    assert dl.catchups == 0 and dl.snapshots == 2 and {k for k, _ in kinds(out[:-1])} == {"chunk"}
    assert [m for m in logs if "no catch-up for t0001 from v%d" % have in m and "more than a snapshot" in m]
    t.take(out)
    assert t.sync.synced and t.sync.snapshots == 2


def test_a_jump_from_another_version_is_never_resent_and_a_ledger_from_before_catch_ups_migrates(tmp_path):
    """The kept JUMP from v_a is useless to a terminal at v_b: it gets its own catch-up.
    And a ledger file made before catch-ups (dl_sent without jump_from, no dl_marks) opens."""
    import sqlite3
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE dl_streams (terminal INTEGER PRIMARY KEY, version INTEGER NOT NULL DEFAULT 0,
            change_id INTEGER NOT NULL DEFAULT 0, included INTEGER NOT NULL DEFAULT 0, reported INTEGER,
            reported_state INTEGER, reported_t INTEGER);
        CREATE TABLE dl_sent (terminal INTEGER NOT NULL, version INTEGER NOT NULL, payload BLOB, first INTEGER,
            PRIMARY KEY (terminal, version));
        INSERT INTO dl_sent (terminal, version, payload, first) VALUES (9, 3, x'00', 3);
    """)
    db.close()
    led = Ledger(path, synchronous="OFF", clock=lambda: T0)
    Downlink(led, {SITE: KEY})
    cols = [r[1] for r in led.db.execute("PRAGMA table_info(dl_sent)")]
    assert "jump_from" in cols and led.db.execute("SELECT count(*) FROM dl_marks").fetchone()[0] == 0
    assert led.db.execute("SELECT version, first, jump_from FROM dl_sent").fetchall() == [(3, 3, None)]
    led.close()

    led, dl = school(cards=400)
    a = Terminal(1)
    a.take(a.ask(dl))
    a.take(dl.pump())
    at_a = a.table.version
    a_school_day(led, dl, changes=300, accounts=40, step=10)
    b_have = dl._stream(1)[0]  # the same terminal, had it stayed a little longer
    a_school_day(led, dl, changes=300, accounts=40, step=10, seed=6)
    out_a = dl.on_request(SITE, "t0001", protocol.encode_sync(at_a, 1, False, 7))
    assert kinds(out_a[:-1])[0][0] == carddelta.JUMP
    # asked again from exactly at_a (the answer was lost): the same catch-up, byte for byte
    assert dl.on_request(SITE, "t0001", protocol.encode_sync(at_a, 1, False, 9))[:-1] == out_a[:-1]
    out_b = dl.on_request(SITE, "t0001", protocol.encode_sync(b_have, 1, False, 8))
    jumps = [v for k, v in kinds(out_b[:-1]) if k == carddelta.JUMP]
    assert len(jumps) == 1 and jumps[0] > kinds(out_a[:-1])[-1][1], jumps  # its own jump, from b_have
    assert dl.catchups == 2
