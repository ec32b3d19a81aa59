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
