"""A small logger: levelled lines to a sink, and the last lines kept for health reports.

Owns log formatting only. The board decides where lines go (serial console on the
ESP32, stdout on the unix board). The ring of recent lines is preallocated.
"""
from cpos.compat import const, format_exception

DEBUG = const(10)
INFO = const(20)
WARN = const(30)
ERROR = const(40)
_NAMES = {DEBUG: "D", INFO: "I", WARN: "W", ERROR: "E"}


class Log:
    def __init__(self, sink=print, level=INFO, keep=16):
        self.sink = sink
        self.level = level
        self._ring = [None] * keep
        self._next = 0
        self.errors = 0

    def _emit(self, level, msg):
        if level >= ERROR:
            self.errors += 1
        if level < self.level:
            return
        line = "%s %s" % (_NAMES.get(level, "?"), msg)
        self._ring[self._next % len(self._ring)] = line
        self._next += 1
        self.sink(line)

    def debug(self, msg):
        self._emit(DEBUG, msg)

    def info(self, msg):
        self._emit(INFO, msg)

    def warn(self, msg):
        self._emit(WARN, msg)

    def error(self, msg, exc=None):
        if exc is not None:
            msg = "%s: %s" % (msg, format_exception(exc).replace("\n", " | "))
        self._emit(ERROR, msg)

    def recent(self):
        """The kept lines, oldest first."""
        n = len(self._ring)
        start = self._next - n if self._next > n else 0
        return [self._ring[i % n] for i in range(start, self._next)]
