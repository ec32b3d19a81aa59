"""The firmware application's tap path and supervision, on both runtimes.

A fake board gives the app file-backed flash, recorded outputs and a counting
watchdog; the PN532 is not involved (tests/test_firmware_e2e.py drives the whole
board through the emulator). What is shown here:
- an approval reaches the POS only after its record is durable (read back from
  flash by a second journal, recovering from the bytes alone);
- after a power cut (the app object dropped, a new one recovered from flash) the
  terminal still counts its own unsynced purchases, once;
- the watchdog is fed only while the reader task reports in;
- a task that raises stops the app for a clean restart, with nothing recorded lost.
"""
import asyncio

from cpos import cardfmt, carddelta, cardtable, config, log, purchase, reasons, rules
from cpos.blockfile import BlockFile
from cpos.compat import ticks_ms
from cpos.journal import Journal

from app import App

NOW = 1764068400
UID = b"\x04\x11\x22\x33"
LIMITED = b"\x04\x11\x22\x44"
import os

_DIR = (os.getenv("CPOS_TMP") or "/tmp") + "/cpos_test_app_"  # a folder of this process's own


def _cfg(kind="till", offline=None):
    d = {"terminal_id": "t9", "terminal_no": 9, "site": "test", "place": "school", "kind": kind,
         "pn532": {"link": "tcp", "host": "127.0.0.1", "port": 1}, "pos": {"link": "none"},
         "storage": {"journal": {"file": _DIR + "journal.bin", "size": 4 * 4096},
                     "cardtable": {"file": _DIR + "cards.bin", "size": 16 * 4096}}}
    if offline is not None:
        d["offline"] = offline
    return config.validate(d)


class Outputs:
    def __init__(self):
        self.events = []

    def led(self, c):
        self.events.append(("led", c))

    def buzzer(self, on):
        self.events.append(("buzz", on))

    def display(self, a, b):
        self.events.append(("display", a))


class Board:
    def __init__(self):
        self.out = Outputs()
        self.feeds = 0
        self.t = NOW
        self.devs = []

    def block_device(self, spec):
        d = BlockFile(spec["file"], spec["size"])
        self.devs.append(d)
        return d

    def outputs(self, spec):
        return self.out

    def now(self):
        return self.t

    def watchdog(self, ms):
        return self

    def feed(self):
        self.feeds += 1

    def close(self):
        for d in self.devs:
            d.close()


def fresh_flash():
    """Erased journal, and a card table holding two cards of two accounts."""
    import gc

    gc.collect()  # the previous test's apps are garbage: their 4 KB block buffers with them
    for name in ("journal.bin", "cards.bin"):
        try:
            os.remove(_DIR + name)
        except OSError:
            pass
    cfg = _cfg()
    dev = BlockFile(cfg.storage["cardtable"]["file"], cfg.storage["cardtable"]["size"])
    limits = [rules.NO_LIMIT] * 6
    limits[rules.slot(rules.PLACE_SCHOOL, 0)] = 3000
    accounts = {1: (10000, rules.ALL_PLACES, [rules.NO_LIMIT] * 6, False, 0, (0, 0, 0), [0] * 6),
                2: (10000, rules.ALL_PLACES, limits, False, 0, (0, 0, 0), [0] * 6)}
    # The image streams into the table a block at a time, as snapshots arrive: one 8 KB
    # piece for the whole image would leave the capped heap no room for the app's tests.
    b = cardfmt.ImageBuilder([(UID, 1, rules.ACTIVE), (LIMITED, 2, rules.ACTIVE)], accounts, 1, 0)
    t = cardtable.CardTable(dev)
    t.mount()
    assert t.install_begin(1, 0, b.n_pages + 1) == cardtable.INSTALL_OK
    got = []
    b.write(lambda block: got.append(t.install_chunk(len(got), block)))
    assert got == [cardtable.INSTALL_OK] * (b.n_pages + 1), got
    assert t.install_commit() == cardtable.INSTALL_OK
    dev.close()
    BlockFile(cfg.storage["journal"]["file"], cfg.storage["journal"]["size"]).close()


def new_app(board, kind="till", offline=None):
    import gc

    gc.collect()  # several boots in one process here; a device boots once per reset
    app = App(board, _cfg(kind, offline), log.Log(lambda line: None))
    app.recover()
    return app


class CheckingWriter:
    """A POS connection that, as each reply arrives, reads the journal back from flash."""

    def __init__(self):
        self.lines = []
        self.on_flash = []

    def write(self, data):
        line = bytes(data).decode()
        self.lines.append(line.strip())
        if line.startswith("APPROVED"):
            seq = int(line.split()[2])
            cfg = _cfg()
            dev = BlockFile(cfg.storage["journal"]["file"], cfg.storage["journal"]["size"])
            j = Journal(dev)
            j.recover()
            buf = bytearray(purchase.SIZE)
            found = j.read(seq, buf, True)
            self.on_flash.append(found == seq and purchase.decode(buf)["amount"])
            dev.close()

    async def drain(self):
        pass


