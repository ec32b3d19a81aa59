"""How long the event loop was held by the process's own code (device-test helper, both runtimes).

A task naps `nap_ms` again and again and keeps the longest overshoot. On a busy machine an
overshoot also holds time the process was ready to run but waiting for a core: Linux counts
that in /proc/self/schedstat (second field, ns), and it is taken out, since it is the
machine's and not the code's. What is left is the loop held: a blocking call, a sleep that
does not yield, one long step. So a bound on it holds on a busy machine as on a quiet one.
Without schedstat (not Linux) the overshoot counts whole, and `corrected` says so.
"""
from cpos.compat import ticks_diff, ticks_ms
from cpos.net.mqtt import sleep_ms


def waited_ms():
    """Milliseconds this process has waited for a core since it started, or None."""
    try:
        with open("/proc/self/schedstat") as f:
            return int(f.read().split()[1]) // 1000000
    except (OSError, ValueError, IndexError):
        return None


class LoopGap:
    """`start()`, then `lap(expected_ms)` after each wait that should have lasted that long;
    or `run()` as a task of its own that naps `nap_ms` again and again."""

    def __init__(self, nap_ms=10):
        self.nap_ms = nap_ms
        self.worst_ms = 0  # the longest overshoot, less the time spent waiting for a core
        self.ticks = 0
        self.corrected = waited_ms() is not None
        self.stop = False
        self.start()

    def start(self):
        self._last, self._waited = ticks_ms(), waited_ms()

    def lap(self, expected_ms):
        now, w = ticks_ms(), waited_ms()
        held = ticks_diff(now, self._last) - expected_ms
        if self._waited is not None and w is not None:
            held -= w - self._waited
        if held > self.worst_ms:
            self.worst_ms = held
        self.ticks += 1
        self._last, self._waited = now, w

    async def run(self, each=None):
        """Until `stop` is set; `each()` is called after every nap (e.g. to count)."""
        self.start()
        while not self.stop:
            await sleep_ms(self.nap_ms)
            self.lap(self.nap_ms)
            if each is not None:
                each()
