"""The terminal's on-flash log: warnings, errors, boots and health reports in a small file.

Owns what a technician reads with `cpos logs` / `cpos status` once mpremote has
stopped the app (connecting interrupts it). `FileSink` passes every line on to the
board's sink and appends to `path`, stamped with the board clock, only the lines that
matter later: W and E lines, the periodic `health` report and a `boot` line per start.
So in normal running flash sees one short append every 30 s. Past `limit` bytes the
file is cut to its newer half. Writing the log never stops the app: a failed write is
dropped. `read(path)` parses the file back (used by cpos.status).
"""
import os

_KEEP = ("W ", "E ", "I health ", "I boot")


class FileSink:
    def __init__(self, sink, path, now, limit=8192):
        self.sink = sink
        self.path = path
        self.now = now
        self.limit = limit
        self.write("I boot")

    def __call__(self, line):
        self.sink(line)
        for k in _KEEP:
            if line.startswith(k):
                self.write(line)
                return

    def write(self, line):
        try:
            with open(self.path, "a") as f:
                f.write("%d %s\n" % (self.now(), line))
            if os.stat(self.path)[6] > self.limit:
                self._cut()
        except OSError:
            pass  # a full or failing filesystem must not stop a terminal

    def _cut(self):
        with open(self.path) as f:
            text = f.read()
        text = text[len(text) // 2:]
        text = text[text.find("\n") + 1:]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.path)


def read(path):
    """[(t, line)] from a log file, oldest first; [] if there is none."""
    out = []
    try:
        f = open(path)
    except OSError:
        return out
    with f:
        for raw in f:
            raw = raw.rstrip("\n")
            sp = raw.find(" ")
            if sp > 0:
                try:
                    out.append((int(raw[:sp]), raw[sp + 1:]))
                except ValueError:
                    pass
    return out