def pay(app, writer, amount, uid=UID, ref="r1"):
    app.request.set(ref, amount, "1x Test", writer)
    asyncio.run(app.on_tap(memoryview(uid), ticks_ms()))


def test_an_approval_is_on_flash_before_the_pos_hears_it():
    fresh_flash()
    board = Board()
    app = new_app(board)
    w = CheckingWriter()
    pay(app, w, 2500)
    pay(app, w, 700, ref="r2")
    assert w.lines == ["APPROVED r1 1 2500 7500", "APPROVED r2 2 700 6800"]
    assert w.on_flash == [2500, 700]
    board.close()


def test_own_purchases_survive_a_power_cut_and_count_once():
    fresh_flash()
    board = Board()
    app = new_app(board)
    w = CheckingWriter()
    pay(app, w, 2000, LIMITED)
    pay(app, w, 1000, LIMITED, "r2")
    board.close()  # the plug is pulled: nothing of the old app survives but flash
    board = Board()
    app = new_app(board)
    assert app.pending.count == 2
    assert app.balance_of(memoryview(LIMITED), NOW) == (reasons.APPROVED, 7000)
    w = CheckingWriter()
    pay(app, w, 100, LIMITED, "r3")  # the 30 kr daily limit counts the purchases from before the cut
    assert w.lines == ["REFUSED r3 day_limit"]
    pay(app, w, 100, UID, "r4")
    assert w.lines[-1] == "APPROVED r4 3 100 9900"  # sequence numbers go on
    board.close()


def test_watchdog_is_fed_only_while_the_reader_reports():
    fresh_flash()
    board = Board()
    app = new_app(board)

    async def watch(stale):
        app._beat_reader = ticks_ms() - (20000 if stale else 0)
        task = asyncio.create_task(app.watchdog_task())
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0)

    asyncio.run(watch(True))
    assert board.feeds == 0
    asyncio.run(watch(False))
    assert board.feeds == 1
    board.close()


def test_a_long_compaction_feeds_the_watchdog_while_it_progresses():
    # A compaction holds the event loop (tens of seconds on an ESP32 at 100,000 cards):
    # the watchdog task cannot run, so the table's progress hook feeds it, at most once
    # a second, and not once a task has failed.
    fresh_flash()
    board = Board()
    app = new_app(board)
    assert app.table.progress == app._compacting
    app._wdt = board
    app._fed = ticks_ms() - 1500
    d = carddelta.encode(2, 0, carddelta.BALANCE, account=1, value=500)
    assert app.table.apply_delta(d) == cardtable.APPLIED
    assert app.table.compact() == cardtable.INSTALL_OK
    assert board.feeds == 1  # one page, a second and a half after the last feed
    app._compacting()
    assert board.feeds == 1  # not again within the second
    app._fed = ticks_ms() - 1500
    app._failed = "pos"
    app._compacting()
    assert board.feeds == 1  # a failed app is left to the watchdog
    board.close()


def test_the_card_table_compacts_when_the_terminal_is_idle():
    # Deltas fill the overlay; the health task's tick folds them into a new image once no
    # card came for 20 s and no payment is open, instead of the next delta doing it
    # mid-queue. What the deltas said is still there afterwards, and after a reboot.
    fresh_flash()
    board = Board()
    app = new_app(board)
    t = app.table
    v, acct = 2, 1
    while not t.needs_compaction:
        d = carddelta.encode(v, 0, carddelta.BALANCE, account=acct, value=1000 + acct)
        assert t.apply_delta(d) == cardtable.APPLIED
        v, acct = v + 1, acct + 1
        assert acct < 64, "the overlay never asked for a compaction"
    app._last_tap = ticks_ms()
    assert not app.compact_if_idle()  # a card a moment ago: not now
    app._last_tap = ticks_ms() - 21000
    app.request.set("r1", 100, "1x Te", None)
    assert not app.compact_if_idle()  # a payment is open: not now
    app.request.close()
    assert app.compact_if_idle()
    assert not t.needs_compaction and not app.compact_if_idle()  # nothing left to fold
    card, spends = rules.CardRecord(), rules.Spends()
    assert t.lookup(UID, card, spends) == cardtable.FOUND and card.balance == 1001
    assert t.lookup(LIMITED, card, spends) == cardtable.FOUND and card.balance == 1002
    assert t.version == v - 1
    again = cardtable.CardTable(t.dev)  # after a reboot
    assert again.lookup(UID, card, spends) == cardtable.FOUND and card.balance == 1001
    board.close()


class FailingApp(App):
    async def reader_task(self):  # no PN532 here: only report in
        while True:
            self._beat_reader = ticks_ms()
            await asyncio.sleep(0.01)

    def extra_tasks(self):
        return (("boom", self._boom()),)

    async def _boom(self):
        await asyncio.sleep(0.05)
        raise ValueError("a bug")


