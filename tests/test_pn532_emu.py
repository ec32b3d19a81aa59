"""Our PN532 driver against the chip emulator over UART, I2C and SPI (emulated time)."""
import pytest

from cpos.reader import frame as F
from pn532_rig import INTERFACES, TAP_RULES, UID4, UID7, UID10, Rig
from simulator.pn532_emu import Card, T_ATTEMPT, VirtualClock


@pytest.mark.parametrize("iface", INTERFACES)
def test_begin_reads_firmware_and_bounds_retries(iface):
    rig = Rig(iface)
    assert rig.run(rig.pn.begin()) == (0x32, 1, 6, 7)
    assert rig.emu.retries[2] == rig.pn.passive_retries < 0xFF
    assert rig.emu.commands[:4] == [0x02, 0x14, 0x32, 0x32]


@pytest.mark.parametrize("iface", INTERFACES)
@pytest.mark.parametrize("uid", [UID4, UID7, UID10], ids=["4", "7", "10"])
def test_reads_uids_of_every_size(iface, uid):
    rig = Rig(iface)
    rig.run(rig.pn.begin())
    assert rig.run(rig.pn.read_uid()) == 0
    rig.emu.place_card(uid)
    n = rig.run(rig.pn.read_uid())
    assert bytes(rig.pn.uid[:n]) == uid
    assert rig.pn.sens_res == Card(uid).sens_res and rig.pn.sel_res == Card(uid).sel_res
    # released and field switched off after the read
    assert rig.emu.commands[-2:] == [0x52, 0x32] and not rig.emu.field_on


@pytest.mark.parametrize("iface", INTERFACES)
def test_a_poll_without_card_ends_in_bounded_time(iface):
    rig = Rig(iface)
    rig.run(rig.pn.begin())
    t0 = rig.ms()
    assert rig.run(rig.pn.in_list_passive_target()) == 0
    # (retries + 1) attempts plus field-on guard and wire time, nowhere near a timeout
    assert rig.ms() - t0 < 5 + (rig.pn.passive_retries + 2) * T_ATTEMPT / 1000 + 10


def test_infinite_retries_are_refused():
    rig = Rig()
    with pytest.raises(ValueError):
        rig.run(rig.pn.set_retries(0xFF))


def test_chip_default_retries_forever_so_our_poll_would_time_out_and_abort():
    # Proves the emulator models the default: without begin()'s RFConfiguration the
    # chip never answers a poll without a card; our driver times out and aborts.
    rig = Rig()
    rig.run(rig.link.wake())
    rig.run(rig.pn.sam_configuration())  # out of the LowVbat start mode, retries untouched
    with pytest.raises(F.PN532Timeout):
        rig.run(rig.pn.in_list_passive_target(timeout_ms=300))
    assert rig.emu.aborted == 1 and rig.pn.aborts == 1


def test_emulator_models_flicker_when_a_card_is_left_selected():
    rig = Rig()
    rig.run(rig.pn.begin())
    rig.run(rig.pn.set_retries(0))
    rig.emu.place_card(UID4)
    seen = [rig.run(rig.pn.in_list_passive_target()) for _ in range(6)]
    assert seen == [4, 0, 4, 0, 4, 0]
    # our poll (release + field off) sees it every time
    assert [rig.run(rig.pn.read_uid()) for _ in range(6)] == [4] * 6


def test_in_release_halts_the_card_until_the_field_cycles():
    rig = Rig()
    rig.run(rig.pn.begin())
    rig.emu.place_card(UID7)
    assert rig.run(rig.pn.in_list_passive_target()) == 7
    rig.run(rig.pn.in_release())
    assert rig.run(rig.pn.in_list_passive_target()) == 0
    rig.run(rig.pn.rf_field(False))
    assert rig.run(rig.pn.in_list_passive_target()) == 7


