"""One simulated terminal: the real firmware in a `micropython` process, its silicon emulated.

Owns a terminal's life in the simulator: its folder (config.json, flash files), the
PN532 emulator it reads cards from (TCP), the POS connection it is paid through,
its event lines, power cuts (SIGKILL: the process and the chip lose power at once;
the flash files keep what was written) and boots. It also stands in for the
hardware watchdog: if a running terminal stops feeding for longer than its
timeout, it is reset like a power cut followed by a boot.
"""
import asyncio
import json
import os
import signal
import socket
import time

from cpos.blockfile import BlockFile
from host_tools import bundle
from simulator.pn532_carriers import TCPServer
from simulator.pn532_emu import Card, PN532Emu, RealClock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESET_EXIT = 70  # boards/unix/board.py restart(): the firmware asked for a reset
HEAP_CAP_KB = 192  # the WROOM stand-in for data (docs/heap.md)
JOURNAL_SIZE = 64 * 4096
CARDTABLE_SIZE = 256 * 4096


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def micropython():
    return bundle.tool("micropython")


class ScenarioClock:
    """A run's clock, the world's true time: the scenario's `start` (UTC seconds) plus the
    seconds since the run began plus every `advance` (a scenario moving time forward by
    hours or days). The site's ledger, its SNTP server and every clock of the terminals
    run on it: the boards read it from the file at `path` (`{"delta": D}`: true time = the
    host's clock + D), rewritten at each advance."""

    def __init__(self, start, path=None):
        self.start = start
        self.t0 = time.monotonic()
        self.skipped = 0.0
        self.path = path
        self._publish()

    def elapsed(self):
        """Real seconds since the run began (the timeline's axis; advances do not count)."""
        return time.monotonic() - self.t0

    def __call__(self):
        return self.start + self.elapsed() + self.skipped

    def advance(self, seconds):
        """Move the world's time forward by `seconds`: every clock jumps with it, as if they
        had been running for that long. Time does not go back: a lying clock is a scenario's
        `clock_skew`, not the world's."""
        if seconds < 0:
            raise ValueError("the world's time moves forward only")
        self.skipped += seconds  # the boards read it from the file a moment later: the site's
        self._publish()  # clocks may lead theirs by a few µs, never by a stale read

    def _publish(self):
        if self.path is None:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"delta": self() - time.time()}, f)
        os.replace(tmp, self.path)


