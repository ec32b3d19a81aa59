"""`make_link` on a board: the `machine` objects it builds, driven by the chip emulator.

On an ESP32 `cpos.reader.link.make_link(cfg)` builds machine.UART / I2C / SPI / Pin
objects from the board configuration. There is no ESP32 here, so a stand-in `machine`
module (CPython only) records how each object was constructed and hands the link the
emulator's buses. This checks what the firmware would really ask of the hardware: the
I2C bus timeout that outlasts the chip's clock stretching (an I2C bus built with a
timeout shorter than the stretch fails every transfer), SPI mode 0, the UART's baud
rate and non-blocking reads, and the reset pin driven high at start and pulsed to cure
a lock-up.
"""
import asyncio
import sys
import types

import pytest

from cpos.reader.pn532 import PN532
from cpos.reader.link import I2C_TIMEOUT_US, make_link
from cpos.reader.tap import TAP, CardReader
from simulator.pn532_carriers import EmuCS, EmuI2C, EmuResetPin, EmuSPI, EmuStreamPort
from simulator.pn532_emu import PN532Emu, VirtualClock

UID = bytes.fromhex("04a1b2c3d4e5f6")
UID2 = bytes.fromhex("deadbeef")
RESET_GPIO = 4
CS_GPIO = 5

CONFIGS = {
    "uart": {"link": "uart", "uart": 1, "tx": 17, "rx": 16, "reset": RESET_GPIO},
    "i2c": {"link": "i2c", "i2c": 0, "scl": 22, "sda": 21, "reset": RESET_GPIO},
    "spi": {"link": "spi", "spi": 2, "sck": 18, "mosi": 23, "miso": 19, "cs": CS_GPIO, "reset": RESET_GPIO},
}


def fake_machine(emu, stretch_us=300):
    """A `machine` module whose classes are the emulator's buses; `m.made` records the calls."""
    m = types.ModuleType("machine")
    m.made = []
    state = {}

    class Pin:
        OUT = 1
        IN = 0

        def __init__(self, gpio, mode=None, value=None):
            m.made.append(("Pin", gpio, mode, value))
            self.gpio = gpio
            self.target = None
            if gpio == RESET_GPIO:
                self.target = state["reset"] = EmuResetPin(emu)
            elif gpio == CS_GPIO:
                self.target = EmuCS(state["spi"])
            if value is not None and self.target is not None:
                self.target.value(value)

        def value(self, v=None):
            return self.target.value(v)

    class UART:
        def __init__(self, uid, baudrate=9600, tx=None, rx=None, timeout=None, rxbuf=None):
            m.made.append(("UART", uid, dict(baudrate=baudrate, tx=tx, rx=rx, timeout=timeout)))
            self.port = EmuStreamPort(emu)

        def any(self):
            return emu.uart_available()

        def readinto(self, buf):
            return self.port.readinto(buf) or None  # machine.UART gives None for nothing

        def write(self, buf):
            return self.port.write(buf)

    def I2C(uid, scl=None, sda=None, freq=None, timeout=None):
        m.made.append(("I2C", uid, dict(scl=scl.gpio, sda=sda.gpio, freq=freq, timeout=timeout)))
        return EmuI2C(emu, stretch_us=stretch_us, timeout_us=timeout)

    def SPI(uid, baudrate=None, polarity=None, phase=None, sck=None, mosi=None, miso=None):
        m.made.append(("SPI", uid, dict(baudrate=baudrate, polarity=polarity, phase=phase)))
        state["spi"] = EmuSPI(emu)
        return state["spi"]

    m.Pin, m.UART, m.I2C, m.SPI = Pin, UART, I2C, SPI
    m.state = state
    return m


def _run_taps(link, clock, until_ms, on_ms=None):
    reader = CardReader(PN532(link))
    out = []

    async def main():
        while clock.us / 1000.0 < until_ms:
            if on_ms:
                on_ms(clock.us / 1000.0)
            if await reader.step() == TAP:
                out.append(bytes(reader.uid[:reader.uid_len]))
            await clock.sleep_ms(reader.poll_ms)

    asyncio.run(main())
    return out, reader


@pytest.fixture
def board(monkeypatch):
    def make(iface, stretch_us=300):
        clock = VirtualClock()
        emu = PN532Emu(clock, iface, seed=3)
        m = fake_machine(emu, stretch_us)
        monkeypatch.setitem(sys.modules, "machine", m)
        return clock, emu, m, make_link(CONFIGS[iface], clock=clock)
    return make


@pytest.mark.parametrize("iface", sorted(CONFIGS))
def test_make_link_builds_the_bus_the_datasheet_asks_for_and_reads_cards(board, iface):
    clock, emu, m, link = board(iface)
    assert link.kind == iface
    kinds = [c[0] for c in m.made]
    assert kinds[0] == "Pin" and m.made[0][1:] == (RESET_GPIO, 1, 1)  # reset released at start
    if iface == "uart":
        assert m.made[1][2] == dict(baudrate=115200, tx=17, rx=16, timeout=0)  # non-blocking reads
    elif iface == "i2c":
        cfg = m.made[-1][2]
        assert cfg["freq"] == 400000 and cfg["timeout"] == I2C_TIMEOUT_US
        assert (cfg["scl"], cfg["sda"]) == (22, 21)
    else:
        assert m.made[-2][2] == dict(baudrate=1000000, polarity=0, phase=0)
        assert m.made[-1][1:] == (CS_GPIO, 1, 1)  # chip select idles high
    emu.script([(200, "place", UID), (1500, "remove"), (2500, "place", UID2)])
    taps, reader = _run_taps(link, clock, 4000)
    assert taps == [UID, UID2]
    assert reader.health()["errors"] == 0


def test_i2c_timeout_outlasts_the_clock_stretching(board):
    # The chip stretches SCL for hundreds of µs, more while busy: the link's bus timeout
    # must be far longer, and a stretch of a few ms still reads.
    assert I2C_TIMEOUT_US >= 10 * 1000
    clock, emu, m, link = board("i2c", stretch_us=5000)
    emu.place_card(UID, at_us=100_000)
    taps, reader = _run_taps(link, clock, 2000)
    assert taps == [UID]
    assert link.i2c.timeouts == 0 and link.bus_errors == 0


@pytest.mark.parametrize("iface", sorted(CONFIGS))
def test_make_link_reset_pin_cures_a_lockup(board, iface):
    clock, emu, m, link = board(iface)
    emu.script([(200, "place", UID), (1500, "remove"), (4000, "place", UID2)])
    fired = []

    def lock_up(ms):
        if ms >= 2000 and not fired:
            fired.append(1)
            emu.inject("mute")
    taps, reader = _run_taps(link, clock, 6000, lock_up)
    assert taps == [UID, UID2]
    h = reader.health()
    assert h["reset_pulses"] >= 1 and m.state["reset"].pulses == h["reset_pulses"]
