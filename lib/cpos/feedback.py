"""What the student sees and hears for each decision: LED colour, buzzer rhythm, text.

Owns the patterns (one per reason, all distinct) and `Feedback`, which plays them
on a board's outputs without blocking the event loop. "No read" has no pattern: a
tap the reader did not read makes no sound and no text, by design.

A board's outputs object provides: `led(colour)` with colour in LED_*,
`buzzer(on)`, and `display(line1, line2)`.

A new decision always takes over at once: the pattern still playing is cut short,
so every student sees their own answer, never the previous customer's.
"""
import asyncio

from cpos import money, reasons, texts
from cpos.compat import const

LED_OFF = const(0)
LED_GREEN = const(1)
LED_RED = const(2)
LED_AMBER = const(3)

# Buzzer rhythms as (on_ms, off_ms) pairs. Approval: one short beep. Each refusal
# starts with a long low-pitched-sounding 400 ms tone, then its own count of short
# beeps, so staff can tell reasons apart by ear: reason code n -> n short beeps.
_APPROVED_BEEP = ((120, 0),)
_BALANCE_BEEP = ((40, 0),)
_LONG = 400
_SHORT = 80
_GAP = 90
_LED_HOLD_MS = const(1500)


def beeps(code):
    """Buzzer rhythm for a reason code."""
    if code == reasons.APPROVED or code == reasons.REVERSED:  # a refund: the happy beep
        return _APPROVED_BEEP
    return ((_LONG, 150),) + ((_SHORT, _GAP),) * code


def led(code):
    """LED colour for a reason code."""
    if code == reasons.REVERSED:
        return LED_AMBER
    return LED_GREEN if code == reasons.APPROVED else LED_RED


def lines(code, amount, balance):
    """Two display lines: the Danish text and the English text with the amount or balance."""
    if code == reasons.APPROVED or code == reasons.REVERSED:  # the amount taken, or given back
        return ("%s %s" % (texts.danish(code), money.format_kr(amount)),
                "%s - %s %s" % (texts.english(code), texts.BALANCE_EN.lower(), money.format_kr(balance)))
    return (texts.danish(code), texts.english(code))


class Feedback:
    """Plays patterns on a board's outputs; `await show(...)` returns when the pattern ends."""

    def __init__(self, outputs, sleep_ms):
        self.outputs = outputs
        self._sleep_ms = sleep_ms
        self.shown = 0
        self.cut_short = 0
        self._task = None
        self._gen = 0

    def play(self, coro):
        """Start a pattern (`decision(...)`, `balance(...)`) in its own task, cutting
        short the one still playing. Returns at once."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self.cut_short += 1
        self._task = asyncio.create_task(coro)

    async def _play(self, colour, rhythm, line1, line2):
        self._gen += 1
        gen = self._gen
        out = self.outputs
        out.display(line1, line2)
        out.led(colour)
        finished = False
        try:
            for on_ms, off_ms in rhythm:
                out.buzzer(True)
                await self._sleep_ms(on_ms)
                out.buzzer(False)
                if off_ms:
                    await self._sleep_ms(off_ms)
            await self._sleep_ms(_LED_HOLD_MS)
            out.led(LED_OFF)
            self.shown += 1
            finished = True
        finally:
            if not finished and gen == self._gen:  # stopped, and no newer pattern owns the buzzer
                out.buzzer(False)

    async def decision(self, code, amount, balance):
        l1, l2 = lines(code, amount, balance)
        await self._play(led(code), beeps(code), l1, l2)

    async def balance(self, balance):
        """A tap with no open payment: show the balance."""
        await self._play(LED_AMBER, _BALANCE_BEEP,
                         "%s %s" % (texts.BALANCE_DA, money.format_kr(balance)),
                         "%s %s" % (texts.BALANCE_EN, money.format_kr(balance)))

    async def unknown_for_balance(self, code):
        """A tap with no open payment whose card cannot show a balance (unknown, replaced...)."""
        await self._play(LED_RED, beeps(code), texts.danish(code), texts.english(code))
