"""Fuzzing the PN532 codec and driver with hypothesis.

Properties: random and mutated byte streams only ever produce the driver's own
documented errors (PN532Error and its subclasses), never hang (emulated time, and a
wall-clock guard), keep the reader's buffer bounded, and resynchronise on the next
valid frame. The codec gives the same events on MicroPython as on CPython.
Bounded here (a few seconds); `make soak` runs the long versions.
"""
import asyncio
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pn532_probe
from cpos.reader import frame as F
from cpos.reader.pn532 import PN532
from cpos.reader.link import StreamLink
from simulator.pn532_emu import VirtualClock

SOAK = os.environ.get("CPOS_SOAK") == "1"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=20000 if SOAK else 1, deadline=None, suppress_health_check=list(HealthCheck))

payloads = st.binary(min_size=1, max_size=300)


@st.composite
def chip_frames(draw):
    kind = draw(st.sampled_from(["frame", "ack", "nack", "err"]))
    if kind == "ack":
        return F.ACK_FRAME, (F.ACK, "")
    if kind == "nack":
        return F.NACK_FRAME, (F.NACK, "")
    if kind == "err":
        return F.ERROR_FRAME, (F.ERROR_FRAME_EVT, "")
    cmd = draw(st.integers(0, 255))
    params = draw(st.binary(max_size=draw(st.sampled_from([8, 40, 263]))))
    return F.encode(F.TFI_CHIP, cmd, params), (F.FRAME, (bytes((cmd,)) + params).hex())


def _events(data, chunk):
    return [tuple(e) for e in pn532_probe.scan(data.hex(), chunk)]


@FAST
@given(st.binary(max_size=2000), st.integers(0, 64))
def test_codec_never_raises_and_stays_bounded(data, chunk):
    r = F.FrameReader()
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        r.feed(data[i:i + step])
        for _ in range(len(data) + 2):  # next() makes progress: bounded number of events
            if not r.next(i + step >= len(data)):
                break
        assert r.n <= 288
    try:
        F.decode(data)
    except F.PN532Error:
        pass


@FAST
@given(st.binary(max_size=200).filter(lambda g: b"\x00\xff" not in g), chip_frames(), st.integers(0, 16))
def test_resync_on_the_next_valid_frame_after_noise(noise, frame, chunk):
    raw, expect = frame
    assert _events(noise + raw, chunk) == [expect]


@FAST
@given(st.binary(max_size=120), chip_frames(), st.integers(0, 16))
def test_a_valid_frame_after_any_garbage_is_found(garbage, frame, chunk):
    # Garbage may contain start codes and even whole frames; the valid frame behind
    # it is still found, unless the garbage held a complete chip frame of its own
    # whose checksums agree by chance (that one is reported instead).
    raw, expect = frame
    ev = _events(garbage + raw, chunk)
    assert expect in ev or any(e[0] in (F.FRAME, F.ERROR_FRAME_EVT) for e in ev), ev


@FAST
@given(st.lists(chip_frames(), min_size=1, max_size=4), st.binary(max_size=30), st.integers(1, 9))
def test_micropython_and_cpython_codecs_agree(mp_worker, frames, noise, chunk):
    data = noise + b"".join(f[0] for f in frames)
    mp = mp_worker.call("pn532_probe", "scan", data.hex(), chunk)
    assert [tuple(e) for e in mp] == _events(data, chunk)


# -- the driver over a byte stream that answers with random or mutated bytes --------

class ScriptPort:
    """Answers every host command frame with the next scripted byte string."""

    def __init__(self, replies, chunks):
        self.replies = list(replies)
        self.chunks = chunks or [64]
        self.queue = bytearray()
        self.k = 0

    def write(self, buf):
        b = bytes(buf)
        if b not in (F.ACK_FRAME, F.NACK_FRAME) and b[:1] != b"\x55" and self.replies:
            self.queue += self.replies.pop(0)
        return len(b)

    def readinto(self, buf):
        n = min(len(buf), len(self.queue), self.chunks[self.k % len(self.chunks)])
        self.k += 1
        buf[:n] = self.queue[:n]
        del self.queue[:n]
        return n


def _run_driver(replies, chunks, call):
    clock = VirtualClock()
    pn = PN532(StreamLink(ScriptPort(replies, chunks), clock=clock))

    async def guarded():
        return await asyncio.wait_for(call(pn), timeout=10)  # wall-clock: a hang fails

    try:
        return asyncio.run(guarded()), pn, clock
    except F.PN532Error as e:
        return e, pn, clock


GOOD_POLL = F.ACK_FRAME + F.encode(F.TFI_CHIP, 0x4B, bytes.fromhex("01010044000704112233445566"))


@st.composite
def mutated(draw, base):
    b = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del b[i]
        else:
            del b[i:]
    return bytes(b)


@FAST
@given(st.lists(st.binary(max_size=300), max_size=4), st.lists(st.integers(1, 70), max_size=5))
def test_driver_on_random_bytes_raises_only_its_own_errors(replies, chunks):
    res, _, clock = _run_driver(replies, chunks, lambda pn: pn.begin())
    assert isinstance(res, (tuple, F.PN532Error))
    assert clock.us < 10_000_000  # ends within bounded (emulated) time


@FAST
@given(mutated(GOOD_POLL), st.lists(st.integers(1, 70), max_size=5))
def test_driver_on_mutated_answers_then_recovers(bad, chunks):
    async def two_polls(pn):
        first = None
        try:
            first = await pn.in_list_passive_target()
        except F.PN532Error as e:
            first = e
        second = await pn.in_list_passive_target()  # a clean answer: must be read
        return first, second, bytes(pn.uid[:pn.uid_len])

    res, pn, _ = _run_driver([bad, GOOD_POLL], chunks, two_polls)
    assert not isinstance(res, F.PN532Error), res
    first, second, uid = res
    assert first in (0, 4, 7, 10) or isinstance(first, F.PN532Error)
    assert second == 7 and uid == bytes.fromhex("04112233445566")


@pytest.mark.soak
@LONG
@given(st.binary(max_size=5000), st.integers(0, 300))
def test_soak_codec(data, chunk):
    test_codec_never_raises_and_stays_bounded.hypothesis.inner_test(data, chunk)


@pytest.mark.soak
@LONG
@given(st.lists(st.binary(max_size=600), max_size=6), st.lists(st.integers(1, 300), max_size=8))
def test_soak_driver(replies, chunks):
    test_driver_on_random_bytes_raises_only_its_own_errors.hypothesis.inner_test(replies, chunks)
