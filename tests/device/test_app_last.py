"""The POS `LAST` request in the firmware application, on both runtimes.

The till that lost a reply (power cut, link down) asks `LAST` and compares the seq with
the last APPROVED it heard (docs/pos-protocol.md, "After a lost reply"). Shown here:
- after a purchase is journaled and its reply lost, a fresh App on the same flash (a
  reboot) answers LAST with that purchase; a request that died before any tap adds none;
- a refusal journaled for its top-up trigger is the newest record, with its reason;
- LAST reads acknowledged records still on flash;
- LAST while a payment is open leaves it open; LAST with arguments is ERR.
A module of its own beside tests/device/test_app.py (same fakes, tests/device/app_world.py):
each test runs in a fresh capped heap that the app's modules already fill by half.
"""
import asyncio

from cpos.compat import ticks_ms

from app_world import LOW, NOW, UID, Board, LostWriter, Writer, boot, fresh_flash, pay
from pos_fakes import Script


def test_after_a_power_cut_last_names_the_purchase_whose_reply_was_lost():
    fresh_flash()
    board = Board()
    app = boot(board)
    assert app.last_line() == "LAST - 0\n"  # nothing ever recorded
    w = Writer()
    pay(app, w, 2500)
    assert w.lines == ["APPROVED r1 1 2500 7500"]  # the till remembers seq 1
    assert app.last_line() == "LAST 1 2500 7500 approved %d\n" % NOW
    board.t = NOW + 30
    pay(app, LostWriter(), 700, ref="r2")  # durable, but the reply is lost ...
    assert app.journal.next_seq == 3
    board.close()  # ... and the power goes
    del app
    board = Board()
    app = boot(board)
    # seq 2 > 1 and approved: r2 was recorded and will be charged
    assert app.last_line() == "LAST 2 700 6800 approved %d\n" % (NOW + 30)
    # the till now knows seq 2; a request that dies before any tap records nothing
    app.pos.request.set("r3", 900, "1x Test", LostWriter())
    board.close()
    del app
    board = Board()
    app = boot(board)
    assert app.last_line() == "LAST 2 700 6800 approved %d\n" % (NOW + 30)  # 2 <= 2: r3 not recorded
    board.close()


def test_last_reports_a_journaled_refusal_with_its_reason():
    # A refusal is journaled when it triggers the automatic top-up: it is the newest
    # record then, refused (the till charges nothing for it).
    fresh_flash()
    board = Board()
    app = boot(board)
    w = Writer()
    pay(app, w, 500)
    pay(app, w, 2000, LOW, "r2")
    assert w.lines == ["APPROVED r1 1 500 9500", "REFUSED r2 insufficient_funds"]
    assert app.journal.next_seq == 3
    assert app.last_line() == "LAST 2 2000 1000 insufficient_funds %d\n" % NOW
    pay(app, w, 300, ref="r3")
    assert app.last_line() == "LAST 3 300 9200 approved %d\n" % NOW
    board.close()


def test_last_reads_a_record_that_was_acknowledged_but_is_still_on_flash():
    fresh_flash()
    board = Board()
    app = boot(board)
    w = Writer()
    pay(app, w, 500)
    pay(app, w, 600, ref="r2")
    assert app.journal.ack(2)  # uploaded and released; its sector is not erased yet
    assert app.last_line() == "LAST 2 600 8900 approved %d\n" % NOW
    board.close()


def test_last_while_a_payment_is_open_leaves_it_open():
    fresh_flash()
    board = Board()
    app = boot(board)
    w = Writer()
    pay(app, w, 400)
    seen = []

    async def still_open():
        seen.append((app.pos.request.open, app.pos.request.ref))

    async def tap():
        await app.on_tap(memoryview(UID), ticks_ms())

    asyncio.run(app.pos.session(Script([
        b"PAY r2 1500 1x Pasta\n", b"LAST\n", still_open, b"LAST r2\n", still_open, tap,
        b"LAST\r\n", b"CANCEL r2\n"]), w))
    assert seen == [(True, "r2"), (True, "r2")]
    assert w.lines == ["APPROVED r1 1 400 9600", "WAIT r2", "LAST 1 400 9600 approved %d" % NOW,
                       "ERR - bad-last", "APPROVED r2 2 1500 8100", "LAST 2 1500 8100 approved %d" % NOW,
                       "ERR r2 not-open"]
    board.close()


def test_last_at_a_vending_terminal_too():
    fresh_flash()
    board = Board()
    app = boot(board, "vending")
    w = Writer()
    asyncio.run(app.pos.session(Script([b"LAST\n", b"PAY r1 100 x\n", b"LAST\n"]), w))
    assert w.lines == ["LAST - 0", "ERR r1 wrong-kind", "LAST - 0"]
    board.close()
