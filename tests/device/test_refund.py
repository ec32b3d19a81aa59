"""Reversals in the firmware application (App.reverse, POS `VOID`), on both runtimes.

Shown here (docs/rules.md "Reversals"; fakes in tests/device/app_world.py):
- a VOID gives the money back at once (the next tap sees it), is answered VOIDED with the
  reversal's own seq, and a second VOID of the same purchase is refused already_reversed,
  also after a reboot (the journal is the only memory);
- the reversal takes the amount out of the day total of the purchase's window, so a limit
  that refused a purchase allows it again;
- what may not be reversed: an unknown seq, a refusal journaled for its top-up trigger, a
  reversal, another terminal's record, a purchase older than the refund window, and any
  reversal when the journal is full; none of them writes anything;
- LAST names a reversal and the purchase it gave back; a vending terminal's reversal is a
  vend failure.
"""
import asyncio

from cpos import purchase, reasons
from cpos.journal import JournalFull

from app_world import LIMITED, LOW, NOW, UID, Board, Writer, boot, fresh_flash, pay
from pos_fakes import Script


def _session(app, lines):
    w = Writer()
    asyncio.run(app.pos.session(Script(lines), w))
    return w.lines


def test_a_void_gives_the_money_back_once_and_the_next_tap_sees_it():
    fresh_flash()
    board = Board()
    app = boot(board)
    w = Writer()
    pay(app, w, 2500)
    assert w.lines == ["APPROVED r1 1 2500 7500"]
    assert app.balance_of(UID, NOW) == (reasons.APPROVED, 7500)
    board.t = NOW + 60
    assert _session(app, [b"VOID v1 1\n", b"VOID v2 1\n", b"LAST\n"]) == [
        "VOIDED v1 1 2 2500 10000", "REFUSED v2 already_reversed",
        "LAST 2 2500 10000 reversed %d 1" % (NOW + 60)]
    assert app.balance_of(UID, NOW + 60) == (reasons.APPROVED, 10000)
    assert app.journal.next_seq == 3  # one reversal record, nothing for the refusal
    buf = bytearray(purchase.SIZE)
    assert app.journal.read(2, buf, True) == 2
    rec = purchase.decode(buf)
    assert (rec["reverses"], rec["orig_t"], rec["cause"], rec["amount"], rec["account"], rec["reason"]) == (
        1, NOW, "void", 2500, 1, reasons.REVERSED)
    assert app._fb_what == ("decision", reasons.REVERSED, 2500, 10000, False, False)  # what the display is told
    board.close()


def test_a_reversal_survives_a_reboot_and_is_never_made_twice():
    fresh_flash()
    board = Board()
    app = boot(board)
    pay(app, Writer(), 1200)
    pay(app, Writer(), 300, ref="r2")
    assert app.reverse(1, NOW + 5) == (reasons.APPROVED, 3, 10000 - 300)
    board.close()
    del app
    board = Board()
    app = boot(board)  # the own pending purchases are rebuilt from the journal: reversal included
    assert app.balance_of(UID, NOW) == (reasons.APPROVED, 9700)
    assert app.reverse(1, NOW + 6) == (reasons.ALREADY_REVERSED, 0, 0)
    assert app.reverse(2, NOW + 7) == (reasons.APPROVED, 4, 10000)
    assert app.reverse(2, NOW + 8) == (reasons.ALREADY_REVERSED, 0, 0)
    assert app.journal.next_seq == 5
    board.close()


def test_a_reversal_takes_the_amount_out_of_the_day_total():
    fresh_flash()
    board = Board()
    app = boot(board)
    w = Writer()
    pay(app, w, 2500, LIMITED)  # day limit 30 kr. at school
    pay(app, w, 1000, LIMITED, "r2")
    assert w.lines == ["APPROVED r1 1 2500 7500", "REFUSED r2 day_limit"]
    assert app.reverse(1, NOW + 30)[0] == reasons.APPROVED
    pay(app, w, 2800, LIMITED, "r3")
    assert w.lines[-1] == "APPROVED r3 3 2800 7200"
    board.close()


