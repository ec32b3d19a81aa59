"""The unix virtual board: the real firmware on the MicroPython unix port.

Owns what a physical board would: the clock, flash (files standing in for
partitions), the PN532 link (TCP to the simulator's chip emulator), the POS link
(a TCP server the simulated till connects to), the MDB bus (a TCP server the
simulated vending machine controller connects to), feedback outputs and the watchdog.

Outputs and watchdog feeds are reported on stdout as event lines, `@` followed by
JSON, which the simulator reads; everything else on stdout is the log.

Clocks as an ESP32 has them (docs/time.md), driven by the simulator:
- CPOS_CLOCK: a file `{"delta": D}`: the world's true time is the host's clock + D; the
  simulator rewrites it when a scenario moves time forward. Absent: the host's clock.
- CPOS_RTC: a file holding the board's own clock at this start: `lost` (a power-on: the
  clock reads 2000-01-01 and counts from there, as an ESP32's does) or its offset from the
  true time (it kept counting across a firmware reset). `set_time` writes the offset
  back. Absent: the board's clock is the true time and kept.
- CPOS_DS3231: a file standing for a DS3231 battery RTC on I2C, `{"offset": o, "osf": b}`
  (`osf`: its oscillator stopped: the coin cell was out). Absent: no battery RTC.
CPOS_CONFIG: the path of config.json.
"""
import json
import os
import sys
import time

NAME = "unix"

_POWER_ON = 946684800  # 2000-01-01: what an ESP32's clock reads after a power-on
_CLOCK = os.getenv("CPOS_CLOCK")
_RTC = os.getenv("CPOS_RTC")
_delta = 0.0


def _read_json(path, default):
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return default


def true_now():
    """The world's time (float UTC s): not the firmware's to read; it drives the clocks below.
    The file is read at every call (tens of µs): a cached delta would let the board's clock
    and a time the firmware sets from the world disagree for a moment after an advance."""
    global _delta
    if _CLOCK:
        _delta = _read_json(_CLOCK, {}).get("delta", _delta)
    return time.time() + _delta


def _rtc_at_start():
    if not _RTC:
        return 0.0, True
    try:
        with open(_RTC) as f:
            text = f.read().strip()
    except OSError:
        text = "lost"
    try:
        return float(text), True
    except ValueError:
        return _POWER_ON - true_now(), False


_rtc_off, _kept = _rtc_at_start()


def event(kind, **fields):
    """One event line for the simulator."""
    fields["ev"] = kind
    sys.stdout.write("@")
    sys.stdout.write(json.dumps(fields))
    sys.stdout.write("\n")


def now():
    """The board's own clock, int seconds: UTC once something set it (cpos.timekeeper)."""
    return int(true_now() + _rtc_off)


def set_time(t):
    """Set the board's clock to UTC second `t`; it keeps counting across a firmware reset."""
    global _rtc_off
    _rtc_off = t - true_now()
    if _RTC:
        with open(_RTC, "w") as f:
            f.write(repr(_rtc_off))


def clock_kept():
    """True when the board's clock kept time across this start (not after a power cut)."""
    return _kept


