"""Feedback patterns (cpos.feedback): distinct per reason, played without blocking."""
import asyncio

from cpos import feedback, reasons


class Outputs:
    def __init__(self):
        self.events = []

    def led(self, colour):
        self.events.append(("led", colour))

    def buzzer(self, on):
        self.events.append(("buzz", on))

    def display(self, l1, l2):
        self.events.append(("display", l1, l2))


def test_every_reason_has_a_distinct_pattern():
    seen = set()
    for code in range(len(reasons.NAMES)):
        key = (feedback.led(code), feedback.beeps(code), feedback.lines(code, 100, 200))
        assert key not in seen, reasons.name(code)
        seen.add(key)
    assert feedback.led(reasons.APPROVED) == feedback.LED_GREEN
    assert feedback.led(reasons.BLOCKED) == feedback.LED_RED


def test_feedback_plays_display_led_and_buzzer():
    out = Outputs()
    slept = []

    async def sleep_ms(ms):
        slept.append(ms)

    fb = feedback.Feedback(out, sleep_ms)
    asyncio.run(fb.decision(reasons.APPROVED, 4500, 5500))
    assert out.events[0] == ("display", "Godkendt 45.00 kr.", "Approved - balance 55.00 kr.")
    assert out.events[1] == ("led", feedback.LED_GREEN)
    assert out.events.count(("buzz", True)) == 1
    assert out.events[-1] == ("led", feedback.LED_OFF)
    out.events = []
    asyncio.run(fb.decision(reasons.REPLACED, 4500, 0))
    assert out.events[0][1].startswith("Kortet er erstattet")
    assert out.events.count(("buzz", True)) == 1 + reasons.REPLACED
    out.events = []
    asyncio.run(fb.balance(12345))
    assert out.events[0] == ("display", "Saldo 123.45 kr.", "Balance 123.45 kr.")
    assert fb.shown == 3


def test_a_new_decision_cuts_the_previous_pattern_short():
    out = Outputs()

    async def scenario():
        fb = feedback.Feedback(out, asyncio.sleep_ms if hasattr(asyncio, "sleep_ms") else
                               (lambda ms: asyncio.sleep(ms / 1000)))
        fb.play(fb.decision(reasons.BLOCKED, 100, 0))  # a long pattern: 1 long + 2 short beeps
        await asyncio.sleep(0.05)
        fb.play(fb.decision(reasons.APPROVED, 4500, 5500))
        await asyncio.sleep(0.05)
        return fb, list(out.events)  # CPython cancels what is left when run() ends

    fb, events = asyncio.run(scenario())
    displays = [e for e in events if e[0] == "display"]
    assert displays[-1] == ("display", "Godkendt 45.00 kr.", "Approved - balance 55.00 kr.")
    assert fb.cut_short == 1
    # the approval's beep is on (120 ms) and was not silenced by the cut pattern
    assert events[-1] == ("buzz", True), events[-3:]
