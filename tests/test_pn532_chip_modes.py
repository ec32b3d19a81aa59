"""The emulator behaves like the chip where a careless driver would fail on hardware.

Each behaviour is driven by adafruit's PN532 driver (the independent judge, as in
tests/test_pn532_adafruit.py) or by raw frames, and each has the careless driver's
failure beside it, so a driver that skips SAMConfiguration, never wakes the chip,
rushes the HSU wake-up or reads an SPI frame in parts fails here as on hardware:

* PowerDown (0x16): answered, then the chip sleeps until a wake-up source it allows
  (HSU 0x55, I2C address, SPI chip select); adafruit's `power_down()` works on every link.
* LowVbat start mode (AN10609, the C106's start-up state): RF commands get the error
  frame until SAMConfiguration.
* HSU wake-up timing: after 0x55, bytes arriving in the next T_HSU_WAKE are lost.
* SPI: a frame may be read in parts, each part a data-read transaction of its own.
* Card exchange errors: MIFARE Classic authentication with a wrong key is error 0x14.
"""
import asyncio
import os

import pytest

os.environ.setdefault("BLINKA_OS_AGNOSTIC", "1")
from adafruit_pn532.adafruit_pn532 import MIFARE_CMD_AUTH_A  # noqa: E402

from cpos.reader import frame as F  # noqa: E402
from pn532_rig import Rig  # noqa: E402
from simulator.pn532_carriers import EmuCS, EmuSPI, REV  # noqa: E402
from simulator.pn532_emu import ACK, Card, PN532Emu, RealClock, T_HSU_WAKE, chip_frame  # noqa: E402
from test_pn532_adafruit import IFACES, adafruit_on  # noqa: E402

UID = bytes.fromhex("04a1b2c3")
KEY = bytes.fromhex("a0a1a2a3a4a5")


@pytest.mark.parametrize("iface", IFACES)
def test_adafruit_powers_the_chip_down_and_wakes_it_again(iface):
    emu = PN532Emu(RealClock(), iface)
    pn = adafruit_on(emu)
    assert pn.power_down() is True
    assert 0x16 in emu.commands
    emu.place_card(UID)
    got = pn.read_passive_target(timeout=0.5)  # adafruit wakes it first (low_power)
    assert got is not None and bytes(got) == UID
    assert emu.power_downs == 1


def test_a_chip_powered_down_ignores_a_command_sent_without_the_wake_up():
    rig = Rig("uart")
    rig.run(rig.pn.begin())
    rig.run(rig.pn.command(0x16, b"\x10", 50, 4))  # PowerDown, wake on HSU
    rig.clock.advance_us(5000)
    assert rig.emu.uart_available() == 0 and rig.emu.asleep
    with pytest.raises(F.PN532Timeout):  # a driver that never wakes the chip
        rig.run(rig.pn.get_firmware_version())
    rig.run(rig.pn.begin())  # ours wakes it (0x55 and zeros) and goes on
    assert not rig.emu.asleep


@pytest.mark.parametrize("iface", ["uart", "i2c", "spi"])
def test_rf_commands_fail_until_sam_configuration_and_our_begin_sends_it(iface):
    rig = Rig(iface)
    rig.emu.place_card(UID)
    rig.run(rig.link.wake())
    assert rig.run(rig.pn.get_firmware_version())[0] == 0x32
    with pytest.raises(F.ChipError):  # a driver that skips SAMConfiguration
        rig.run(rig.pn.in_list_passive_target())
    rig.run(rig.pn.begin())
    assert rig.run(rig.pn.read_uid()) == 4


def test_hsu_bytes_right_after_the_wake_up_byte_are_lost():
    # A rushed wake-up (0x55 and at once the frame) loses the frame's start: no ACK.
    rig = Rig("uart")
    frame = F.encode(F.TFI_HOST, 0x02)
    rig.emu.host_write(b"\x55" + frame)
    rig.clock.advance_us(20000)
    assert rig.emu.uart_read(64) == b"" and rig.emu.commands == []
    # The same frame after a long enough preamble of zeros is taken.
    rig = Rig("uart")
    zeros = int(T_HSU_WAKE / rig.emu.byte_us) + 1
    rig.emu.host_write(b"\x55" + bytes(zeros) + frame)
    rig.clock.advance_us(20000)
    assert rig.emu.uart_read(64).startswith(ACK) and rig.emu.commands == [0x02]


def _spi_read(spi, cs, n):
    cs.value(0)
    spi.write(bytes((REV[0x03],)))
    buf = bytearray(n)
    spi.readinto(buf, 0)
    cs.value(1)
    return bytes(REV[b] for b in buf)


def test_an_spi_frame_can_be_read_in_parts():
    emu = PN532Emu(interface="spi")
    spi = EmuSPI(emu)
    cs = EmuCS(spi)
    cs.value(0)
    cs.value(1)  # NSS low: wakes the chip (that transaction is lost)
    cs.value(0)
    spi.write(bytes(REV[b] for b in b"\x01" + F.encode(F.TFI_HOST, 0x02)))
    cs.value(1)
    emu.clock.advance_us(5000)
    assert _spi_read(spi, cs, 6) == ACK
    want = chip_frame(b"\xd5\x03\x32\x01\x06\x07")
    head = _spi_read(spi, cs, 5)  # preamble, start code, LEN, LCS: how long is the rest?
    rest = _spi_read(spi, cs, head[3] + 2)  # TFI and data, DCS, postamble
    assert head + rest == want


def test_adafruit_sees_a_mifare_authentication_fail_with_the_wrong_key():
    emu = PN532Emu(RealClock(), "uart")
    emu.place_card(Card(UID, keys={1: (KEY, KEY)}))
    pn = adafruit_on(emu)
    uid = pn.read_passive_target(timeout=0.5)
    assert pn.mifare_classic_authenticate_block(uid, 4, MIFARE_CMD_AUTH_A, b"\xff" * 6) is False
    assert pn.read_passive_target(timeout=0.5) is not None  # the card is selected afresh
    assert pn.mifare_classic_authenticate_block(uid, 4, MIFARE_CMD_AUTH_A, KEY) is True


def test_our_driver_reports_the_authentication_error_code():
    rig = Rig("uart")
    rig.run(rig.pn.begin())
    rig.emu.place_card(Card(UID, keys={1: (KEY, KEY)}))
    assert rig.run(rig.pn.in_list_passive_target()) == 4
    with pytest.raises(F.ChipError) as e:
        rig.run(rig.pn.in_data_exchange(bytes((0x60, 4)) + b"\xff" * 6 + UID))
    assert e.value.code == 0x14
