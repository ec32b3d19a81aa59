"""Tap semantics and self-healing of cpos.reader.tap.CardReader, on both runtimes.

The chip is a scripted stand-in here (what a poll returns at a given time); the
real byte protocol against the emulator is tested in tests/test_pn532_emu.py.
"""
try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from cpos.reader import frame as F
from cpos.reader.tap import CardReader, TAP, ERROR

A = b"\x04\xa1\xb2\xc3"
B7 = b"\x04\x11\x22\x33\x44\x55\x66"
C10 = b"\x04\x01\x02\x03\x04\x05\x06\x07\x08\x09"


class Clock:
    def __init__(self):
        self.ms = 0

    def ticks_ms(self):
        return self.ms

    def ticks_diff(self, a, b):
        return a - b

    async def sleep_ms(self, ms):
        self.ms += ms


class Link:
    def __init__(self, clock, reset_wired=True):
        self.clock = clock
        self.bus_errors = 0
        self.reset_wired = reset_wired
        self.pulses = 0

    async def pulse_reset(self):
        if self.reset_wired:
            self.pulses += 1
            await self.clock.sleep_ms(12)
            return True
        return False


class Chip:
    """`timeline(t_ms)` says what the field holds: UID bytes, None, or an exception."""

    def __init__(self, timeline, reset_wired=True, sick=None):
        self.clock = Clock()
        self.link = Link(self.clock, reset_wired)
        self.reader = F.FrameReader()
        self.nacks_sent = self.aborts = self.stray_frames = 0
        self.uid = bytearray(10)
        self.uid_len = 0
        self.timeline = timeline
        self.sick = sick  # sick(t_ms) -> exception or None, for begin() too
        self.begins = 0

    async def begin(self):
        self.begins += 1
        await self.clock.sleep_ms(20)
        e = self.sick(self.clock.ms) if self.sick else None
        if e:
            raise e

    async def read_uid(self):
        await self.clock.sleep_ms(15)
        e = self.sick(self.clock.ms) if self.sick else None
        if e:
            raise e
        v = self.timeline(self.clock.ms)
        if v is None:
            return 0
        self.uid[:len(v)] = v
        return len(v)


def _collect(chip, until_ms, **kw):
    reader = CardReader(chip, **kw)
    taps = []

    async def main():
        while chip.clock.ms < until_ms:
            r = await reader.step()
            if r == TAP:
                taps.append((chip.clock.ms, bytes(reader.uid[:reader.uid_len])))
            await chip.clock.sleep_ms(reader.poll_ms)

    asyncio.run(main())
    return reader, taps


def test_card_left_on_reader_is_one_tap():
    chip = Chip(lambda t: A if t >= 200 else None)
    reader, taps = _collect(chip, 10000)
    assert [u for _, u in taps] == [A]
    assert reader.present and not reader.removed(A) and reader.removed(B7)


def test_removed_and_presented_again_is_a_new_tap():
    chip = Chip(lambda t: A if (200 <= t < 1000 or t >= 1700) else None)
    _, taps = _collect(chip, 3000)
    assert [u for _, u in taps] == [A, A]


def test_lifted_shorter_than_the_removal_window_is_one_tap():
    # gone for 300 ms < 500 ms removal window
    chip = Chip(lambda t: A if (200 <= t < 1000 or t >= 1300) else None)
    _, taps = _collect(chip, 3000)
    assert [u for _, u in taps] == [A]


def test_removal_window_is_configurable_and_respected():
    chip = Chip(lambda t: A if (200 <= t < 1000 or t >= 1300) else None)
    _, taps = _collect(chip, 3000, removal_ms=200)
    assert [u for _, u in taps] == [A, A]


def test_flicker_of_a_card_left_on_the_reader_is_not_a_new_tap():
    # every other poll misses the card (the PN532 field flicker)
    state = [0]

    def flicker(t):
        state[0] += 1
        return A if state[0] % 2 else None

    chip = Chip(flicker)
    _, taps = _collect(chip, 5000)
    assert len(taps) == 1


def test_swapping_cards_is_a_tap_each_and_uid_sizes():
    chip = Chip(lambda t: A if t < 1000 else (B7 if t < 2000 else C10))
    _, taps = _collect(chip, 3000)
    assert [u for _, u in taps] == [A, B7, C10]


def test_failed_polls_do_not_end_a_presentation():
    chip = Chip(lambda t: A, sick=lambda t: F.PN532Timeout("x") if 1000 <= t < 4000 else None)
    reader, taps = _collect(chip, 6000)
    assert [u for _, u in taps] == [A]
    assert reader.timeouts > 0 and reader.reinits >= 2


def test_dead_chip_backs_off_pulses_reset_and_resumes():
    chip = Chip(lambda t: A if t > 20000 else None,
                sick=lambda t: F.FrameError("garbage") if 1000 <= t < 15000 else None)
    reader, taps = _collect(chip, 25000)
    assert [u for _, u in taps] == [A]
    h = reader.health()
    assert h["ok"] and h["frame_errors"] > 3 and h["reset_pulses"] >= 3
    assert chip.link.pulses == h["reset_pulses"]
    # backoff doubles to 5 s: 14 s of a dead chip needs only a handful of attempts
    assert h["reinit_failures"] < 12, h


def test_nothing_raises_out_of_the_loop():
    errors = [OSError(5), ValueError("bug"), F.ChipError(0x27), MemoryError()]

    def sick(t):
        if t < 3000:
            return errors[(t // 15) % len(errors)]
        return None

    chip = Chip(lambda t: B7, sick=sick, reset_wired=False)
    reader, taps = _collect(chip, 8000)
    assert [u for _, u in taps] == [B7]
    assert reader.io_errors and reader.other_errors and reader.chip_errors
    assert reader.reset_pulses == 0  # no reset pin wired: nothing pulsed


def test_next_tap_and_async_for():
    chip = Chip(lambda t: A if 100 <= t < 600 else (C10 if t >= 1500 else None))
    reader = CardReader(chip)
    got = []

    async def main():
        got.append(bytes(await reader.next_tap()))
        async for uid in reader:
            got.append(bytes(uid))
            break

    asyncio.run(main())
    assert got == [A, C10]
