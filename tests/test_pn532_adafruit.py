"""Independent proof of the emulator's fidelity: adafruit-circuitpython-pn532 reads it.

adafruit's driver (CPython, through Adafruit-Blinka) talks to `PN532Emu` over the
fake bus objects of `simulator.pn532_carriers`: `PN532_UART` over `FakeUART`,
`PN532_I2C` over `EmuI2C` (through adafruit_bus_device's I2CDevice) and `PN532_SPI`
over `EmuSPI` with a digitalio-style chip select. If adafruit's driver and ours
disagree about the emulator, the emulator is wrong.

Blinka picks a board at import time; `BLINKA_OS_AGNOSTIC=1` (an environment switch
Adafruit-PlatformDetect supports) selects its OS-agnostic board, so the import does
not depend on what machine runs the tests. Only `digitalio.Direction` and
`micropython.const` are used from it; no pin is ever touched.
"""
import asyncio
import os

import pytest

os.environ.setdefault("BLINKA_OS_AGNOSTIC", "1")
# A plain import, not importorskip: the judge is pinned in pyproject.toml, and a missing
# install must fail the suite rather than skip the proof quietly.
import adafruit_pn532.adafruit_pn532 as adafruit_pn532  # noqa: E402
from adafruit_pn532.i2c import PN532_I2C  # noqa: E402
from adafruit_pn532.spi import PN532_SPI  # noqa: E402
from adafruit_pn532.uart import PN532_UART  # noqa: E402

from cpos.reader.pn532 import PN532  # noqa: E402
from cpos.reader.link import SYSTEM_CLOCK, I2CLink, SPILink, StreamLink  # noqa: E402
from simulator.pn532_carriers import (EmuCS, EmuDigitalInOut, EmuI2C, EmuSPI, EmuStreamPort,  # noqa: E402
                                      FakeUART)
from simulator.pn532_emu import Card, PN532Emu, RealClock  # noqa: E402

UIDS = [bytes.fromhex("04a1b2c3"), bytes.fromhex("04112233445566")]
UID10 = bytes.fromhex("04010203040506070809")


def adafruit_on(emu):
    if emu.interface == "uart":
        return PN532_UART(FakeUART(emu))
    if emu.interface == "i2c":
        return PN532_I2C(EmuI2C(emu))
    spi = EmuSPI(emu)
    return PN532_SPI(spi, EmuDigitalInOut(spi))


def ours_on(emu):
    if emu.interface == "uart":
        link = StreamLink(EmuStreamPort(emu))
    elif emu.interface == "i2c":
        link = I2CLink(EmuI2C(emu))
    else:
        spi = EmuSPI(emu)
        link = SPILink(spi, EmuCS(spi))
    return PN532(link)


IFACES = ["uart", "i2c", "spi"]


@pytest.mark.parametrize("iface", IFACES)
def test_adafruit_reads_firmware_version(iface):
    emu = PN532Emu(RealClock(), iface)
    pn = adafruit_on(emu)  # its constructor wakes the chip, configures SAM, reads the version
    assert pn.firmware_version == (0x32, 1, 6, 7)
    assert 0x14 in emu.commands and emu.bad_host_frames == 0


@pytest.mark.parametrize("iface", IFACES)
def test_adafruit_reads_card_uids_and_nothing_without_a_card(iface):
    emu = PN532Emu(RealClock(), iface)
    pn = adafruit_on(emu)
    assert pn.read_passive_target(timeout=0.08) is None
    for uid in UIDS:
        emu.place_card(uid)
        got = pn.read_passive_target(timeout=0.5)
        assert got is not None and bytes(got) == uid
        emu.remove_card()
    assert emu.bad_host_frames == 0


@pytest.mark.parametrize("iface", IFACES)
def test_adafruit_sees_the_10_byte_uid_length_it_refuses(iface):
    # adafruit's driver only accepts UIDs up to 7 bytes: it must notice NFCIDLen=10.
    emu = PN532Emu(RealClock(), iface)
    pn = adafruit_on(emu)
    emu.place_card(UID10)
    with pytest.raises(RuntimeError, match="long UID"):
        pn.read_passive_target(timeout=0.5)


def test_adafruit_detects_the_injected_checksum_fault():
    emu = PN532Emu(RealClock(), "uart")
    pn = adafruit_on(emu)
    emu.inject("bad_dcs")
    with pytest.raises(RuntimeError, match="checksum"):
        pn.firmware_version
    assert pn.firmware_version == (0x32, 1, 6, 7)


@pytest.mark.parametrize("iface", IFACES)
def test_adafruit_and_our_driver_agree(iface):
    seen = {}
    for who in ("adafruit", "ours"):
        emu = PN532Emu(RealClock(), iface)
        emu.place_card(Card(UIDS[1]))
        if who == "adafruit":
            pn = adafruit_on(emu)
            fw = tuple(pn.firmware_version)
            uid = bytes(pn.read_passive_target(timeout=0.5))
        else:
            pn = ours_on(emu)
            assert pn.link.clock is SYSTEM_CLOCK
            fw = asyncio.run(pn.begin())
            n = asyncio.run(pn.read_uid())
            uid = bytes(pn.uid[:n])
        seen[who] = (fw, uid)
    assert seen["adafruit"] == seen["ours"] == ((0x32, 1, 6, 7), UIDS[1])
