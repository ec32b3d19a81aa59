"""Test rig: our PN532 driver wired to the chip emulator over each interface (CPython)."""
import asyncio

from cpos.reader.pn532 import PN532
from cpos.reader.link import I2CLink, SPILink, StreamLink
from cpos.reader.tap import TAP, CardReader
from simulator.pn532_carriers import EmuCS, EmuI2C, EmuResetPin, EmuSPI, EmuStreamPort
from simulator.pn532_emu import PN532Emu, VirtualClock

INTERFACES = ("uart", "i2c", "spi")

UID4 = bytes.fromhex("04a1b2c3")
UID7 = bytes.fromhex("04112233445566")
UID10 = bytes.fromhex("04010203040506070809")

# One presentation for each tap rule (for Rig.emu.script); the reader must report three taps:
# UID4, UID4, UID10.
TAP_RULES = ((300, "place", UID4), (5000, "remove"),  # left on the reader ~5 s
             (5200, "place", UID4), (5800, "remove"),  # lifted 200 ms < window: same tap
             (7000, "place", UID4), (7400, "remove"),  # gone 1.2 s: new tap
             (7400, "place", UID10), (8000, "remove"))  # swapped: new tap


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
