"""What every ESP32 board shares: partitions, clock, PN532 and POS links, watchdog, LEDs, buzzer, OLED.

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
    """LEDs, buzzer (PWM: the pitch of each tone) and the screen: an OLED that
    `cpos.display` draws on, or, on a board without one, the console."""

    def __init__(self, pins, screen=None):
        self._green = machine.Pin(pins["led_green"], machine.Pin.OUT, value=0)
        self._red = machine.Pin(pins["led_red"], machine.Pin.OUT, value=0)
        self._buzzer = machine.PWM(machine.Pin(pins["buzzer"]), freq=pins.get("buzzer_hz", 2700), duty_u16=0)
        self._screen = screen

    def led(self, colour):
        # 0 off, 1 green, 2 red, 3 amber (both)
        self._green.value(colour in (1, 3))
        self._red.value(colour in (2, 3))

    def buzzer(self, hz):
        if hz:
            self._buzzer.freq(hz)
            self._buzzer.duty_u16(32768)
        else:
            self._buzzer.duty_u16(0)

    def display(self, page):
        if self._screen is None:
            print("DISPLAY |", page.text())
            return
        from cpos import display

        display.draw(self._screen, page)
        self._screen.show()  # one I2C write of the 1 KB frame (docs/feedback.md: ~24 ms at 400 kHz)


def _sh1106(ssd1306):
    """micropython-lib's SSD1306 driver for an SH1106: the same commands, except that the
    SH1106 has 132 columns (the panel's 128 start at column 2) and page addressing only,
    so the frame goes out page by page. Only `show` differs."""

    class SH1106_I2C(ssd1306.SSD1306_I2C):
        def show(self):
            w = self.width
            frame = memoryview(self.buffer)
            for page in range(self.pages):
                self.write_cmd(0xB0 | page)  # page address
                self.write_cmd(0x02)  # column address, low nibble: 2
                self.write_cmd(0x10)  # column address, high nibble: 0
                self.write_data(frame[page * w:(page + 1) * w])

    return SH1106_I2C


def oled(spec):
    """The 128x64 I2C OLED the spec names (`chip` "ssd1306" or "sh1106", `i2c`, `scl`,
    `sda`, `addr`, `freq`), driven by micropython-lib's `ssd1306`; None for none
    (no spec, or `"none"`), or, with one line on the console, when none answers."""
    if not spec or spec == "none":
        return None
    import ssd1306  # micropython-lib's, frozen by the board's manifest (require("ssd1306"))

    addr = spec.get("addr", 0x3C)
    i2c = machine.I2C(spec.get("i2c", 0), scl=machine.Pin(spec["scl"]), sda=machine.Pin(spec["sda"]),
                      freq=spec.get("freq", 400000))
    cls = _sh1106(ssd1306) if spec.get("chip") == "sh1106" else ssd1306.SSD1306_I2C
    try:
        return cls(128, 64, i2c, addr)
    except OSError:
        print("display: no OLED answers at I2C address 0x%02x: the display goes to the console" % addr)
        return None


class Esp32Board:
    def __init__(self, name, pins):
        self.NAME = name
        self.pins = pins

    def now(self):
        """The RTC, UTC seconds once something set it; after a power-on it reads 2000-01-01
        plus the uptime (cpos.timekeeper: unknown until a source answers, docs/time.md)."""
        return int(time.time()) + _EPOCH_SHIFT

    def clock_kept(self):
        """The RTC kept counting across this start only after a soft reset (machine.reset(),
        which the firmware uses) or a deep-sleep wake. MicroPython's ESP32 port reports a
        brownout as WDT_RESET, so a watchdog reset is not trusted either; a power-on, the
        EN button (HARD_RESET: the chip powers down) and anything else start unknown."""
        return machine.reset_cause() in (machine.SOFT_RESET, machine.DEEPSLEEP_RESET)

    def set_time(self, t):
        tm = time.gmtime(t - _EPOCH_SHIFT)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))

    def battery_rtc(self, spec):
        """A DS3231 on I2C when the config's `time.ds3231` names its bus and pins
        (it may share the PN532's bus: 0x68 against 0x24)."""
        if spec is None:
            return None
        from cpos.ds3231 import DS3231

        i2c = machine.I2C(spec.get("i2c", 0), scl=machine.Pin(spec["scl"]), sda=machine.Pin(spec["sda"]),
                          freq=spec.get("freq", 400000))
        return DS3231(i2c)

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
        wired = pins.get("display")
        pins.update(spec)
        if isinstance(wired, dict) and isinstance(pins.get("display"), dict):  # e.g. {"chip": "sh1106"}
            merged = dict(wired)
            merged.update(pins["display"])
            pins["display"] = merged
        return Outputs(pins, oled(pins.get("display")))

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def log(self, line):
        print(line)

    def restart(self):
        machine.reset()

    def install(self, module_globals):
        """Make a board.py module offer this board's interface (`board.now()`, ...)."""
        for name in ("now", "config_path", "log_path", "block_device", "pn532_link", "pos_link", "mdb_link", "outputs",
                     "watchdog", "log", "restart", "maintenance_requested", "network_up", "clock_kept",
                     "set_time", "battery_rtc"):
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
