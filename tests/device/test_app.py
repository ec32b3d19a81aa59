"""The firmware application's tap path, on both runtimes (supervision: test_app_tasks.py).

The fake board and till are tests/device/app_world.py (file-backed flash, recorded
outputs, a counting watchdog; no PN532: tests/test_firmware_e2e.py drives the whole
board through the emulator). What is shown here:
- an approval reaches the POS only after its record is durable (read back from
  flash by a second journal, recovering from the bytes alone);
- after a power cut (the app object dropped, a new one recovered from flash) the
  terminal still counts its own unsynced purchases, once;
- a vending terminal ignores the till limits; the offline policy caps a card once the
  last sync is stale, and nothing without one.
"""
from cpos import reasons

from app_world import LIMITED, NOW, UID, Board, CheckingWriter, boot, fresh_flash, pay


def test_an_approval_is_on_flash_before_the_pos_hears_it():
    fresh_flash()
    board = Board()
    app = boot(board)
    w = CheckingWriter()
    pay(app, w, 2500)
    pay(app, w, 700, ref="r2")
    assert w.lines == ["APPROVED r1 1 2500 7500", "APPROVED r2 2 700 6800"]
    assert w.on_flash == [2500, 700]
    board.close()


def test_own_purchases_survive_a_power_cut_and_count_once():
    fresh_flash()
    board = Board()
    app = boot(board)
    w = CheckingWriter()
    pay(app, w, 2000, LIMITED)
    pay(app, w, 1000, LIMITED, "r2")
    board.close()  # the plug is pulled: nothing of the old app survives but flash
    board = Board()
    app = boot(board)
    assert app.unincluded.count == 2
    assert app.balance_of(memoryview(LIMITED), NOW) == (reasons.APPROVED, 7000)
    w = CheckingWriter()
    pay(app, w, 100, LIMITED, "r3")  # the 30 kr daily limit counts the purchases from before the cut
    assert w.lines == ["REFUSED r3 day_limit"]
    pay(app, w, 100, UID, "r4")
    assert w.lines[-1] == "APPROVED r4 3 100 9900"  # sequence numbers go on
    board.close()


def test_vending_terminal_approves_past_till_limits():
    fresh_flash()
    board = Board()
    app = boot(board, "vending")
    w = CheckingWriter()
    pay(app, w, 3000, LIMITED)
    pay(app, w, 3000, LIMITED, "r2")
    assert w.lines == ["APPROVED r1 1 3000 7000", "APPROVED r2 2 3000 4000"]
    board.close()


class FakeSync:
    """What the tap path reads of cpos.net.sync.Sync: when authentic news last arrived."""

    def __init__(self, last_contact):
        self.last_contact = last_contact

    async def settled(self):
        pass


def test_offline_policy_caps_a_card_once_the_last_sync_is_stale():
    """config `offline` (docs/offline.md): fresh view -> the balance rule only; stale or
    never synced -> at most allowance_ore since the last sync, counted from own pending."""
    fresh_flash()
    board = Board()
    app = boot(board, offline={"threshold_s": 600, "allowance_ore": 3000})
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
    assert app.journal.next_seq == 5 and app.unincluded.amount(1) == 7000
    board.close()


def test_without_an_offline_section_nothing_is_capped():
    fresh_flash()
    board = Board()
    app = boot(board)
    w = CheckingWriter()
    pay(app, w, 6000)
    pay(app, w, 3000, ref="r2")
    assert w.lines == ["APPROVED r1 1 6000 4000", "APPROVED r2 2 3000 1000"]
    board.close()
