"""Trusted time: which time the terminal uses, where it came from, and what it refuses.

Owns every decision about the wall clock (docs/time.md). The board's own clock (`raw`,
board.now) counts seconds from power-on but is set only when something sets it: after a
power loss an ESP32 reads 2000-01-01. Sources offer a time; the keeper accepts or refuses
each offer and logs why. Sources, most trusted first:

    BACKEND  the backend's time in its signed `current` answer to our nonce (cpos.net.sync)
    SNTP     a configured SNTP server (cpos.sntp)
    RTC      a battery-backed DS3231 (cpos.ds3231), where the board has one
    BOARD    the board's clock, when it kept time across this start (a soft reset)

The floor: the terminal never uses a time earlier than its newest journal record or the
newest backend time it accepted (invariant 8); `floor()` also grows by the seconds the
board's clock has counted since (a lower bound on the true time stays one). An offer below
the floor is refused; so is an offer that moves a known time by more than `step_s` (only
the backend may step further), and, while the time is unknown, one more than `ahead_s`
beyond a floor the journal or the backend gave (the build date alone bounds nothing ahead:
a terminal may be installed years after it was built). While the time is unknown, a source
other than the backend must also agree with any other source heard meanwhile (both are
refused when they disagree), SNTP alone is not believed where `alone[SNTP]` is False (a
terminal with the signed downlink), and the RTC waits for a due SNTP answer. Refusals of
network sources are logged at S (an attacker gains a spent window back by moving the
clock either way), of the RTC and the board at W.

Until an offer is accepted the time is unknown: `now()` is the floor, `known` is False,
and the app follows the documented policy (`untimed_reason`, docs/rules.md). Pure logic
over a raw clock it is given: runs and is tested on both runtimes.
"""
from cpos import log as logmod
from cpos import reasons, rules
from cpos.compat import const, ticks_diff, ticks_ms

BUILD_FLOOR = const(1735689600)  # 2025-01-01 00:00 UTC: no true time is earlier than this build

BACKEND = const(0)
SNTP = const(1)
RTC = const(2)
BOARD = const(3)
SOURCES = ("backend", "sntp", "rtc", "board")

STEP_S = const(120)  # default: how far a source other than the backend may move a known time
AHEAD_S = const(2592000)  # default: 30 days; how far past the floor an unknown time may be set
_SETTER_STALE_S = const(3600)  # a less trusted source may steer once the setter is this old
MAX_RTT_MS = const(10000)  # a backend answer that took longer is too old to set a clock by


