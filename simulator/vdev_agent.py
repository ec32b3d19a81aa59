"""Runs inside the virtual device's MicroPython unix process: executes what the REPL gets.

Owns the device's side of simulator/virtual_device.py: a persistent interpreter whose
filesystem root `/` is a host folder, and an `esp32` module whose data partitions are
files (so the firmware's `board.block_device({"partition": ...})` finds the journal and
card table as on a flashed ESP32). At start it runs /boot.py, as MicroPython does after
a reset; then it loops: read `<length>\\n<code>` from stdin (`s<length>` for a friendly-REPL
line, whose expression values print), exec it in one globals dict,
write stdout, `\\x04`, the traceback if any, `\\x04`.

    micropython vdev_agent.py FS_ROOT PARTITION_DIR LIB_DIR

MicroPython only (it replaces `os` and `open` for the code it runs).
"""
import builtins
import sys

import os as _os

ROOT = sys.argv[1].rstrip("/")
PARTS = sys.argv[2].rstrip("/")
_real_open = builtins.open


def _host(p):
    """A device path as a host path: absolute paths are under ROOT and cannot leave it."""
    if type(p) is not str or not p.startswith("/"):
        return p
    parts = []
    for seg in p.split("/"):
        if seg == "..":
            if parts:
                parts.pop()
        elif seg and seg != ".":
            parts.append(seg)
    return ROOT + "/" + "/".join(parts)


class _DeviceOs:
    """`os` as device code sees it: paths mapped under ROOT, everything else passed on."""

    def __getattr__(self, name):
        return getattr(_os, name)

    def getcwd(self):
        cwd = _os.getcwd()
        return cwd[len(ROOT):] or "/" if cwd.startswith(ROOT) else cwd

    def chdir(self, p):
        _os.chdir(_host(p))

    def stat(self, p):
        return _os.stat(_host(p))

    def statvfs(self, p):
        return _os.statvfs(_host(p))

    def listdir(self, p="."):
        return _os.listdir(_host(p))

    def ilistdir(self, p="."):
        """(name, type, inode, size) as on a board's filesystem (the unix port omits size)."""
        base = _host(p)
        for e in _os.ilistdir(base):
            size = 0 if e[1] == 0x4000 else _os.stat(base + "/" + e[0])[6]
            yield (e[0], e[1], e[2], size)

    def mkdir(self, p):
        _os.mkdir(_host(p))

    def rmdir(self, p):
        _os.rmdir(_host(p))

    def remove(self, p):
        _os.remove(_host(p))

    def unlink(self, p):
        _os.remove(_host(p))

    def rename(self, a, b):
        _os.rename(_host(a), _host(b))

    def sync(self):
        pass


def _open(p, *args, **kw):
    return _real_open(_host(p), *args, **kw)


def _partitions(lib):
    """An `esp32` module: Partition.find over PARTS/<label>.bin (BlockFile semantics)."""
    sys.path.insert(0, lib)
    from cpos import blockfile
    sys.path.pop(0)
    blockfile.open = _real_open  # partition files are host paths, outside the device's /
    BlockFile = blockfile.BlockFile
    for name in [m for m in sys.modules if m == "cpos" or m.startswith("cpos.")]:
        del sys.modules[name]  # device code imports the deployed cpos, never this one

    class Partition(BlockFile):
        TYPE_APP = 0
        TYPE_DATA = 1

        def __init__(self, label):
            path = PARTS + "/" + label + ".bin"
            BlockFile.__init__(self, path)
            self.label = label
            self.f.seek(0, 2)
            self.size = self.f.tell()

        def info(self):
            return (1, 0x40, 0, self.size, self.label, False)

        @staticmethod
        def find(type=1, subtype=255, label=None):
            if type != 1:
                return []
            try:
                names = [n[:-4] for n in _os.listdir(PARTS) if n.endswith(".bin")]
            except OSError:
                return []
            return [Partition(n) for n in sorted(names) if label is None or n == label]

    class esp32:  # stands in for the module (MicroPython cannot make module objects)
        pass

    esp32.Partition = Partition
    return esp32


def _run(code, g, mode="exec"):
    try:
        exec(compile(code, "<stdin>", mode), g)
    except BaseException as e:  # noqa: BLE001 - reported to the host as the REPL does
        sys.stdout.write("\x04")
        sys.print_exception(e, sys.stdout)
        sys.stdout.write("\x04")
        return
    sys.stdout.write("\x04\x04")


def main():
    sys.modules["esp32"] = _partitions(sys.argv[3])
    sys.modules["os"] = _DeviceOs()
    builtins.open = _open
    _os.chdir(ROOT)
    sys.path[:] = ["", ".frozen", ROOT + "/lib"]  # an ESP32's search path: current folder first
    g = {"__name__": "__main__"}
    try:
        _os.stat(ROOT + "/boot.py")
        with _real_open(ROOT + "/boot.py") as f:
            boot = f.read()
    except OSError:
        boot = ""
    _run(boot, g)
    inp = sys.stdin.buffer
    while True:
        head = inp.readline()
        if not head:
            return
        mode = "exec"
        if head.startswith(b"s"):  # a friendly-REPL line: expression values are printed
            mode, head = "single", head[1:]
        n = int(head)
        code = b""
        while len(code) < n:
            more = inp.read(n - len(code))
            if not more:
                return
            code += more
        _run(code, g, mode)


main()