def test_in_data_exchange_reaches_the_card_and_reports_status():
    rig = Rig()
    rig.run(rig.pn.begin())
    rig.emu.place_card(Card(UID7, sens_res=0x0344, sel_res=0x20, ats=b"\x06\x75\x77\x81\x02\x80",
                            exchange=lambda apdu: apdu[::-1] + b"\x90\x00"))
    assert rig.run(rig.pn.in_list_passive_target()) == 7
    assert bytes(rig.run(rig.pn.in_data_exchange(b"\x00\xa4\x04\x00"))) == b"\x00\x04\xa4\x00\x90\x00"
    rig.emu.remove_card()
    with pytest.raises(F.ChipError) as e:
        rig.run(rig.pn.in_data_exchange(b"\x00"))
    assert e.value.code == 0x01
    with pytest.raises(F.ChipError):
        rig.run(rig.pn.in_data_exchange(b"\x00", tg=2))


def test_unknown_command_gets_the_error_frame():
    rig = Rig()
    rig.run(rig.pn.begin())
    with pytest.raises(F.ChipError) as e:
        rig.run(rig.pn.command(0x4A, b"\x01\x03"))  # 212 kbps FeliCa: not emulated
    assert e.value.code == -1


@pytest.mark.parametrize("iface", INTERFACES)
def test_one_tap_per_presentation_against_the_emulator(iface):
    rig = Rig(iface)
    rig.emu.script(TAP_RULES)
    taps = rig.taps(9000)
    assert [u for _, u in taps] == [UID4.hex(), UID4.hex(), UID10.hex()]
    assert 300 <= taps[0][0] < 300 + 80  # noticed within one poll period and a poll
    assert rig.reader.errors == 0


class _BlockingClock(VirtualClock):
    """Virtual time that tells the blocking part apart from the sleeping part.

    The fake buses advance the clock synchronously for each transfer (bytes on the
    wire, clock stretching): that is time the event loop cannot run. The driver's
    `sleep_ms` is where it yields. `longest_us` is the longest stretch of bus time
    without a yield in between."""

    def __init__(self, start_us=0):
        VirtualClock.__init__(self, start_us)
        self.run_us = 0
        self.longest_us = 0

    def advance_us(self, d):
        self.us += int(d)
        self.run_us += int(d)
        if self.run_us > self.longest_us:
            self.longest_us = self.run_us

    sleep_us = advance_us

    async def sleep_ms(self, ms):
        self.run_us = 0
        await VirtualClock.sleep_ms(self, ms)


@pytest.mark.parametrize("iface", INTERFACES)
def test_no_call_holds_the_event_loop_longer_than_one_frame(monkeypatch, iface):
    # Taps, transient faults, a chip reset and a lock-up cured by the reset pin: through
    # all of it the driver never spends longer on the bus between two yields than one
    # full-size frame takes on that bus (its wire time, frame overhead included).
    import pn532_rig

    monkeypatch.setattr(pn532_rig, "VirtualClock", _BlockingClock)
    rig = Rig(iface)
    rig.emu.script([(200, "place", UID7), (1500, "remove"), (2600, "place", UID10), (4000, "remove"),
                    (6500, "place", UID4)])
    faults = {1000: "noise", 1200: "bad_dcs", 2000: "reset", 3000: "garbage", 3500: "mute"}

    def inject(r, _step):
        for t in sorted(faults):
            if r.ms() >= t:
                r.emu.inject(faults.pop(t))
    taps = rig.taps(8000, on_step=inject)
    assert [u for _, u in taps] == [UID7.hex(), UID10.hex(), UID4.hex()]
    assert rig.reader.health()["reinits"] >= 2
    frame_us = F.frame_size(F.MAX_DATA) * rig.emu.byte_us
    assert rig.clock.longest_us <= frame_us, (rig.clock.longest_us, frame_us)
    if iface != "uart":  # a UART write goes to its buffer: only I2C and SPI hold the CPU
        assert rig.clock.longest_us > 0
