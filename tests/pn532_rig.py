"""Test rig: our PN532 driver wired to the chip emulator over each interface (CPython)."""
import asyncio

from cpos.reader.pn532 import PN532
from cpos.reader.link import I2CLink, SPILink, StreamLink
from cpos.reader.tap import TAP, CardReader
from simulator.pn532_carriers import EmuCS, EmuI2C, EmuResetPin, EmuSPI, EmuStreamPort
from simulator.pn532_emu import PN532Emu, VirtualClock

INTERFACES = ("uart", "i2c", "spi")


class Rig:
    def __init__(self, interface="uart", reset_wired=True, i2c_timeout_us=None, seed=1, **emu_kw):
        self.clock = VirtualClock()
        self.emu = PN532Emu(self.clock, interface, seed=seed, **emu_kw)
        self.reset_pin = EmuResetPin(self.emu) if reset_wired else None
        if interface == "uart":
            self.bus = EmuStreamPort(self.emu)
            self.link = StreamLink(self.bus, reset=self.reset_pin, clock=self.clock)
        elif interface == "i2c":
            self.bus = EmuI2C(self.emu, timeout_us=i2c_timeout_us)
            self.link = I2CLink(self.bus, reset=self.reset_pin, clock=self.clock)
        else:
            self.bus = EmuSPI(self.emu)
            self.link = SPILink(self.bus, EmuCS(self.bus), reset=self.reset_pin, clock=self.clock)
        self.pn = PN532(self.link)

    def run(self, coro):
        return asyncio.run(coro)

    def ms(self):
        return self.clock.us / 1000.0

    def taps(self, until_ms, reader=None, on_step=None, **kw):
        """Run a CardReader until `until_ms` of emulated time; return [(ms, uid hex)]."""
        reader = reader or CardReader(self.pn, **kw)
        self.reader = reader
        out = []

        async def main():
            while self.ms() < until_ms:
                r = await reader.step()
                if r == TAP:
                    out.append((self.ms(), bytes(reader.uid[:reader.uid_len]).hex()))
                if on_step:
                    on_step(self, r)
                await self.clock.sleep_ms(reader.pause_ms)

        asyncio.run(main())
        return out