class TimeKeeper:
    """`TimeKeeper(raw, log, step_s, ahead_s, set_raw)`: `raw()` is the board's clock (int
    seconds); `set_raw(t)`, when the board has it, sets that clock (so a soft reset keeps it)."""

    def __init__(self, raw, log=None, step_s=STEP_S, ahead_s=AHEAD_S, set_raw=None):
        self._raw = raw
        self._set_raw = set_raw
        self.log = log or logmod.NULL
        self.step_s = step_s
        self.ahead_s = ahead_s
        self.known = False
        self.source = -1  # the source that set the time in use (-1: none)
        self._off = 0  # time = raw() + _off while known
        r = raw()
        self._last_raw = r
        self._floor = BUILD_FLOOR
        self._floor_raw = r
        self.floor_why = "build"
        self.persist = None  # called with each new backend floor, to keep it across a power cut
        self._set_at = r  # raw when the time in use was last steered
        self.offset = [None, None, None, None]  # per source: its last offer minus the time in use
        self.seen = [None, None, None, None]  # per source: raw() of its last offer
        self.accepted = [0, 0, 0, 0]
        self.refused = [0, 0, 0, 0]
        self.alone = [True, True, True, True]  # per source: may set an unknown time alone
        self.sntp_due = False  # an SNTP answer is expected: a held RTC time waits for it
        self._held = [None, None, None, None]  # per source: (t, raw) held for a second opinion
        self._expect_until = None  # ticks_ms until which the tap path may wait for a first time
        self._news = None  # asyncio.Event, made on first use (none on a keeper used without a loop)
        self._jumps = 0  # the board clock's own jumps (set by the keeper, stepped back by someone)

    # -- what the app reads ----------------------------------------------------------
    def _r(self):
        """The board's clock, which only counts up unless the keeper sets it: a step back
        (someone else set it) is logged and every mark moved with it, so neither the floor
        nor the time in use goes back with it."""
        r = self._raw()
        if r < self._last_raw:
            self._shift(r - self._last_raw)
            self._off -= r - self._last_raw
            self.log.warn("time: the board's clock stepped back %d s; the time in use did not" % (self._last_raw - r))
        self._last_raw = r
        return r

    def raw(self):
        """The board's clock as the keeper counts it (for ages and intervals, not a time)."""
        return self._r()

    def elapsed(self):
        """Seconds the board's clock has counted since this start, its jumps taken out: for
        how long something took across a change of the time in use (cpos.net.sync)."""
        return self._r() - self._jumps

    def _shift(self, d):
        self._jumps += d
        self._floor_raw += d
        self._set_at += d
        for i in range(4):
            if self.seen[i] is not None:
                self.seen[i] += d

    def floor(self):
        """The lower bound on the true time: the newest journal record or accepted backend
        time, plus what the board's clock has counted since."""
        return self._floor + (self._r() - self._floor_raw)

    def now(self):
        """UTC seconds: the time in use, never below the floor; the floor while unknown."""
        r = self._r()
        lb = self._floor + (r - self._floor_raw)
        if self.known:
            t = r + self._off
            if t >= lb:
                return t
        return lb

    def raise_floor(self, t, why):
        """A time known to have passed (a journal record's, an accepted backend time)."""
        if t > self.floor():
            self._floor = t
            self._floor_raw = self._r()
            self.floor_why = why
            if why == "backend" and self.persist is not None:
                self.persist(t)  # after a power cut the floor is never below a time the backend gave

    # -- offers ------------------------------------------------------------------------
    def offer(self, src, t, rtt_ms=0):
        """A source says the time is `t` (UTC s). Returns True if accepted (and steered by
        it, or confirmed within bounds), False if refused; either way logged."""
        name = SOURCES[src]
        lb = self.floor()
        cur = self.now()
        r = self._r()
        self.seen[src] = r
        self.offset[src] = t - cur
        if src == BACKEND and rtt_ms > MAX_RTT_MS:  # held by the network, or asked before a long stall
            return self._refuse(src, "a backend time %d that took %d ms to arrive (more than %d): too old to "
                                "set the clock by" % (t, rtt_ms, MAX_RTT_MS), fault=True)
        if t < lb:
            return self._refuse(src, "%s time %d is %d s behind the floor %d (%s)" % (
                name, t, lb - t, lb, self.floor_why))
        if self.known:
            d = t - cur
            if src != BACKEND and (d > self.step_s or -d > self.step_s):
                return self._refuse(src, "%s time %d differs from the time in use (%s) by %+d s, more than %d s" % (
                    name, t, SOURCES[self.source], d, self.step_s))
            steer = src <= self.source or r - self._set_at > _SETTER_STALE_S
            if not steer:
                self.accepted[src] += 1
                self.log.info("time: %s agrees within %+d s; %s keeps the time" % (name, d, SOURCES[self.source]))
                return True
            if d > 1 or d < -1 or src != self.source:
                self.log.info("time: %s moves the clock by %+d s (rtt %d ms)" % (name, d, rtt_ms))
        else:
            if src != BACKEND and self.floor_why != "build" and t - lb > self.ahead_s:
                return self._refuse(src, "%s time %d is %d s ahead of the floor %d (%s), more than %d s" % (
                    name, t, t - lb, lb, self.floor_why, self.ahead_s))
            if src != BACKEND:
                why = self._unknown_check(src, t, r)
                if why is not None:
                    return why == ""  # "": held (not refused); else refused, logged
            self.log.info("time: set by %s to %d (%d s above the floor, rtt %d ms); was unknown" % (
                name, t, t - lb, rtt_ms))
        self._held[src] = None
        self._steer(src, t)
        if src == BACKEND:
            self.raise_floor(t, "backend")
        self.accepted[src] += 1
        self._wake()
        return True

    def _unknown_check(self, src, t, r):
        """While the time is unknown, a source other than the backend is cross-checked: it
        must agree within `step_s` with every other source held meanwhile (both are refused
        when they disagree: a wrong time is worse than none). Alone, it may set the time if
        `alone[src]`, and the RTC not while an SNTP answer is still due. Returns None (set
        it), "" (held for a second opinion) or the refusal's text (refused, logged)."""
        name = SOURCES[src]
        agree = False
        for i in range(1, 4):
            h = self._held[i]
            if i == src or h is None:
                continue
            other = h[0] + (r - h[1])  # its time now
            if other - t > self.step_s or t - other > self.step_s:
                self._held[i] = None
                self.refused[i] += 1
                self._refuse(src, "%s time %d and %s time %d disagree by %d s: neither is believed" % (
                    name, t, SOURCES[i], other, t - other))
                return "refused"
            agree = True
        if agree:
            self.log.info("time: %s and a held source agree within %d s" % (name, self.step_s))
            return None
        if self.alone[src] and not (src == RTC and self.sntp_due):
            return None
        self._held[src] = (t, r)
        self.log.info("time: %s time %d held until a second source agrees (%s)" % (
            name, t, "an SNTP answer is due" if src == RTC else "alone it is not believed here"))
        return ""

    def sntp_done(self):
        """The first SNTP exchange ended (answered, refused or silent): a held RTC or board
        time may now set an unknown time alone."""
        self.sntp_due = False
        if self.known:
            return
        for i in (RTC, BOARD):
            h = self._held[i]
            if h is not None and self.alone[i]:
                self._held[i] = None
                self.offer(i, h[0] + (self._r() - h[1]))
                return

    def _steer(self, src, t):
        if self._set_raw is not None and (t - self.now() > 1 or self.now() - t > 1 or not self.known):
            old = self._r()
            self._set_raw(t)
            self._last_raw = self._raw()
            self._shift(self._last_raw - old)  # the board clock jumped: keep every mark on its scale
        r = self._r()
        self._off = t - r
        self._set_at = r
        for i in range(4):
            self._held[i] = None
        self.known = True
        self.source = src

    def _refuse(self, src, why, fault=False):
        """Count and log a refused offer: at W for the RTC and the board, or a `fault` (a late
        answer, not an attack); at S for a network source's time."""
        self.refused[src] += 1
        if fault or src in (RTC, BOARD):
            self.log.warn("time: refused " + why)
        else:
            self.log.security("time: refused " + why)
        self._wake()
        return False

    def lost(self, src, why):
        """A source could not answer (no reply, oscillator stopped): logged, nothing changes."""
        self.log.warn("time: %s unavailable: %s" % (SOURCES[src], why))
        self._wake()

    # -- waiting for the first answer ----------------------------------------------------
    def _wake(self):
        if self._news is not None:
            self._news.set()

    def expect(self, ms):
        """At boot, with a source configured: the first time should come within `ms`."""
        self._expect_until = ticks_ms() + ms

    def waiting(self):
        """True while the time is unknown and a first time is still expected (`expect`): a
        decision that cannot await (the MDB reader's, cpos.mdb.service) is put off meanwhile."""
        if self.known or self._expect_until is None:
            return False
        if ticks_diff(self._expect_until, ticks_ms()) > 0:
            return True
        self._expect_until = None
        return False

    async def settled(self):
        """The tap path calls this while the time is unknown: within the expected while
        after boot (`expect`), wait until the time is known or that while is over; after
        it, return at once (an offline terminal decides by its policy, not waits)."""
        import asyncio

        from cpos.compat import wait_event_ms

        while not self.known and self._expect_until is not None:
            left = ticks_diff(self._expect_until, ticks_ms())
            if left <= 0:
                self._expect_until = None
                return
            if self._news is None:
                self._news = asyncio.Event()
            self._news.clear()
            await wait_event_ms(self._news, left)

    # -- reports -----------------------------------------------------------------------------
    def status(self):
        """For the health report and `cpos status`: known, source, floor, and per source
        its last offset (its time minus ours, s), age (s since it answered), counts."""
        r = self._r()
        src = {}
        for i in range(4):
            if self.seen[i] is not None or self.refused[i]:
                src[SOURCES[i]] = {"offset": self.offset[i],
                                   "age": None if self.seen[i] is None else r - self.seen[i],
                                   "accepted": self.accepted[i], "refused": self.refused[i]}
        return {"time_known": self.known, "time_source": SOURCES[self.source] if self.known else None,
                "time_floor": self.floor(), "time_floor_from": self.floor_why, "time_sources": src}


# -- the "time unknown" policy (docs/rules.md, "Time unknown") ---------------------------------

def untimed_reason(code, card, profile, have_allowance):
    """The decision while the time is unknown, from the rules' `code` for the same purchase
    decided at the floor. A refusal that does not depend on the time stands. A till purchase
    for a card with any limit at this kind of place is refused CLOCK_NOT_SET (its window is
    unknown), and so is every approval when the terminal has no offline allowance to bound
    it by. Otherwise the approval stands (the caller caps it by the offline allowance)."""
    if code not in (reasons.APPROVED, reasons.DAY_LIMIT, reasons.WEEK_LIMIT, reasons.MONTH_LIMIT):
        return code
    if profile.kind == rules.TILL:
        for w in range(rules.WINDOWS):
            if card.limits[rules.slot(profile.place, w)] != rules.NO_LIMIT:
                return reasons.CLOCK_NOT_SET
    if not have_allowance:
        return reasons.CLOCK_NOT_SET
    return code
