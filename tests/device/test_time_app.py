"""The "time unknown" policy through the application's tap path, on both runtimes.

After a power-on the board's clock reads 2000-01-01 and did not keep time
(`clock_kept()` False): the app must not believe it. docs/rules.md "Time unknown":
till purchases for cards with a limit here are refused `clock_not_set`; without an
offline allowance every purchase is; otherwise a limit-free purchase is approved within
the allowance, stamped with the floor (never before the newest journal record) and
flagged (bit3) so the backend books it at its arrival.
"""
from cpos import purchase, reasons
from cpos import timekeeper as tk

from app_world import LIMITED, NOW, UID, Board, CheckingWriter, boot, fresh_flash, pay

POWER_ON = 946684800
ALLOWANCE = {"threshold_s": 600, "allowance_ore": 3000}


class PowerOnBoard(Board):
    """An ESP32 right after a power-on: its clock counts from 2000-01-01 and says so."""

    def __init__(self):
        Board.__init__(self)
        self.t = POWER_ON + 3

    def clock_kept(self):
        return False

    def set_time(self, t):
        self.t = t


def records(app):
    out = []
    buf = bytearray(purchase.SIZE)
    for seq in range(1, app.journal.next_seq):
        if app.journal.read(seq, buf, True) == seq:
            out.append(purchase.decode(buf))
    return out


def test_without_an_offline_allowance_nothing_is_approved_while_the_time_is_unknown():
    fresh_flash()
    board = PowerOnBoard()
    app = boot(board)
    assert not app.clock.known and app.clock.now() == tk.BUILD_FLOOR
    w = CheckingWriter()
    pay(app, w, 500)
    pay(app, w, 500, uid=LIMITED, ref="r2")
    assert w.lines == ["REFUSED r1 clock_not_set", "REFUSED r2 clock_not_set"]
    assert app.journal.next_seq == 1  # nothing recorded
    board.close()


def test_with_an_allowance_limit_free_purchases_pass_flagged_and_limited_ones_are_refused():
    fresh_flash()
    board = PowerOnBoard()
    app = boot(board, offline=ALLOWANCE)
    w = CheckingWriter()
    pay(app, w, 2000)
    pay(app, w, 1500, ref="r2")  # past the 30 kr allowance since the (unknown) last sync
    pay(app, w, 500, uid=LIMITED, ref="r3")  # a day limit at this school: its window is unknown
    assert w.lines == ["APPROVED r1 1 2000 8000", "REFUSED r2 insufficient_funds", "REFUSED r3 clock_not_set"]
    (rec,) = records(app)
    assert rec["time_unknown"] is True and rec["t"] == tk.BUILD_FLOOR
    board.close()


def test_after_a_power_cut_the_floor_is_the_newest_record_and_a_lying_source_below_it_is_refused():
    fresh_flash()
    board = Board()  # clock kept: the time is NOW
    app = boot(board, offline=ALLOWANCE)
    w = CheckingWriter()
    pay(app, w, 700)
    assert app.clock.known and records(app)[0]["t"] == NOW
    board.close()
    board = PowerOnBoard()  # the plug is pulled and put back: the app starts over from flash
    app = boot(board, offline=ALLOWANCE)
    assert not app.clock.known and app.clock.floor() == NOW and app.clock.floor_why == "journal"
    assert not app.clock.offer(tk.SNTP, NOW - 86400)  # a source a day behind: refused, still unknown
    assert not app.clock.known
    board.t += 5  # five seconds of uptime
    pay(app, w, 300, ref="r2")
    rec = records(app)[-1]
    assert rec["seq"] == 2 and rec["t"] == NOW + 5 and rec["time_unknown"] is True
    app._backend_time(NOW + 3600, 20)  # the signed backend answers: the time is known again
    assert app.clock.known and board.t == NOW + 3600  # and the board's clock is set from it
    pay(app, w, 400, ref="r3")
    rec = records(app)[-1]
    assert rec["t"] == NOW + 3600 and "time_unknown" not in rec
    import sys

    h = app.health() if sys.implementation.name == "micropython" else app.clock.status()  # gc.mem_free
    assert h["time_known"] and h["time_source"] == "backend" and h["time_sources"]["sntp"]["refused"] == 1
    board.close()


def test_a_board_clock_kept_across_a_soft_reset_is_believed_once_above_the_floor():
    fresh_flash()
    board = Board()
    app = boot(board)
    w = CheckingWriter()
    pay(app, w, 700)
    board.close()
    board = Board()  # a soft reset: the clock kept counting, but it was set back meanwhile
    board.t = NOW - 60
    app = boot(board)
    assert not app.clock.known  # behind the newest record: refused (W), the time is unknown
    pay(app, w, 300, ref="r2")
    assert w.lines[-1] == "REFUSED r2 clock_not_set" and app.journal.next_seq == 2
    board.close()


class KeepingBoard(PowerOnBoard):
    """A power-on board whose config folder survives the power cut (the ESP32's filesystem)."""

    def config_path(self):
        return FLOOR_DIR + "config.json"


import os  # noqa: E402

FLOOR_DIR = (os.getenv("CPOS_TMP") or "/tmp") + "/cpos_test_floor_"


def _forget_floor():
    for name in ("time_floor", "time_floor.new"):
        try:
            os.remove(FLOOR_DIR + name)
        except OSError:
            pass


def test_the_newest_backend_time_is_the_floor_after_a_power_cut():
    """Invariant 8 across a power cut: a time the backend gave (newer than any journal
    record: an idle terminal) is kept beside the config, so the floor after a power-on
    without any source is not below it; an unreadable file falls back to the journal."""
    fresh_flash()
    _forget_floor()
    board = KeepingBoard()
    app = boot(board, offline=ALLOWANCE)
    backend_t = NOW + 86400  # the backend's time: a day after anything in the journal
    assert app.clock.offer(tk.BACKEND, backend_t)
    board.close()
    board = KeepingBoard()  # power cut: the board's clock reads 2000 again, and no source answers
    app = boot(board, offline=ALLOWANCE)
    assert not app.clock.known and app.clock.floor() >= backend_t and app.clock.floor_why == "backend (kept)"
    w = CheckingWriter()
    pay(app, w, 500)  # limit-free, within the allowance: approved, stamped at the floor
    assert w.lines[0].startswith("APPROVED r1 ")
    assert records(app)[-1]["t"] >= backend_t and records(app)[-1]["time_unknown"] is True
    board.close()
    with open(FLOOR_DIR + "time_floor", "w") as f:
        f.write("garbage\n")
    board = KeepingBoard()
    app = boot(board, offline=ALLOWANCE)
    assert app.clock.floor_why == "journal" and app.clock.floor() >= records(app)[-1]["t"]
    board.close()
    _forget_floor()
