"""The journal and the synced table together (cpos.net.sync, cpos.net.journal_feed, cpos.cards.unincluded):
a purchase leaves the journal only when both the backend's ack and the synced table's
included_seq cover it, so pending purchases rebuilt at boot are never short; and the view
of an account is synced balance - own purchases above included_seq at every step, across
reboots. Both runtimes; MicroPython under the WROOM heap cap."""
from cardtable_model import FLASH
from cpos.cards import delta
from cpos.net import signing
from cpos.cards import unincluded
from cpos.cards.table import CardTable, FOUND
from cpos.journal import Journal
from cpos.rules import CardRecord, Spends, PLACE_SCHOOL, TILL
from cpos.net.sync import Sync
from cpos.net.journal_feed import JournalFeed
from downlink_fakes import KEY, TOPIC, UID, FakeClient, snapshot
from simulator.norflash import NorFlash

T = 1764072000


class Terminal:
    def __init__(self, jdev):
        self.journal = Journal(jdev)
        self.journal.recover()
        self.table = CardTable(FLASH)
        self.pending = unincluded.Unincluded()
        self.pending.rebuild(self.journal, self.table.included_seq)
        self.feed = JournalFeed(self.journal, ack_limit=lambda: self.table.included_seq)
        self.client = FakeClient()
        self.sync = Sync(self.table, self.client, "skole-nord", "t0001", KEY, on_included=self.included)

    def included(self, seq):  # what firmware/app.py does
        self.pending.advance(self.journal, seq)
        self.feed.release()

    def buy(self, amount):
        seq = self.journal.append(T, UID, 1, amount, PLACE_SCHOOL, TILL, 1, "1x Toast", 0, 0, False)
        self.pending.add(seq, 1, PLACE_SCHOOL, amount, T)
        return seq

    def view(self):
        card, sp = CardRecord(), Spends()
        assert self.table.lookup(UID, card, sp) == FOUND
        return card.balance - self.pending.amount(1)

    def hear(self, msg):
        self.client.handler(TOPIC, msg, False)


def _balance(k, version, inc, bal):
    return signing.encode(k, TOPIC, signing.DELTA, version,
                           delta.encode(version, inc, delta.BALANCE, account=1, value=bal))


def test_release_waits_for_the_table_and_reboots_lose_nothing():
    FLASH.wipe(3)
    k = signing.Key(KEY)
    first = snapshot(k, 1, 0, balance=10000)
    jdev = NorFlash(8 * 512, sector=512)
    t = Terminal(jdev)
    for m in first:
        t.hear(m)
    first = None
    assert (t.table.version, t.view()) == (1, 10000)
    for _ in range(3):
        t.buy(1000)
    assert t.view() == 7000
    t.feed.ack(3)  # the backend has all three...
    assert t.feed.acked == 3 and t.journal.watermark == 0  # ...but the table includes none: kept
    t = Terminal(jdev)  # reboot
    assert t.view() == 7000 and t.pending.count == 3
    t.feed.ack(3)
    t.hear(_balance(k, 2, 2, 8000))  # the backend's balance after purchases 1 and 2
    assert (t.table.included_seq, t.journal.watermark, t.pending.count) == (2, 2, 1)
    assert t.view() == 7000  # 8000 synced - 1000 (seq 3) pending: nothing twice, nothing forgotten
    t = Terminal(jdev)  # reboot again: seq 3 is still in the journal
    assert t.view() == 7000 and t.pending.count == 1
    t.feed.ack(3)
    t.hear(_balance(k, 3, 3, 7000))
    assert (t.journal.watermark, t.pending.count, t.view()) == (3, 0, 7000)


def test_a_held_release_waits_for_a_sectors_worth_unless_forced_or_short_of_room():
    """JournalFeed(hold=N): each release takes a journal slot, so in a rush the feed records
    one per N acknowledged records; `release(True)` (the app's quiet moment) and a journal
    short of room record it at once. The uplink's view (`acked`) moves at every ack."""
    dev = NorFlash(6 * 512, sector=512)  # 6 sectors of 7 slots
    j = Journal(dev)
    j.recover()
    feed = JournalFeed(j, hold=j.slots)
    for _ in range(10):
        j.append(T, UID, 1, 100, PLACE_SCHOOL, TILL, 1, "1x Toast", 0, 0, False)
    feed.ack(3)
    assert (feed.acked, j.watermark, feed.held()) == (3, 0, 3)  # acknowledged, not yet recorded
    assert feed.oldest_unacked() == 4  # ...and not sent again
    rebooted = Journal(dev)  # a power cut now forgets what was held: the uplink sends it once more
    rebooted.recover()
    assert JournalFeed(rebooted, hold=j.slots).oldest_unacked() == 1
    feed.ack(6)
    assert (j.watermark, feed.held()) == (0, 6)
    feed.ack(7)  # a sector's worth (7 slots): recorded
    assert (j.watermark, feed.held()) == (7, 0)
    feed.ack(9)
    assert j.watermark == 7 and feed.release(True) and (j.watermark, feed.held()) == (9, 0)
    assert not feed.release(True)  # nothing held: nothing written
    # short of room: fewer than two sectors' slots free for purchases records at once
    while j.fill()[1] - j.fill()[0] >= 2 * j.slots:
        j.append(T, UID, 1, 100, PLACE_SCHOOL, TILL, 1, "1x Toast", 0, 0, False)
    feed.ack(10)
    assert (j.watermark, feed.held()) == (10, 0)