def test_a_failing_task_stops_the_app_for_a_clean_restart():
    fresh_flash()
    board = Board()
    app = new_app(board)
    w = CheckingWriter()
    pay(app, w, 500)
    lines = []
    failing = FailingApp(board, _cfg(), log.Log(lines.append))
    failing.recover()
    assert asyncio.run(failing.run()) == "boom"
    assert any(line.startswith("E task boom failed") and "a bug" in line for line in lines)
    board.close()
    app = failing = None  # the reset that follows frees everything: so does this process
    asyncio.new_event_loop()  # (cancelled tasks of the run stay queued on the old loop)
    board = Board()
    app = new_app(board)  # as after the reset that follows
    assert app.journal.next_seq == 2 and app.pending.count == 1
    board.close()


def test_vending_terminal_approves_past_till_limits():
    fresh_flash()
    board = Board()
    app = new_app(board, "vending")
    w = CheckingWriter()
    pay(app, w, 3000, LIMITED)
    pay(app, w, 3000, LIMITED, "r2")
    assert w.lines == ["APPROVED r1 1 3000 7000", "APPROVED r2 2 3000 4000"]
    board.close()


class FakeSync:
    """What the tap path reads of cpos.sync.Sync: when authentic news last arrived."""

    def __init__(self, last_contact):
        self.last_contact = last_contact

    async def settled(self):
        pass


def test_offline_policy_caps_a_card_once_the_last_sync_is_stale():
    """config `offline` (docs/offline.md): fresh view -> the balance rule only; stale or
    never synced -> at most allowance_ore since the last sync, counted from own pending."""
    fresh_flash()
    board = Board()
    app = new_app(board, offline={"threshold_s": 600, "allowance_ore": 3000})
    w = CheckingWriter()
    # No sync engine (no downlink) yet: the last sync is unknown, the card is capped at 30 kr.
    pay(app, w, 2000)
    pay(app, w, 1500, ref="r2")  # 2000 + 1500 > 3000: refused although the balance covers it
    pay(app, w, 1000, ref="r3")  # 2000 + 1000 = 3000: still allowed
    assert w.lines == ["APPROVED r1 1 2000 8000", "REFUSED r2 insufficient_funds", "APPROVED r3 2 1000 7000"]
    # The other account has its own allowance.
    pay(app, w, 2500, LIMITED, "r4")
    assert w.lines[-1] == "APPROVED r4 3 2500 7500"
    # Authentic downlink news 10 minutes ago: the view is fresh, only the balance counts.
    app.sync = FakeSync(NOW - 600)
    pay(app, w, 4000, ref="r5")
    assert w.lines[-1] == "APPROVED r5 4 4000 3000"
    pay(app, w, 3500, ref="r6")
    assert w.lines[-1] == "REFUSED r6 insufficient_funds"  # the balance rule itself
    # One second later the news is older than the threshold: capped again (7000 spent > 3000).
    board.t = NOW + 1
    pay(app, w, 100, ref="r7")
    assert w.lines[-1] == "REFUSED r7 insufficient_funds"
    # A refusal by the cap is not journaled (no top-up trigger here) and charges nothing.
    assert app.journal.next_seq == 5 and app.pending.amount(1) == 7000
    board.close()


def test_without_an_offline_section_nothing_is_capped():
    fresh_flash()
    board = Board()
    app = new_app(board)
    w = CheckingWriter()
    pay(app, w, 6000)
    pay(app, w, 3000, ref="r2")
    assert w.lines == ["APPROVED r1 1 6000 4000", "APPROVED r2 2 3000 1000"]
    board.close()


class EndingApp(FailingApp):
    def extra_tasks(self):
        return (("quitter", self._quit()),)

    async def _quit(self):
        await asyncio.sleep(0.05)  # a loop that ends without raising: the task is dead all the same


def test_a_task_that_ends_stops_the_app_and_the_watchdog_feeds():
    import gc

    asyncio.new_event_loop()  # as main.py does after a run: drop tasks an earlier test left queued
    gc.collect()
    fresh_flash()
    board = Board()
    lines = []
    app = EndingApp(board, _cfg(), log.Log(lines.append))
    app.recover()

    async def bounded():
        try:
            return await asyncio.wait_for(app.run(), 2)
        except asyncio.TimeoutError:
            return None  # the ended task went unnoticed

    assert asyncio.run(bounded()) == "quitter"
    assert "E task quitter ended" in lines
    # with a task dead, a fresh reader beat does not feed the watchdog any more
    board.feeds = 0

    async def watch():
        app._beat_reader = ticks_ms()
        task = asyncio.create_task(app.watchdog_task())
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0)

    asyncio.run(watch())
    assert board.feeds == 0
    board.close()
