"""The terminal's on-flash log: warnings, security events, errors, boots and health reports.

    sink = FileSink(board.log, board.log_path(), board.now)   # then cpos.log.Log(sink)

Owns what a technician reads with `cpos logs` / `cpos status` once mpremote has
stopped the app (connecting interrupts it). `FileSink` passes every line on to the
board's sink and appends to `path`, stamped with the board clock, only the lines that
matter later: W, S and E lines (cpos.log levels), the periodic `health` report and a
`boot` line per start. So in normal running flash sees one short append every 30 s.

Stamps: the board clock until the app has its trusted time (cpos.timekeeper), then the
keeper's time (`use_clock`). A line written while that time is unknown (after a power
cut, before any source answered) is stamped with the floor, a lower bound, and marked
`~` after the number (`1764068403~ W ...`): `read(path, marks=True)` says which.

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
        self.keeper = None  # the app's TimeKeeper once it has one (`use_clock`); None: the board clock
        self.write("I boot")

    def use_clock(self, keeper):
        """Stamp from now on with the trusted time (`keeper.now`), marked while unknown."""
        self.now = keeper.now
        self.keeper = keeper

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
        mark = "~" if self.keeper is not None and not self.keeper.known else ""
        try:
            with open(self.path, "a") as f:
                if self.dropped:
                    f.write("%d%s W log: %d lines not kept (rate limit)\n" % (t, mark, self.dropped))
                    self.dropped = 0
                f.write("%d%s %s\n" % (t, mark, line))
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


def read(path, marks=False):
    """[(t, line)] from a log file, oldest first; [] if there is none. With `marks`,
    [(t, line, time_known)]: False where the line was stamped while the time was unknown
    (t is then a lower bound)."""
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
                known = raw[sp - 1] != "~"
                try:
                    t = int(raw[:sp] if known else raw[:sp - 1])
                except ValueError:
                    continue
                out.append((t, raw[sp + 1:], known) if marks else (t, raw[sp + 1:]))
    return out
