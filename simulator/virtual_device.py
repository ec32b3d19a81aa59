"""A virtual CPOS terminal on a pseudo-terminal that the real `mpremote` can talk to.

Owns the serial side of a MicroPython device: the friendly and raw REPL as a board's
USB port speaks them (Ctrl-A raw REPL, Ctrl-B friendly, Ctrl-C interrupt, Ctrl-D run
or soft reset, raw-paste mode with its flow control). What the REPL is asked to run
goes to a persistent MicroPython unix-port process (simulator/vdev_agent.py) whose `/` is the folder `DIR/fs` and whose
`esp32.Partition.find` finds the files `DIR/partitions/<label>.bin`: the same
filesystem and partitions a flashed ESP32 terminal has, minus radio and pins (the
app itself is not started here; tests drive it through tests/ and the simulator).

    python -m simulator.virtual_device DIR [--partition LABEL:BYTES ...] [--hangup-after N] [--mute]

DIR may be relative (it is made absolute; created if missing). Prints `PORT /dev/pts/N`
once ready; `mpremote connect /dev/pts/N ...` and `cpos -p /dev/pts/N ...` then work
until it is stopped (Ctrl-C). If MicroPython cannot start there it says so on stderr
and exits 1 without printing a port.
--hangup-after N unplugs the device (closes the pty) after N bytes from the host;
--mute answers nothing (a serial port with no MicroPython behind it).
"""
import argparse
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import tty

from host_tools.bundle import ROOT, tool

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vdev_agent.py")
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
BANNER = b"\r\nMicroPython on the CPOS virtual device\r\nType \"help()\" for more information.\r\n>>> "
PASTE_WINDOW = 256
DEFAULT_PARTITIONS = (("journal", 64 * 1024), ("cardtable", 256 * 1024))


def make_partitions(pdir, parts):
    """Create missing partition files, erased (all 0xFF), as a fresh flash would be."""
    os.makedirs(pdir, exist_ok=True)
    for label, size in parts:
        path = os.path.join(pdir, label + ".bin")
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(b"\xff" * size)


