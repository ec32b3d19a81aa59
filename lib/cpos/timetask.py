"""The time task: asks the time sources and hands their answers to the timekeeper.

Owns when each source is asked (docs/time.md): the battery RTC at boot (the app calls
`read_rtc` before the first tap) and every
`rtc_every_s` as a cross-check, written back from a better source when it is off or old;
SNTP at start, every `retry_s` while the time is unknown, every `sntp_every_s` once it
answers (a silent server is asked again after `retry_s`, doubling up to that); the backend, by asking
the sync engine for a fresh `current` answer (which carries its time) while the time is
unknown or its last backend time is older than `backend_every_s`. What to believe is the
timekeeper's decision (cpos.timekeeper), not this task's.

    task = TimeTask(keeper, cfg.time, rtc=board_rtc, sync=sync, log=log)
    await task.run()
"""
from cpos import log as logmod
from cpos import sntp, timekeeper as tk
from cpos.compat import sleep_ms

_RTC_WRITE_OFF_S = 2  # rewrite the RTC when it is this far off the time in use


class TimeTask:
    def __init__(self, keeper, cfg, rtc=None, sync=None, log=None):
        self.keeper = keeper
        self.cfg = cfg
        self.rtc = rtc
        self.sync = sync
        self.log = log or logmod.NULL
        self._addr = None
        self._sntp_ok = None  # None: not asked yet
        self._rtc_ok = None
        self._rtc_written = None  # raw() when this task last wrote the RTC

    # -- one source each ----------------------------------------------------------------
    def read_rtc(self):
        """Offer the battery RTC's time (at start, and as a periodic cross-check)."""
        if self.rtc is None:
            return
        k = self.keeper
        try:
            t = self.rtc.read()
        except OSError as e:
            if self._rtc_ok is not False:
                k.lost(tk.RTC, "no answer on I2C (%s)" % e)
            self._rtc_ok = False
            return
        if t is None:
            if self._rtc_ok is not False:
                k.lost(tk.RTC, "oscillator stopped or no date: its time is lost")
            self._rtc_ok = False
            return
        self._rtc_ok = True
        k.offer(tk.RTC, t)

    def write_rtc(self):
        """Set the RTC from the time in use when a better source set it and the RTC is off,
        lost or not written for a day."""
        k = self.keeper
        if self.rtc is None or not k.known or k.source not in (tk.BACKEND, tk.SNTP):
            return
        off = k.offset[tk.RTC]
        age = None if self._rtc_written is None else k.raw() - self._rtc_written
        if self._rtc_ok and off is not None and -_RTC_WRITE_OFF_S < off < _RTC_WRITE_OFF_S and (
                age is not None and age < 86400):
            return
        t = k.now()
        try:
            self.rtc.write(t)
        except (OSError, ValueError) as e:
            self.log.warn("time: could not set the RTC: %s" % e)
            return
        self._rtc_written = k.raw()
        self._rtc_ok = True
        k.offset[tk.RTC] = 0
        k.seen[tk.RTC] = k.raw()
        self.log.info("time: RTC set to %d from %s (it was %s)" % (
            t, tk.SOURCES[k.source], "lost" if off is None else "%+d s off" % off))

    async def ask_sntp(self):
        """One SNTP query; True if the server answered (whatever the keeper made of it)."""
        c = self.cfg.get("sntp")
        if c is None:
            return False
        k = self.keeper
        try:
            if self._addr is None:
                self._addr = sntp.resolve(c["host"], c.get("port", 123))
            t, rtt = await sntp.query(self._addr, c.get("timeout_ms", 1500))
        except OSError as e:  # SNTPError, or no route / no DNS yet
            self._addr = None
            if self._sntp_ok is not False:
                k.lost(tk.SNTP, str(e))
            self._sntp_ok = False
            return False
        self._sntp_ok = True
        k.offer(tk.SNTP, t, rtt)
        return True

    def ask_backend(self):
        """Ask the sync engine for a `current` answer when the backend's time is wanted."""
        k = self.keeper
        if self.sync is None:
            return
        seen = k.seen[tk.BACKEND]
        if not k.known or seen is None or k.raw() - seen > self.cfg.get("backend_every_s", 3600):
            self.sync.refresh()

    # -- the task -------------------------------------------------------------------------
    async def run(self):
        """Forever: SNTP every `retry_s` while the time is unknown, every `sntp_every_s` once
        known and answering (silent: `retry_s` doubling up to that). The backend (at most
        every minute) and the RTC between."""
        k = self.keeper
        cfg = self.cfg
        every = cfg.get("sntp_every_s", 3600)
        retry = cfg.get("retry_s", 5)
        rtc_every = cfg.get("rtc_every_s", 3600)
        wait = retry
        last_rtc = k.raw()
        first = True
        while True:
            ok = await self.ask_sntp()
            if first:
                first = False
                k.sntp_done()  # a held RTC time need not wait any longer
            self.ask_backend()
            self.write_rtc()
            if k.raw() - last_rtc >= rtc_every:
                last_rtc = k.raw()
                self.read_rtc()
                self.write_rtc()
            if not k.known:
                wait = retry  # a 48-byte packet every few seconds until the time is known
            elif ok:
                wait = every
            else:
                wait = min(wait * 2, every)
            slept = 0
            while slept < wait:
                step = min(wait - slept, 60)
                await sleep_ms(step * 1000)
                slept += step
                self.ask_backend()
