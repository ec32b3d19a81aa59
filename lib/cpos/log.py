"""The one logging interface: levelled lines to a sink.

    log = Log(board.log)          # or Log(devlog.FileSink(...)) to keep lines on flash
    log.security("sync: refused message: bad tag")   # -> "S sync: refused message: bad tag"

Owns log formatting only. Every subsystem that logs takes a `Log` (or `NULL`, the
default, which drops everything) as its `log=` argument and picks the level of each
line itself: D debug, I info, W warn, S security, E error. S marks what an attacker or
a misconfigured peer could cause: refused, forged, replayed or out-of-order downlink
messages (cpos.net.sync), bad or unsigned acks (cpos.net.uplink), a broker refusing
the connection or a subscription (cpos.net.mqtt). It sits between W and E: above a
warning, but not counted in `errors` (the app's own failures). The board decides where
lines go (serial console on the ESP32, stdout on the unix board; cpos.devlog keeps
W, S and E on flash).
"""
from cpos.compat import const, format_exception

DEBUG = const(10)
INFO = const(20)
WARN = const(30)
SECURITY = const(35)
ERROR = const(40)
_NAMES = {DEBUG: "D", INFO: "I", WARN: "W", SECURITY: "S", ERROR: "E"}


class Log:
    def __init__(self, sink=print, level=INFO):
        self.sink = sink
        self.level = level
        self.errors = 0

    def _emit(self, level, msg):
        if level >= ERROR:
            self.errors += 1
        if level < self.level:
            return
        self.sink("%s %s" % (_NAMES.get(level, "?"), msg))

    def debug(self, msg):
        self._emit(DEBUG, msg)

    def info(self, msg):
        self._emit(INFO, msg)

    def warn(self, msg):
        self._emit(WARN, msg)

    def security(self, msg):
        """Something refused that a forger, a replayer or a misconfigured peer caused."""
        self._emit(SECURITY, msg)

    def error(self, msg, exc=None):
        if exc is not None:
            msg = "%s: %s" % (msg, format_exception(exc).replace("\n", " | "))
        self._emit(ERROR, msg)


class _Null(Log):
    """A Log that drops every line, without formatting it."""

    def __init__(self):
        Log.__init__(self, None, ERROR + 1)

    def _emit(self, level, msg):
        pass


NULL = _Null()  # the `log=` default of every subsystem: one shared object, no state that changes