def _cooked(data):
    """Line endings as a MicroPython console sends them."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Device:
    def __init__(self, folder, hangup_after=None, mute=False):
        folder = os.path.abspath(folder)  # the agent runs in fs/: a relative path would miss it
        self.fs = os.path.join(folder, "fs")
        self.parts = os.path.join(folder, "partitions")
        os.makedirs(self.fs, exist_ok=True)
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.hangup_after = hangup_after
        self.mute = mute
        self.received = 0
        self.raw = False
        self.line = b""
        self.swallow = 0
        self.paste = None  # bytes taken in raw-paste mode, None outside it
        self.agent = None
        self.running = False
        self.frame = []  # agent output of the running command, split on \x04
        self.crashed = False  # the interpreter died during the last command

    # -- the MicroPython process ---------------------------------------------------
    def start_agent(self):
        self.stop_agent()
        self.agent = subprocess.Popen([tool("micropython"), "-X", "heapsize=1M", AGENT, self.fs, self.parts,
                                       os.path.join(ROOT, "lib")],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=self.fs)
        out, err = self.collect()  # boot.py
        return out + err

    def stop_agent(self):
        if self.agent is not None and self.agent.poll() is None:
            self.agent.kill()
            self.agent.wait()
        self.agent = None

    def collect(self, forward=False):
        """Read the agent's answer to one command: (stdout, traceback). With forward,
        stdout goes to the host as it comes (raw REPL framing kept)."""
        parts = [b""]
        self.crashed = False
        fd = self.agent.stdout.fileno()
        while len(parts) < 3:
            r, _, _ = select.select([fd, self.master], [], [])
            if self.master in r:
                data = self._read_host()
                if data is None:
                    return None
                if b"\x03" in data:
                    self.agent.send_signal(signal.SIGINT)
            if fd not in r:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:  # the interpreter died: report it as a device would a crash
                self.crashed = True
                msg = b"virtual device: MicroPython exited\n"
                while len(parts) < 3:
                    if forward:
                        self.send((_cooked(msg) if len(parts) == 2 else b"") + b"\x04")
                    parts.append(b"")
                parts[1] = parts[1] or msg
                break
            pieces = chunk.split(b"\x04")
            for i, piece in enumerate(pieces):
                if i:
                    if forward:
                        self.send(b"\x04")
                    parts.append(b"")
                if len(parts) <= 2:
                    parts[-1] += piece
                    if forward and piece:
                        self.send(_cooked(piece))
        return parts[0], parts[1]

    def run(self, code, single=False):
        try:
            self.agent.stdin.write((b"s%d\n" if single else b"%d\n") % len(code) + code)
            self.agent.stdin.flush()
        except BrokenPipeError:
            pass  # the interpreter is gone: collect() reports it as a crash

    # -- the serial port -----------------------------------------------------------
    def send(self, data):
        os.write(self.master, data)

    def _read_host(self):
        try:
            data = os.read(self.master, 4096)
        except OSError:
            return b""
        self.received += len(data)
        if self.hangup_after is not None and self.received >= self.hangup_after:
            self.unplug()
            return None
        return data

    def unplug(self, status=0):
        self.stop_agent()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        sys.exit(status)

    def soft_reset(self):
        self.send(b"MPY: soft reboot\r\n")
        self.send(_cooked(self.start_agent() or b""))

    def on_byte(self, c):
        if self.swallow:
            self.swallow -= 1
            return
        if self.paste is not None:
            self.on_paste(c)
            return
        if c == 0x01:
            self.raw, self.line = True, b""
            self.send(b"\r\n" + RAW_PROMPT)
        elif c == 0x02:
            self.raw, self.line = False, b""
            self.send(BANNER)
        elif c == 0x03:
            self.line = b""
            if not self.raw:
                self.send(b"\r\n>>> ")
        elif c == 0x04:
            code, self.line = self.line, b""
            if self.raw:
                self.send(b"OK")
                if not code:
                    self.send(b"\r\n")
                    self.soft_reset()
                    self.send(RAW_PROMPT)
                    return
                self.run(code)
                if self.collect(forward=True) is None:
                    return
                self.send(b">")
            elif not code:
                self.soft_reset()
                self.send(BANNER)
        elif c == 0x05 and self.raw and not self.line:
            self.swallow = 2  # the rest of the raw-paste request "\x05A\x01"
            self.paste = 0
            self.send(b"R\x01" + struct.pack("<H", PASTE_WINDOW))
        elif self.raw:
            self.line += bytes([c])
        elif c == 0x0D:
            code, self.line = self.line, b""
            self.send(b"\r\n")
            if code.strip():
                self.run(code, single=True)
                got = self.collect()
                if got is None:
                    return
                self.send(_cooked(got[0] + got[1]))
            self.send(b">>> ")
        elif c >= 0x20 or c == 0x09:
            self.line += bytes([c])
            self.send(bytes([c]))

    def on_paste(self, c):
        """Raw-paste mode: code flows in windows of PASTE_WINDOW bytes, each one asked for
        with \x01 once taken; \x04 ends it (acknowledged with \x04), then it runs."""
        if c == 0x04:
            code, self.line, self.paste = self.line, b"", None
            self.send(b"\x04")
            self.run(code)
            if self.collect(forward=True) is not None:
                self.send(b">")
            return
        self.line += bytes([c])
        self.paste += 1
        if self.paste % PASTE_WINDOW == 0:
            self.send(b"\x01")

    def serve(self):
        if not self.mute:
            out = self.start_agent()
            if self.crashed:
                text = out.decode(errors="replace").strip().splitlines()
                print("virtual device: MicroPython did not start in %s (%s)"
                      % (self.fs, text[-1] if text else "no output"), file=sys.stderr, flush=True)
                self.unplug(1)
        print("PORT", self.port, flush=True)
        while True:
            select.select([self.master], [], [])
            data = self._read_host()
            if data is None:
                return
            if self.mute:
                continue
            for c in data:
                self.on_byte(c)


def _partition(text):
    label, _, size = text.partition(":")
    return label, int(size, 0)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m simulator.virtual_device", description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="the device's folder: fs/ is its filesystem, partitions/ its data partitions")
    ap.add_argument("--partition", type=_partition, action="append",
                    help="LABEL:BYTES data partition (default: journal:65536 cardtable:262144); 'none' for none")
    ap.add_argument("--no-partitions", action="store_true", help="a MicroPython board without the CPOS layout")
    ap.add_argument("--hangup-after", type=int, default=None, help="unplug after this many bytes from the host")
    ap.add_argument("--mute", action="store_true", help="no MicroPython behind the port")
    a = ap.parse_args(argv)
    dev = Device(a.dir, a.hangup_after, a.mute)
    make_partitions(dev.parts, [] if a.no_partitions else (a.partition or DEFAULT_PARTITIONS))
    signal.signal(signal.SIGTERM, lambda *_: dev.unplug())
    try:
        dev.serve()
    except KeyboardInterrupt:
        dev.unplug()


if __name__ == "__main__":
    main()
