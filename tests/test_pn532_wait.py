"""The reader's pending poll against the emulated chip (emulated time), beside plain polling.

While no card is seen the reader leaves an InListPassiveTarget pending (retries FF) and
the chip answers as soon as a card enters the field: a tap is reported within a few ms
of the card's arrival instead of up to one poll period later. The tap rules, the
self-healing and the event loop's share are the same as with plain polling.
"""
import pytest

from pn532_rig import INTERFACES, TAP_RULES, UID4, UID7, UID10, Rig

ARRIVALS = [300 + 997 * k for k in range(8)]  # ms; phases spread over the poll period


def _latencies(iface, wait_ms):
    rig = Rig(iface)
    steps = []
    for t in ARRIVALS:
        steps += [(t, "place", UID4 if t % 2 else UID7), (t + 200, "remove")]
    rig.emu.script(steps)
    taps = rig.taps(ARRIVALS[-1] + 900, wait_ms=wait_ms)
    assert len(taps) == len(ARRIVALS), taps
    return [ms - t for (ms, _), t in zip(taps, ARRIVALS)], rig


@pytest.mark.parametrize("iface", INTERFACES)
def test_a_pending_poll_reports_a_tap_within_a_few_ms_and_polling_does_not(iface):
    waiting, rig = _latencies(iface, 250)
    polling, _ = _latencies(iface, 0)
    # the chip's activation attempt (2.5 ms), the selection (3-4.5 ms) and the answer on
    # the link; no wait for the next poll. A card that comes just as a pending poll ends
    # (its limit passes during the selection) waits for the abort, the drain and the
    # next pending poll: one such cycle at most.
    waiting.sort()
    assert waiting[len(waiting) // 2] <= 10 and waiting[-1] <= 20, waiting
    assert max(polling) > 25, polling  # the plain poll beside it: up to one period more
    assert rig.reader.errors == 0 and rig.pn.stray_frames == 0


@pytest.mark.parametrize("iface", INTERFACES)
def test_tap_rules_hold_with_the_pending_poll(iface):
    rig = Rig(iface)
    rig.emu.script(TAP_RULES)
    taps = rig.taps(9000, wait_ms=250)
    assert [u for _, u in taps] == [UID4.hex(), UID4.hex(), UID10.hex()]
    assert rig.reader.errors == 0


@pytest.mark.parametrize("iface", INTERFACES)
@pytest.mark.parametrize("kind", ["bad_dcs", "lose_ack", "noise", "garbage", "drop_response", "reset"])
def test_faults_are_survived_while_waiting(iface, kind):
    # The fault hits the pending poll that is waiting when the second card comes. A
    # garbled or lost answer costs at most the rest of that pending poll (wait_ms): the
    # next one finds the card again.
    rig = Rig(iface, reset_wired=False)
    rig.emu.script([(200, "place", UID4), (1500, "remove"), (4000, "place", UID7), (5500, "remove")])
    done = []

    def hook(r, _):
        if not done and r.ms() >= 3900:
            done.append(1)
            r.emu.inject(kind)

    taps = rig.taps(7000, on_step=hook, wait_ms=250)
    assert [u for _, u in taps] == [UID4.hex(), UID7.hex()]
    assert taps[1][0] - 4000 <= 2 * 250 + 60, taps  # at most one wasted pending poll (and a re-init)
    assert rig.emu.faults.get(kind, 0) == 0, "fault was never triggered"


@pytest.mark.parametrize("iface", INTERFACES)
def test_waiting_never_holds_the_event_loop_longer_than_one_frame(monkeypatch, iface):
    # As tests/test_pn532_emu.py checks for plain polling: through seconds of pending
    # polls, taps and an injected reset, the bus time between two yields never exceeds
    # one full-size frame's wire time.
    import pn532_rig
    from cpos.reader import frame as F
    from test_pn532_emu import _BlockingClock

    monkeypatch.setattr(pn532_rig, "VirtualClock", _BlockingClock)
    rig = Rig(iface)
    rig.emu.script([(1200, "place", UID7), (1500, "remove"), (3000, "place", UID4), (3300, "remove")])
    done = []

    def hook(r, _):
        if not done and r.ms() >= 2000:
            done.append(1)
            r.emu.inject("reset")

    taps = rig.taps(4000, on_step=hook, wait_ms=250)
    assert [u for _, u in taps] == [UID7.hex(), UID4.hex()]
    assert rig.clock.longest_us <= F.frame_size(F.MAX_DATA) * rig.emu.byte_us, rig.clock.longest_us