class _DS3231Bus:
    """The I2C bus with a DS3231 on it (address 0x68), the chip's state in a file: its
    registers are the true time plus the chip's offset, in BCD, 24-hour mode."""

    def __init__(self, path):
        self.path = path

    def _state(self):
        return _read_json(self.path, {"offset": _POWER_ON - true_now(), "osf": True})

    def _save(self, st):
        with open(self.path, "w") as f:
            f.write(json.dumps(st))

    def readfrom_mem_into(self, addr, reg, buf):
        from cpos.localtime import civil_from_days

        if addr != 0x68:
            raise OSError(19)  # ENODEV: nothing answers at that address
        st = self._state()
        t = int(true_now() + st["offset"])
        days, s = divmod(t, 86400)
        y, m, d = civil_from_days(days)

        def bcd(n):
            return ((n // 10) << 4) | (n % 10)

        regs = bytearray(19)
        regs[0:7] = bytes((bcd(s % 60), bcd(s // 60 % 60), bcd(s // 3600), (days + 3) % 7 + 1, bcd(d),
                           bcd(m) | (0x80 if y >= 2100 else 0), bcd(y % 100)))
        regs[0x0F] = 0x80 if st["osf"] else 0
        for i in range(len(buf)):
            buf[i] = regs[(reg + i) % 19]

    def writeto_mem(self, addr, reg, buf):
        from cpos.localtime import days_from_civil

        if addr != 0x68:
            raise OSError(19)
        st = self._state()
        if reg == 0 and len(buf) >= 7:
            def unbcd(b):
                return (b >> 4) * 10 + (b & 15)

            y = 2000 + unbcd(buf[6]) + (100 if buf[5] & 0x80 else 0)
            t = (days_from_civil(y, unbcd(buf[5] & 0x1F), unbcd(buf[4] & 0x3F)) * 86400
                 + unbcd(buf[2] & 0x3F) * 3600 + unbcd(buf[1]) * 60 + unbcd(buf[0] & 0x7F))
            st["offset"] = t - true_now()
        elif reg == 0x0F and len(buf) >= 1:
            st["osf"] = bool(buf[0] & 0x80)
        self._save(st)


def battery_rtc(spec):
    """The DS3231 when the simulator gave this board one (CPOS_DS3231), else None."""
    path = os.getenv("CPOS_DS3231")
    if not path:
        return None
    from cpos.ds3231 import DS3231

    return DS3231(_DS3231Bus(path))


def config_path():
    return os.getenv("CPOS_CONFIG") or "config.json"


def block_device(spec):
    from cpos.blockfile import BlockFile

    if "file" not in spec:
        raise ValueError("the unix board keeps flash in files: storage needs \"file\" and \"size\"")
    return BlockFile(spec["file"], spec["size"])


def pn532_link(spec):
    from cpos.reader.link import make_link

    if spec.get("link") != "tcp":
        raise ValueError("the unix board reaches the PN532 emulator over tcp only")
    return make_link(spec)


def pos_link(spec):
    from cpos.pos.link import make_link

    if spec.get("link") == "uart":
        raise ValueError("the unix board serves the POS over tcp only")
    return make_link(spec)


def mdb_link(spec):
    """The vending machine's bus: a TCP server, each MDB byte as (mode, data) (docs/mdb.md)."""
    from cpos.mdb.link import make_link

    if spec.get("link") != "tcp":
        raise ValueError("the unix board serves MDB over tcp only")
    return make_link(spec)


class Outputs:
    """LED, buzzer and display as events (the simulator shows or records them). The
    display is a 128x64 MONO_VLSB framebuf, the SSD1306's own layout, drawn by
    `cpos.display` as on an OLED board; each frame goes out whole (hex) in its event,
    with the page's Danish and English line, for `python -m simulator run --frames`."""

    def __init__(self):
        import framebuf

        self.frame = bytearray(1024)
        self.fb = framebuf.FrameBuffer(self.frame, 128, 64, framebuf.MONO_VLSB)

    def led(self, colour):
        event("led", colour=colour)

    def buzzer(self, hz):
        event("buzzer", on=bool(hz), hz=hz)

    def display(self, page):
        from binascii import hexlify

        from cpos import display

        display.draw(self.fb, page)
        event("display", l1=page.da, l2=page.en, frame=hexlify(self.frame).decode())


def outputs(spec):
    return Outputs()


class Watchdog:
    """Reports feeds; the simulator stands for the hardware watchdog and kills the
    process (as a reset would) when feeds stop for longer than the timeout."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        event("wdt_start", timeout_ms=timeout_ms)

    def feed(self):
        event("wdt")


def watchdog(timeout_ms):
    return Watchdog(timeout_ms)


def log(line):
    print(line)


def restart():
    """A fatal error: on hardware machine.reset(). Here the process ends and the
    simulator powers the board up again: a reset, not an in-process restart, so no
    object of the failed run survives (as on the chip)."""
    event("restart")
    sys.exit(70)