class SimTerminal:
    def __init__(self, spec, workdir, bundle_dir, epoch0, on_event=None, extra_config=None, code_kb=0,
                 clock=None):
        self.id = spec["id"]
        self.spec = spec
        self.dir = os.path.join(workdir, self.id)
        self.bundle_dir = bundle_dir
        self.epoch0 = epoch0
        self.on_event = on_event or (lambda term, ev: None)
        self.extra_config = extra_config or {}
        # the cap limits data; the code a frozen image would keep in flash comes on top
        self.heap_kb = HEAP_CAP_KB + code_kb
        self.emu = PN532Emu(RealClock(), "uart", 115200)
        self.chip = TCPServer(self.emu)
        self.pos_port = free_port()
        # a vending machine on MDB (docs/mdb.md): the terminal listens, the emulated VMC connects
        self.mdb = spec.get("mdb")
        self.mdb_port = free_port() if self.mdb else None
        self.vmc = None
        self.proc = None
        self.pos_reader = self.pos_writer = None
        self._waiting = {}  # POS ref -> future of (time, reply line)
        self._last_waiter = None  # future of the next `LAST ...` reply, when one is asked for
        self.stray_replies = []
        self.lose_replies = set()  # refs whose decision reply the till does not hear (a test's cable glitch)
        self.events = []  # every @event, in order
        self.log_lines = []
        self.boots = 0
        self.power_cuts = 0
        self.watchdog_resets = 0
        self.resets = 0
        self._killed = set()  # processes the simulator killed (power cut, watchdog)
        self._wdt_timeout_ms = None
        self._last_feed = 0.0
        self._tasks = []
        if clock is None or clock.path is None:  # a clock of its own, its file in the terminal's folder
            os.makedirs(self.dir, exist_ok=True)
            clock = ScenarioClock(epoch0, os.path.join(self.dir, "clock.json"))
        self.clock = clock  # the world's time (a ScenarioClock shared by the run's terminals)
        self.rtc_path = os.path.join(self.dir, "rtc.txt")  # the board's own clock (boards/unix)
        self.battery = bool(spec.get("rtc"))  # a DS3231 on a coin cell (scenario: "rtc": true)
        self.ds3231_path = os.path.join(self.dir, "ds3231.json")
        self.history = []  # (elapsed s, "boot" / "power_cut" / "watchdog" / "reset") for the report

    # -- set-up ------------------------------------------------------------------
    def config(self):
        cfg = {
            "terminal_id": self.id, "terminal_no": self.spec["no"], "site": self.spec.get("site", "sim"),
            "place": self.spec["place"], "kind": self.spec["kind"],
            "pn532": {"link": "tcp", "host": "127.0.0.1", "port": self.chip.port},
            "pos": {"link": "tcp", "host": "127.0.0.1", "port": self.pos_port},
            "storage": {"journal": {"file": os.path.join(self.dir, "journal.bin"), "size": JOURNAL_SIZE},
                        "cardtable": {"file": os.path.join(self.dir, "cards.bin"), "size": CARDTABLE_SIZE}},
            "watchdog_ms": 8000,
        }
        if self.mdb:
            cfg["mdb"] = {"link": "tcp", "host": "127.0.0.1", "port": self.mdb_port, "level": self.mdb["level"],
                          "state": {"file": os.path.join(self.dir, "mdbvend.bin"), "size": 2 * 4096}}
        cfg.update(self.extra_config)
        return cfg

    def prepare(self, install_table=None):
        """Create the folder, the config and erased flash; `install_table(dev)` fills the card table."""
        os.makedirs(self.dir, exist_ok=True)
        self.chip.start()
        self.lose_clock()  # new from the factory: never set
        if self.battery:  # set at installation, from a good clock
            self.ds3231({"offset": 0.0, "osf": False})
        cfg = self.config()
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        BlockFile(cfg["storage"]["journal"]["file"], cfg["storage"]["journal"]["size"]).close()
        if "mdb" in cfg:
            BlockFile(cfg["mdb"]["state"]["file"], cfg["mdb"]["state"]["size"]).close()
        dev = BlockFile(cfg["storage"]["cardtable"]["file"], cfg["storage"]["cardtable"]["size"])
        try:
            if install_table is not None:
                install_table(dev)
        finally:
            dev.close()

    # -- power -------------------------------------------------------------------
    async def boot(self, timeout=20.0):
        """Power on: start the firmware and connect the POS once it listens.
        A terminal that is already on stays as it is (returns False)."""
        if self.running():
            return False
        if self.pos_writer is not None:
            self.pos_writer.close()
            self.pos_writer = None
        env = dict(os.environ)
        env["MICROPYPATH"] = ".frozen:" + self.bundle_dir
        env["CPOS_CONFIG"] = os.path.join(self.dir, "config.json")
        env["CPOS_CLOCK"] = self.clock.path
        env["CPOS_RTC"] = self.rtc_path
        if self.battery:
            env["CPOS_DS3231"] = self.ds3231_path
        self.proc = await asyncio.create_subprocess_exec(
            micropython(), "-X", "heapsize=%dK" % self.heap_kb, "-c", "import main",
            env=env, cwd=self.dir, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self.boots += 1
        self.history.append((self.elapsed(), "boot"))
        self._console = open(os.path.join(self.dir, "console.log"), "a")
        self._console.write("--- boot %d at +%.2f s\n" % (self.boots, self.elapsed()))
        self._tasks.append(asyncio.ensure_future(self._read_stdout(self.proc)))
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.pos_reader, self.pos_writer = await asyncio.open_connection("127.0.0.1", self.pos_port)
                break
            except OSError:
                if self.proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError("%s did not start: %s" % (self.id, "\n".join(self.log_lines[-20:])))
                await asyncio.sleep(0.05)
        self._tasks.append(asyncio.ensure_future(self._read_pos(self.pos_reader)))
        if self.mdb:
            await self._vmc_up()
        return True

    async def _vmc_up(self):
        """The vending machine's controller (simulator/vmc.py) connects and initialises the reader."""
        from simulator.vmc import VMC

        if self.vmc is not None:
            self.vmc.close()
        self.vmc = VMC("127.0.0.1", self.mdb_port, level=self.mdb["level"], always_idle=self.mdb["always_idle"])
        await self.vmc.connect()
        await self.vmc.init()

    async def power_cut(self):
        """The plug is pulled: the process dies mid-whatever, the chip loses power too.
        Pulling the plug of a terminal that is off changes nothing (returns False)."""
        if not self.running():
            return False
        self.power_cuts += 1
        self.history.append((self.elapsed(), "power_cut"))
        await self._kill()
        self.lose_clock()
        self.emu.inject("reset")
        return True

    async def _kill(self):
        if self.vmc is not None:
            self.vmc.close()
            self.vmc = None
        if self.proc is not None and self.proc.returncode is None:
            self._killed.add(self.proc)
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        if self.pos_writer is not None:
            self.pos_writer.close()
            self.pos_writer = None
        self._wdt_timeout_ms = None

    async def stop(self):
        await self._kill()
        for t in self._tasks:
            t.cancel()
        self.chip.stop()

    def running(self):
        return self.proc is not None and self.proc.returncode is None

    # -- the card and the POS ------------------------------------------------------
    def place(self, uid):
        self.emu.place_card(Card(uid))

    def remove(self):
        self.emu.remove_card()

    async def send(self, line):
        if self.pos_writer is None:
            raise ConnectionError("%s: POS not connected" % self.id)
        self.pos_writer.write(line.encode() + b"\n")
        await self.pos_writer.drain()

    def expect(self, ref):
        """A future for the next reply about POS request `ref` (WAIT, APPROVED, ...)."""
        fut = asyncio.get_event_loop().create_future()
        self._waiting[ref] = fut
        return fut

    def expect_last(self):
        """A future for the next reply to `LAST` (it names no ref)."""
        self._last_waiter = asyncio.get_event_loop().create_future()
        return self._last_waiter

    async def _read_pos(self, reader):
        while True:
            line = await reader.readline()
            if not line:
                return
            text = line.decode(errors="replace").rstrip("\n")
            parts = text.split()
            if len(parts) > 1 and parts[0] in ("APPROVED", "REFUSED") and parts[1] in self.lose_replies:
                self.lose_replies.discard(parts[1])
                continue
            fut = self._waiting.pop(parts[1], None) if len(parts) > 1 else None
            if parts and parts[0] == "LAST" and self._last_waiter is not None:
                fut, self._last_waiter = self._last_waiter, None
            if fut is not None and not fut.done():
                fut.set_result((time.monotonic(), text))
            else:
                self.stray_replies.append(text)

    async def _read_stdout(self, proc):
        while True:
            line = await proc.stdout.readline()
            if not line:
                await proc.wait()
                if proc not in self._killed and proc.returncode == RESET_EXIT:
                    # the firmware reset itself (board.restart): boot again, as the chip would
                    self.resets += 1
                    self.history.append((self.elapsed(), "reset"))
                    self._console.write("--- reset by the firmware\n")
                    self._tasks.append(asyncio.ensure_future(self.boot()))
                return
            text = line.decode(errors="replace").rstrip("\n")
            if text.startswith("@"):
                try:
                    ev = json.loads(text[1:])
                except ValueError:
                    self.log_lines.append(text)
                    continue
                ev["_t"] = time.monotonic()
                if ev.get("ev") != "wdt":
                    self._console.write(text + "\n")
                if ev.get("ev") == "wdt":
                    self._last_feed = ev["_t"]
                    continue
                if ev.get("ev") == "wdt_start":
                    self._wdt_timeout_ms = ev["timeout_ms"]
                    self._last_feed = ev["_t"]
                self.events.append(ev)
                self.on_event(self, ev)
            else:
                self.log_lines.append(text)
                self._console.write(text + "\n")
                self._console.flush()

    async def watchdog(self):
        """The hardware watchdog: reset a terminal that stopped feeding it."""
        while True:
            await asyncio.sleep(0.25)
            if (self.running() and self._wdt_timeout_ms
                    and (time.monotonic() - self._last_feed) * 1000 > self._wdt_timeout_ms):
                self.watchdog_resets += 1
                self.history.append((self.elapsed(), "watchdog"))
                self.log_lines.append("SIMULATOR: watchdog reset")
                await self._kill()
                self.lose_clock()  # an ESP32 reports a brownout as a watchdog reset: not trusted
                self.emu.inject("reset")
                await self.boot()

    # -- clocks (docs/time.md) -----------------------------------------------------
    def lose_clock(self):
        """The board's own clock loses its time (a power cut): it reads 2000-01-01 at the next
        start. A firmware reset (board.restart) leaves it counting."""
        with open(self.rtc_path, "w") as f:
            f.write("lost")

    def ds3231(self, state=None):
        """The battery RTC's state ({"offset": s from the true time, "osf": stopped}); set it
        when `state` is given."""
        if state is not None:
            with open(self.ds3231_path, "w") as f:
                json.dump(state, f)
            return state
        with open(self.ds3231_path) as f:
            return json.load(f)

    def rtc_lost(self):
        """The coin cell is out: the DS3231's oscillator stopped (OSF set, time gone)."""
        if self.battery:
            self.ds3231({"offset": 946684800 - self.clock(), "osf": True})

    def rtc_skew(self, seconds):
        """The DS3231 lies: its time moves by `seconds` (a drifted or tampered chip)."""
        if self.battery:
            st = self.ds3231()
            st["offset"] += seconds
            self.ds3231(st)

    def elapsed(self):
        return self.clock.elapsed()
