"""The application's feedback: drawn after the POS reply, with the page each outcome needs.

The app's feedback task runs beside the tap path as on the device; the till's link
and the board's outputs write into one shared record, so the order of what the POS
heard and what the student saw is the order in the record. Only the first moments of
each pattern are looked at (the LED, the first tone and the page come before any
sleep), so no wall clock is involved.
"""
import asyncio

from cpos import texts
from cpos.compat import ticks_ms

from app_world import LOW, UID, Board, boot, fresh_flash
from pos_fakes import Writer


class Record:
    def __init__(self):
        self.items = []


class Till(Writer):
    def __init__(self, record):
        Writer.__init__(self)
        self.record = record

    def write(self, data):
        Writer.write(self, data)
        self.record.items.append(("pos", self.lines[-1]))


class Outputs:
    def __init__(self, record):
        self.record = record

    def led(self, c):
        self.record.items.append(("led", c))

    def buzzer(self, hz):
        self.record.items.append(("buzz", hz))

    def display(self, page):
        self.record.items.append(("display", page))


async def _tap(app, record, amount, uid, ref):
    """A payment and a tap, the app's feedback task running; returns the record's new items."""
    till = Till(record)
    n = len(record.items)
    app.pos.request.set(ref, amount, "1x Test", till)
    await app.on_tap(memoryview(uid), ticks_ms())
    for _ in range(6):  # the feedback task wakes and the pattern reaches its first sleep
        await asyncio.sleep(0)
    return record.items[n:]


def _run(app, steps):
    """Run `steps()` (a coroutine function) beside the app's feedback task, in one event loop."""

    async def go():
        fb = asyncio.create_task(app.feedback_task())
        await asyncio.sleep(0)
        try:
            await steps()
        finally:
            fb.cancel()
            if app.feedback._task is not None:
                app.feedback._task.cancel()
            await asyncio.sleep(0)

    asyncio.run(go())


def _booted(offline=None):
    fresh_flash()
    board = Board()
    record = Record()
    board.out = Outputs(record)
    return board, boot(board, offline=offline), record


def test_the_pos_hears_the_decision_before_the_screen_is_drawn():
    board, app, record = _booted()

    async def steps():
        items = await _tap(app, record, 2500, UID, "r1")
        kinds = [k for k, _ in items]
        assert kinds[0] == "pos" and "display" in kinds, kinds
        assert items[0][1] == "APPROVED r1 1 2500 7500"
        page = [v for k, v in items if k == "display"][0]
        assert page.band == "Godkendt" and page.da == "Godkendt 25.00 kr., saldo 75.00 kr."

    _run(app, steps)
    board.close()


def test_an_offline_cap_refusal_shows_the_offline_page():
    board, app, record = _booted(offline={"threshold_s": 600, "allowance_ore": 3000})

    async def steps():
        items = await _tap(app, record, 4000, UID, "r1")  # no sync yet: capped at 30 kr.
        assert items[0] == ("pos", "REFUSED r1 insufficient_funds")
        assert [v.band for k, v in items if k == "display"] == [texts.OFFLINE]
        items = await _tap(app, record, 2000, UID, "r2")  # under the cap: approved, no offline flag left over
        assert [v.band for k, v in items if k == "display"] == ["Godkendt"]

    _run(app, steps)
    board.close()


def test_a_top_up_trigger_is_remembered_for_the_second_page():
    board, app, record = _booted()

    async def steps():
        await _tap(app, record, 500, LOW, "r1")  # 5 kr. left, under 50 kr.: the automatic top-up fires
        assert app._fb_what[0] == "decision" and app._fb_what[4] is True, app._fb_what
        await _tap(app, record, 100, UID, "r2")
        assert app._fb_what[4] is False

    _run(app, steps)
    board.close()
