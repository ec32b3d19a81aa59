"""What the student sees and hears for each decision: LED colour, buzzer rhythm, screen.

Owns the sound of each outcome class (cpos.outcome) and `Feedback`, which plays a
decision on a board's outputs without blocking the event loop. Four rhythms a student
can tell apart by ear, without looking (docs/feedback.md):

    approved            one short high beep                 120 ms
    refused: money      two medium beeps, lower             200 on, 150 off, 200 on
    refused: the card   one long low tone                   800 ms
    terminal problem    six rapid pips                      6 x (50 on, 50 off)

They differ in the number of tones (1, 2, 1, 6) and, where that is equal, in length
(120 vs 800 ms) and pitch, so an active buzzer (one pitch) still tells them apart. A
tap with no payment open gets a 40 ms tick and the balance. "No read" has no pattern:
a tap the reader did not read makes no sound and no text, by design.

A board's outputs object provides `led(colour)` with colour in LED_*, `buzzer(hz)`
(0: off; a board with an active buzzer ignores the pitch) and `display(page)` (a
`cpos.screen.Page`: an OLED board draws it, a console board prints `page.text()`).

Order: the POS has its answer before any of this runs (firmware/app.py shows the
decision after the reply). The LED and the first tone start before the page is drawn,
so the beep does not wait for a display flush. A new decision takes over at once: the
pattern still playing is cut short, so every student sees their own answer.
"""
import asyncio

from cpos import outcome, reasons, screen
from cpos.compat import const

LED_OFF = const(0)
LED_GREEN = const(1)
LED_RED = const(2)
LED_AMBER = const(3)

HIGH = const(2700)  # Hz: the usual piezo's loudest
MID = const(1800)
LOW = const(1000)

# (hz, on_ms, off_ms) per tone, indexed by outcome class.
RHYTHMS = (
    ((HIGH, 120, 0),),  # approved
    ((MID, 200, 150), (MID, 200, 0)),  # refused: money or limits
    ((LOW, 800, 0),),  # refused: the card itself
    ((HIGH, 50, 50),) * 5 + ((HIGH, 50, 0),),  # terminal problem
)
TICK = ((HIGH, 40, 0),)  # a balance shown
LED_HOLD_MS = const(1500)  # the LED stays on this long after the last tone


def rhythm(code):
    """The buzzer rhythm of a reason code: its outcome class's."""
    return RHYTHMS[outcome.of(code)]


def led(code):
    """LED colour for a reason code."""
    if code == reasons.REVERSED:
        return LED_AMBER
    return LED_GREEN if code == reasons.APPROVED else LED_RED


class Feedback:
    """Plays patterns on a board's outputs; `await decision(...)` returns when the pattern ends."""

    def __init__(self, outputs, sleep_ms):
        self.outputs = outputs
        self._sleep_ms = sleep_ms
        self.shown = 0
        self.cut_short = 0
        self._task = None
        self._gen = 0
        self.sounding = False  # a rhythm's tones are playing: no moment for a flash stall (firmware/app.py)

    def play(self, coro):
        """Start a pattern (`decision(...)`, `balance(...)`) in its own task, cutting
        short the one still playing. Returns at once."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self.cut_short += 1
        self._task = asyncio.create_task(coro)

    async def _play(self, colour, tones, page, then=None):
        self._gen += 1
        gen = self._gen
        out = self.outputs
        finished = False
        try:
            out.led(colour)
            first = True
            self.sounding = True
            for hz, on_ms, off_ms in tones:
                out.buzzer(hz)
                if first:  # the beep first, then the page (its flush takes a while on I2C)
                    out.display(page)
                    first = False
                await self._sleep_ms(on_ms)
                out.buzzer(0)
                if off_ms:
                    await self._sleep_ms(off_ms)
            self.sounding = False
            await self._sleep_ms(LED_HOLD_MS)
            out.led(LED_OFF)
            if then is not None:
                out.display(then)
                await self._sleep_ms(LED_HOLD_MS)
            self.shown += 1
            finished = True
        finally:
            if not finished and gen == self._gen:  # stopped, and no newer pattern owns the buzzer
                out.buzzer(0)
                self.sounding = False

    async def decision(self, code, amount, balance, topup=False, offline=False):
        """A decision on a payment. `topup`: it started the automatic top-up (a second
        page says so); `offline`: a refusal because the card reached what it may spend
        here while the terminal is offline (docs/offline.md)."""
        page = screen.offline() if offline and code != reasons.APPROVED else screen.decision(code, amount, balance)
        await self._play(led(code), rhythm(code), page, screen.topup() if topup else None)

    async def balance(self, balance):
        """A tap with no open payment: show the balance."""
        await self._play(LED_AMBER, TICK, screen.balance(balance))

    async def unknown_for_balance(self, code):
        """A tap with no open payment whose card cannot show a balance (unknown, replaced...)."""
        await self._play(LED_RED, rhythm(code), screen.refused(code))
