"""The terminal's on-flash log: warnings, security events, errors, boots and health reports.

    sink = FileSink(board.log, board.log_path(), board.now)   # then cpos.log.Log(sink)

Owns what a technician reads with `cpos logs` / `cpos status` once mpremote has
stopped the app (connecting interrupts it). `FileSink` passes every line on to the
board's sink and appends to `path`, stamped with the board clock, only the lines that
matter later: W, S and E lines (cpos.log levels), the periodic `health` report and a
`boot` line per start. So in normal running flash sees one short append every 30 s.

W, S and E lines are rate-limited, so that a flood (forged messages arriving as fast
as the broker delivers them, each refused with an S line) cannot wear the flash out: a
token bucket on the board clock lets `burst` lines through at once and refills one
token every `every` seconds. A line that finds the bucket empty still reaches the
console but is not kept; the next line that is kept (or the next health or boot line,
which the bucket does not meter: they come at their own slow pace) is preceded by one
line `W log: N lines not kept (rate limit)`. With the defaults (20, 30 s) a flood adds
at most one append every 30 s after the first 20 lines, as much as health already costs.

Past `limit` bytes the file is cut to its newer half. Writing the log never stops the
app: a failed write is dropped. `read(path)` parses the file back (used by cpos.status
and `cpos logs`).
"""
import os

_METERED = ("W ", "S ", "E ")  # kept within the token bucket
_ALWAYS = ("I health ", "I boot")  # kept always: one per start, one per health period


class FileSink:
    def __init__(self, sink, path, now, limit=8192, burst=20, every=30):
        self.sink = sink
        self.path = path
        self.now = now
        self.limit = limit
        self.burst = burst
        self.every = every
        self._tokens = burst
        self._filled = now()  # board clock when the bucket last gained a token
        self.dropped = 0  # metered lines not kept since the last kept line
        self.write("I boot")

    def __call__(self, line):
        self.sink(line)
        for k in _METERED:
            if line.startswith(k):
                if self._take():
                    self.write(line)
                else:
                    self.dropped += 1
                return
        for k in _ALWAYS:
            if line.startswith(k):
                self.write(line)
                return

    def _take(self):
        """True and one token less, or False when the bucket is empty. Refills from the
        board clock: one token per `every` s since the last refill, at most `burst`."""
        t = self.now()
        if t < self._filled:  # the clock was set back: count from now
            self._filled = t
        n = (t - self._filled) // self.every
        if n:
            self._tokens = min(self.burst, self._tokens + n)
            self._filled += n * self.every
        if self._tokens <= 0:
            return False
        self._tokens -= 1
        return True

    def write(self, line):
        t = self.now()
        try:
            with open(self.path, "a") as f:
                if self.dropped:
                    f.write("%d W log: %d lines not kept (rate limit)\n" % (t, self.dropped))
                    self.dropped = 0
                f.write("%d %s\n" % (t, line))
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
