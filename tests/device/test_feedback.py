"""Feedback on the outputs' timeline (cpos.feedback): one rhythm per outcome class, told apart
by ear; the beep first, then the page; a new decision cuts the old one short.

Time is virtual: `Feedback` sleeps through the function it is given, here a timeline
that moves only when the test advances it, so every assertion is on exact
milliseconds and no wall clock is involved.
"""
import asyncio

from cpos import feedback, outcome, reasons, screen, texts


class Timeline:
    """A virtual clock for `sleep_ms`: sleepers wake in time order when the test advances it."""

    def __init__(self):
        self.t = 0
        self._sleepers = []  # [wake_ms, n, event]
        self._n = 0

    async def sleep_ms(self, ms):
        ev = asyncio.Event()
        self._n += 1
        self._sleepers.append([self.t + ms, self._n, ev])
        await ev.wait()

    async def _settle(self):
        for _ in range(8):  # let every ready task run until it sleeps again
            await asyncio.sleep(0)

    async def advance(self, until):
        await self._settle()
        while True:
            self._sleepers.sort(key=lambda s: (s[0], s[1]))
            if not self._sleepers or self._sleepers[0][0] > until:
                self.t = until
                return
            wake, _n, ev = self._sleepers.pop(0)
            self.t = wake
            ev.set()
            await self._settle()


class Outputs:
    """Records (virtual ms, what, value)."""

    def __init__(self, clock):
        self.clock = clock
        self.events = []

    def led(self, colour):
        self.events.append((self.clock.t, "led", colour))

    def buzzer(self, hz):
        self.events.append((self.clock.t, "buzz", hz))

    def display(self, page):
        self.events.append((self.clock.t, "display", page))


def tones(events):
    """[(start ms, length ms, hz)] of the buzzer on the timeline."""
    out, on = [], None
    for t, what, v in events:
        if what != "buzz":
            continue
        if v and on is None:
            on = (t, v)
        elif not v and on is not None:
            out.append((on[0], t - on[0], on[1]))
            on = None
    return out


def play(coro_of):
    """Run `coro_of(fb)` to its end on a fresh timeline; returns the outputs' events and the clock."""
    clock = Timeline()
    out = Outputs(clock)
    fb = feedback.Feedback(out, clock.sleep_ms)

    async def main():
        task = asyncio.create_task(coro_of(fb))
        await clock.advance(10000)
        assert task.done()
        return fb

    fb = asyncio.run(main())
    return out.events, fb


ONE_OF_EACH = {outcome.APPROVED: reasons.APPROVED, outcome.MONEY: reasons.DAY_LIMIT,
               outcome.CARD: reasons.BLOCKED, outcome.TERMINAL: reasons.NEEDS_UPDATE}


def test_each_outcome_class_sounds_as_documented_on_the_timeline():
    expected = {
        outcome.APPROVED: [(0, 120, 2700)],
        outcome.MONEY: [(0, 200, 1800), (350, 200, 1800)],
        outcome.CARD: [(0, 800, 1000)],
        outcome.TERMINAL: [(100 * i, 50, 2700) for i in range(6)],
    }
    for cls, code in ONE_OF_EACH.items():
        events, fb = play(lambda fb: fb.decision(code, 4500, 5500))
        assert tones(events) == expected[cls], (outcome.NAMES[cls], tones(events))
        last_tone_end = tones(events)[-1][0] + tones(events)[-1][1]
        assert events[-1] == (last_tone_end + feedback.LED_HOLD_MS, "led", feedback.LED_OFF), events[-1]
        assert fb.shown == 1


def test_the_four_classes_can_be_told_apart_by_ear():
    """Apart by the number of tones, or, where that is equal, by a length at least 4x
    longer (and a different pitch): even an active buzzer (one pitch) tells them apart."""
    sig = {}
    for cls, code in ONE_OF_EACH.items():
        events, _ = play(lambda fb: fb.decision(code, 4500, 5500))
        t = tones(events)
        sig[cls] = (len(t), max(length for _s, length, _hz in t), set(hz for _s, _l, hz in t))
    for a in sig:
        for b in sig:
            if a < b:
                (na, la, ha), (nb, lb, hb) = sig[a], sig[b]
                assert na != nb or (max(la, lb) >= 4 * min(la, lb) and ha != hb), (outcome.NAMES[a], outcome.NAMES[b])


def test_every_reason_sounds_as_its_class_and_a_new_reason_as_a_terminal_problem():
    classes = [outcome.of(c) for c in range(len(reasons.NAMES))]
    assert set(classes) == {outcome.APPROVED, outcome.MONEY, outcome.CARD, outcome.TERMINAL}
    assert outcome.of(reasons.INSUFFICIENT_FUNDS) == outcome.MONEY and outcome.of(reasons.MONTH_LIMIT) == outcome.MONEY
    assert outcome.of(reasons.REPLACED) == outcome.CARD and outcome.of(reasons.UNKNOWN_CARD) == outcome.CARD
    assert outcome.of(reasons.TERMINAL_FULL) == outcome.TERMINAL
    assert outcome.of(len(reasons.NAMES) + 3) == outcome.TERMINAL  # e.g. a clock not set, added later
    for code in range(len(reasons.NAMES)):
        assert feedback.rhythm(code) == feedback.RHYTHMS[outcome.of(code)]


