"""The unix virtual board: the real firmware on the MicroPython unix port.

Owns what a physical board would: the clock, flash (files standing in for
partitions), the PN532 link (TCP to the simulator's chip emulator), the POS link
(a TCP server the simulated till connects to), the MDB bus (a TCP server the
simulated vending machine controller connects to), feedback outputs and the watchdog.

Outputs and watchdog feeds are reported on stdout as event lines, `@` followed by
JSON, which the simulator reads; everything else on stdout is the log.
Environment: CPOS_EPOCH0 (UTC seconds the clock starts at; default: the host clock),
CPOS_CONFIG (path of config.json).
"""
import json
import os
import sys
import time

NAME = "unix"

try:
    _EPOCH0 = int(os.getenv("CPOS_EPOCH0") or 0)
except ValueError:
    _EPOCH0 = 0
_T0_MS = time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)


def event(kind, **fields):
    """One event line for the simulator."""
    fields["ev"] = kind
    sys.stdout.write("@")
    sys.stdout.write(json.dumps(fields))
    sys.stdout.write("\n")


def now():
    """UTC epoch seconds (int). Starts at CPOS_EPOCH0 when the simulator sets it."""
    if _EPOCH0:
        return _EPOCH0 + time.ticks_diff(time.ticks_ms(), _T0_MS) // 1000
    return int(time.time())


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
    """LED, buzzer and display as events (the simulator shows or records them)."""

    def led(self, colour):
        event("led", colour=colour)

    def buzzer(self, on):
        event("buzzer", on=on)

    def display(self, line1, line2):
        event("display", l1=line1, l2=line2)


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