def test_what_may_not_be_reversed_is_refused_and_writes_nothing():
    fresh_flash()
    board = Board()
    app = boot(board)
    w = Writer()
    pay(app, w, 500)  # 1: approved
    pay(app, w, 2000, LOW, "r2")  # 2: refused, journaled for its top-up trigger
    assert w.lines == ["APPROVED r1 1 500 9500", "REFUSED r2 insufficient_funds"]
    app.journal.append(NOW, UID, 1, 700, 0, 0, 4242, "1x Other", 9300, reasons.APPROVED)  # 3: terminal 4242
    assert app.reverse(1, NOW)[0] == reasons.APPROVED  # 4: the reversal of 1
    n = app.journal.next_seq
    for seq, code in ((0, reasons.PURCHASE_NOT_FOUND), (5, reasons.PURCHASE_NOT_FOUND),
                      (10 ** 6, reasons.PURCHASE_NOT_FOUND), (2, reasons.NOT_REVERSIBLE),
                      (3, reasons.NOT_REVERSIBLE), (4, reasons.NOT_REVERSIBLE), (1, reasons.ALREADY_REVERSED)):
        assert app.reverse(seq, NOW) == (code, 0, 0), (seq, code)
    pay(app, w, 800, ref="r3")  # 5 at NOW
    assert app.reverse(5, NOW + 901) == (reasons.REVERSAL_TOO_LATE, 0, 0)  # default window 900 s
    assert app.journal.next_seq == n + 1
    assert _session(app, [b"VOID v1 5\n", b"VOID v1\n", b"VOID v1 x\n", b"VOID v1 99999999999\n"]) == [
        "VOIDED v1 5 6 800 10000", "ERR v1 bad-void", "ERR v1 bad-void", "ERR v1 bad-void"]
    board.close()


def test_a_full_journal_refuses_the_reversal_and_writes_nothing():
    fresh_flash()
    board = Board()
    app = boot(board)
    pay(app, Writer(), 100)
    try:
        while True:
            app.journal.append(NOW, UID, 1, 1, 0, 0, 9, "", 0, reasons.APPROVED)
    except JournalFull:
        pass
    n = app.journal.next_seq
    assert app.reverse(1, NOW) == (reasons.TERMINAL_FULL, 0, 0)
    assert app.journal.next_seq == n
    board.close()


def test_a_vend_failure_at_a_vending_terminal():
    fresh_flash()
    board = Board()
    app = boot(board, "vending")
    app.pos.request.set("v1", 1500, "1x Cola", Writer())
    asyncio.run(app.on_tap(memoryview(UID), 0))
    assert app.reverse(1, NOW + 3) == (reasons.APPROVED, 2, 10000)
    buf = bytearray(purchase.SIZE)
    assert app.journal.read(2, buf, True) == 2
    assert purchase.decode(buf)["cause"] == "vend_failure"
    assert app.last_line() == "LAST 2 1500 10000 reversed %d 1\n" % (NOW + 3)
    board.close()


def test_own_pending_counts_a_reversal_in_the_purchase_window_until_included():
    from cpos import rules
    from cpos.cards import unincluded
    from cpos.journal import Journal
    from simulator.norflash import NorFlash

    j = Journal(NorFlash(3 * 4096))
    j.recover()
    day = 86400
    # Tue 2025-11-25: seq 1 on Monday (same ISO week), seq 2 today, seq 3 gives seq 1 back today
    j.append(NOW - day, UID, 7, 1500, rules.PLACE_SCHOOL, rules.TILL, 9, "1x A", 0, reasons.APPROVED)
    j.append(NOW, UID, 7, 500, rules.PLACE_SCHOOL, rules.TILL, 9, "1x B", 0, reasons.APPROVED)
    j.append_reversal(NOW, UID, 7, 1500, rules.PLACE_SCHOOL, rules.TILL, 9, "1x A", 0, 1, NOW - day,
                      purchase.CAUSE_VOID)
    p = unincluded.Unincluded()

    def seen():
        card, s = rules.CardRecord(), rules.Spends()
        card.account = 7
        p.apply_to(card, s, NOW)
        return -card.balance, [s.spent(rules.PLACE_SCHOOL, w, NOW) for w in range(3)], p.count

    p.rebuild(j, 0)
    assert seen() == (500, [500, 500, 500], 3)  # the reversal leaves today's total alone
    p.advance(j, 1)  # the backend now includes the purchase (its totals count it): the reversal is still own
    assert seen() == (-1000, [500, -1000, -1000], 2)
    p.advance(j, 3)
    assert seen() == (0, [0, 0, 0], 0) and p.accounts() == 0
    p.rebuild(j, 1)  # the same from a reboot
    assert seen() == (-1000, [500, -1000, -1000], 2)
    # A reversal counted alone (its purchase already included) starts the purchase's windows
    q = unincluded.Unincluded()
    q.clear(1)
    q.add_reversal(3, 7, rules.PLACE_SCHOOL, 1500, NOW - day)
    card, s = rules.CardRecord(), rules.Spends()
    card.account = 7
    q.apply_to(card, s, NOW)
    assert (card.balance, s.spent(rules.PLACE_SCHOOL, 0, NOW), s.spent(rules.PLACE_SCHOOL, 1, NOW)) == (1500, 0, -1500)
