"""The firmware application's supervision, on both runtimes: the watchdog, failing
and ending tasks, and the card table's upkeep steps.

Fakes: tests/device/app_world.py. What is shown here:
- the watchdog is fed only while the reader task reports in, never once a task has failed;
- the card table's upkeep (a bucket refresh, one bounded step) runs from the health
  tick when no payment is open, and changes nothing a lookup sees;
- acknowledgements the uplink holds back in a rush are recorded at a quiet moment;
- a task that raises or returns stops the app for a clean restart, with nothing
  recorded lost.
"""
import asyncio

from cpos import log, rules
from cpos.blockdev import BLOCK_ERASE
from cpos.cards import delta as carddelta
from cpos.cards import table as cardtable
from cpos.compat import ticks_ms
from cpos.net.journal_feed import JournalFeed

from app import App
from app_world import UID, LIMITED, Board, CheckingWriter, boot, cfg, fresh_flash, pay


def test_watchdog_is_fed_only_while_the_reader_reports():
    fresh_flash()
    board = Board()
    app = boot(board)

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


def _not_while_busy(app, work):
    """`work()` does nothing just after a card or while a payment is open; leaves the
    terminal idle (no card for 21 s, no payment)."""
    app._last_tap = ticks_ms()
    assert not work()  # a card a moment ago: not now
    app._last_tap = ticks_ms() - 21000
    app.pos.request.set("r1", 100, "1x Te", None)
    assert not work()  # a payment is open: not now
    app.pos.request.close()


def test_the_card_table_upkeep_runs_between_payments():
    # Deltas to two accounts fill their bucket past its refresh mark; the health tick
    # rewrites it (one bounded step), not while a payment is open. What the deltas said
    # is still there afterwards, and after a reboot.
    fresh_flash()
    board = Board()
    app = boot(board)
    t = app.table
    v = 2
    while not t.chg.due:
        for acct in (1, 2):
            d = carddelta.encode(v, 0, carddelta.BALANCE, account=acct, value=1000 + v)
            assert t.apply_delta(d) == cardtable.APPLIED
            v += 1
        assert v < 400, "the bucket never asked for a refresh"
    app.pos.request.set("r1", 100, "1x Te", None)
    assert not app.table_upkeep()  # a payment is open: not now
    app.pos.request.close()
    steps = 0
    while app.table_upkeep():
        steps += 1
    assert steps >= 1 and not t.wants_step
    card, spends = rules.CardRecord(), rules.Spends()
    assert t.lookup(UID, card, spends) == cardtable.FOUND and card.balance == 1000 + v - 2
    assert t.lookup(LIMITED, card, spends) == cardtable.FOUND and card.balance == 1000 + v - 1
    assert t.version == v - 1
    board.close()
    app = t = None  # a reboot
    board = Board()
    t = boot(board).table
    assert t.lookup(UID, card, spends) == cardtable.FOUND and card.balance == 1000 + v - 2
    assert t.version == v - 1
    board.close()


def test_the_journal_erases_its_next_sector_when_the_terminal_is_idle():
    # The erase that the purchase opening a new sector would wait for is done at a quiet
    # moment instead; that purchase then only programs, and is on flash as before.
    fresh_flash()
    board = Board()
    app = boot(board)
    _not_while_busy(app, app.prepare_journal_if_idle)
    assert app.prepare_journal_if_idle()
    assert not app.prepare_journal_if_idle()  # done already
    erase = app.journal.dev.ioctl
    erased = []
    app.journal.dev.ioctl = lambda op, arg=0: erased.append(arg) if op == BLOCK_ERASE else erase(op, arg)
    w = CheckingWriter()
    pay(app, w, 500)
    assert w.on_flash == [500] and erased == [], (w.on_flash, erased)
    board.close()


def test_the_journal_erases_ahead_between_two_customers():
    # Not within 300 ms of a card (the student may still be there), then at once: the
    # next customer's purchase finds its sector erased (issue 15: no erase in the tap path).
    fresh_flash()
    board = Board()
    app = boot(board)
    app._last_tap = ticks_ms() - 200
    assert not app.prepare_journal_if_idle()
    app._last_tap = ticks_ms() - 301
    assert app.prepare_journal_if_idle()
    board.close()


def test_the_journal_erases_ahead_right_after_a_decision_before_the_next_request():
    # A till that asks for the next payment within 300 ms of the last card leaves no quiet
    # moment; the decision's reply is the moment: the customer is leaving.
    fresh_flash()
    board = Board()
    app = boot(board)
    w = CheckingWriter()
    pay(app, w, 500)  # a decision answered and shown, the card just left
    assert app._decided
    app.pos.request.set("r2", 100, "1x Te", None)  # the next customer's request is open: not now
    assert not app.prepare_journal_if_idle() and app._decided
    app.pos.request.close()
    app.feedback.sounding = True  # the decision's rhythm still plays: an erase would stretch it
    assert not app.prepare_journal_if_idle() and app._decided
    app.feedback.sounding = False
    app._last_tap = ticks_ms()  # the card was there a moment ago
    assert app.prepare_journal_if_idle() and not app._decided  # at once, not 300 ms after the card
    assert not app.prepare_journal_if_idle()
    board.close()


def test_acknowledgements_held_in_a_rush_are_recorded_at_a_quiet_moment():
    fresh_flash()
    board = Board()
    app = boot(board)
    app.feed = JournalFeed(app.journal, hold=app.journal.slots)  # as the uplink's set-up makes it
    w = CheckingWriter()
    for _ in range(3):
        pay(app, w, 500)
    app.feed.ack(3)
    assert (app.journal.watermark, app.feed.held()) == (0, 3)  # a rush: held, no slot taken
    _not_while_busy(app, app.release_held_if_quiet)
    assert app.release_held_if_quiet() and (app.journal.watermark, app.feed.held()) == (3, 0)
    assert not app.release_held_if_quiet()  # nothing held
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
    app = boot(board)
    w = CheckingWriter()
    pay(app, w, 500)
    lines = []
    failing = FailingApp(board, cfg(), log.Log(lines.append))
    failing.recover()
    assert asyncio.run(failing.run()) == "boom"
    assert any(line.startswith("E task boom failed") and "a bug" in line for line in lines)
    board.close()
    app = failing = None  # the reset that follows frees everything: so does this process
    asyncio.new_event_loop()  # (cancelled tasks of the run stay queued on the old loop)
    board = Board()
    app = boot(board)  # as after the reset that follows
    assert app.journal.next_seq == 2 and app.unincluded.count == 1
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
    app = EndingApp(board, cfg(), log.Log(lines.append))
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