def test_the_beep_starts_before_the_page_and_nothing_else_moves_the_screen():
    events, _ = play(lambda fb: fb.decision(reasons.APPROVED, 4500, 5500))
    assert [e[1] for e in events[:3]] == ["led", "buzz", "display"], events[:3]
    assert events[0] == (0, "led", feedback.LED_GREEN)
    pages = [e[2] for e in events if e[1] == "display"]
    assert len(pages) == 1 and pages[0].da == "Godkendt 45.00 kr., saldo 55.00 kr."
    events, _ = play(lambda fb: fb.balance(12345))
    assert tones(events) == [(0, 40, 2700)] and events[0] == (0, "led", feedback.LED_AMBER)
    assert [e[2].da for e in events if e[1] == "display"] == ["Saldo 123.45 kr."]


def test_a_top_up_shows_its_page_after_the_decision():
    events, _ = play(lambda fb: fb.decision(reasons.INSUFFICIENT_FUNDS, 4500, 1000, True))
    shown = [(e[0], e[2].band) for e in events if e[1] == "display"]
    # the money rhythm ends at 550 ms; the LED holds, goes off, and the top-up page follows
    assert shown == [(0, texts.REFUSED), (550 + feedback.LED_HOLD_MS, texts.TOPUP)], shown
    assert (550 + feedback.LED_HOLD_MS, "led", feedback.LED_OFF) in events


def test_an_offline_cap_refusal_shows_the_offline_page_and_sounds_as_money():
    events, _ = play(lambda fb: fb.decision(reasons.INSUFFICIENT_FUNDS, 4500, 9000, False, True))
    pages = [e[2] for e in events if e[1] == "display"]
    assert [p.band for p in pages] == [texts.OFFLINE] and pages[0].da == texts.OFFLINE_DA
    assert len(tones(events)) == len(feedback.RHYTHMS[outcome.MONEY])
    events, _ = play(lambda fb: fb.decision(reasons.APPROVED, 4500, 9000, False, True))
    assert [e[2].band for e in events if e[1] == "display"] == ["Godkendt"]  # only refusals say offline


def test_a_new_decision_cuts_the_previous_pattern_short():
    clock = Timeline()
    out = Outputs(clock)
    fb = feedback.Feedback(out, clock.sleep_ms)

    async def main():
        fb.play(fb.decision(reasons.BLOCKED, 100, 0))  # the card class: one 800 ms tone
        await clock.advance(300)
        fb.play(fb.decision(reasons.APPROVED, 4500, 5500))
        await clock.advance(310)
        mid = list(out.events)
        await clock.advance(5000)
        return mid

    mid = asyncio.run(main())
    assert fb.cut_short == 1
    assert mid[-2:] == [(300, "buzz", 2700), (300, "display", mid[-1][2])], mid[-3:]
    assert mid[-1][2].band == "Godkendt"
    t = tones(out.events)
    assert t == [(0, 300, 1000), (300, 120, 2700)], t  # the long tone stopped at the cut, never resumed
    assert out.events[-1] == (300 + 120 + feedback.LED_HOLD_MS, "led", feedback.LED_OFF)
    assert fb.shown == 1


def test_every_page_the_feedback_shows_is_a_screen_page():
    for code in range(len(reasons.NAMES)):
        events, _ = play(lambda fb: fb.decision(code, 100, 200, code == reasons.INSUFFICIENT_FUNDS))
        for e in events:
            if e[1] == "display":
                assert isinstance(e[2], screen.Page)


def test_sounding_is_true_exactly_while_the_rhythms_tones_play():
    """The app erases no flash sector while `sounding` (an ESP32 stalls for the erase, which
    would stretch a tone): true from the first tone to the end of the last, false for the
    LED's hold after it and once a pattern is cut short."""
    clock = Timeline()
    fb = feedback.Feedback(Outputs(clock), clock.sleep_ms)

    async def main():
        seen = []
        fb.play(fb.decision(reasons.DAY_LIMIT, 4500, 5500))  # tones 0-200 and 350-550 ms
        for t in (0, 100, 250, 549, 550, 1000):
            await clock.advance(t)
            seen.append((t, fb.sounding))
        fb.play(fb.decision(reasons.BLOCKED, 0, 0))  # 800 ms tone, cut short by the next
        await clock.advance(1100)
        assert fb.sounding
        fb.play(fb.balance(5500))  # a 40 ms tick
        await clock.advance(1200)
        seen.append((1200, fb.sounding))
        return seen

    assert asyncio.run(main()) == [(0, True), (100, True), (250, True), (549, True), (550, False),
                                   (1000, False), (1200, False)]
