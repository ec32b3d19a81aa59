"""Tap detection and the self-healing read loop around one PN532.

Owns what a "tap" is and keeping the reader alive:

* One tap per presentation. A card that stays on the reader is reported once. The
  presentation ends only after the card has been missing from consecutive clean
  polls (polls that got a "no card" answer) for at least `removal_ms` (the removal
  window, 500 ms by default) and from at least two of them. A card presented again
  after that is a new tap; one lifted and put back within the window is not. A
  different card appearing is a new tap at once. Failed polls (no answer, garbage)
  never count as "missing": while the chip is sick, nobody is charged twice.
* "No read" stays distinct from "read and refused": a tap is only ever a UID that
  came in a valid frame; anything else is an error counted in `health`, not a tap.
* Self-healing: any exception from a poll (the chip stopped answering, answered
  garbage, reset itself, the wire failed) is counted. After `reinit_after`
  consecutive failures the chip is re-initialised: reset pin pulsed where wired
  (the cure for PN532s that lock up on I2C after hours), woken, identified
  (GetFirmwareVersion must say PN532), configured. Re-initialisation that fails is
  retried with exponential backoff (`backoff_ms` doubling up to `backoff_max_ms`).
  Nothing raises out of `step()`, `next_tap()` or `async for`.

* Waiting instead of polling (`wait_ms` > 0): while no card is seen, each step is a
  pending poll (`PN532.wait_for_card`) that the chip answers as soon as a card enters
  the field, so a tap is reported within a few ms instead of up to one poll period
  later; with a card on the reader, steps are plain polls `poll_ms` apart, and after
  a clean miss one pending poll covers the rest of the removal window (a card put
  back within it is the same presentation). `pause_ms` says how long to wait before
  the next step (0 after a pending poll that found nothing). `wait_ms` = 0 is plain
  polling, the fallback.

Firmware use:

    reader = CardReader(pn532, wait_ms=1000)
    async for uid in reader:       # or: uid = await reader.next_tap()
        ...                        # uid: memoryview of 4, 7 or 10 bytes, valid
                                   # until the next tap (copy it to keep it)
"""
from cpos.compat import const
from cpos.reader import frame as F
from cpos.uid import UID_MAX

# step() results
ERROR = const(-1)
NOTHING = const(0)
TAP = const(1)
STILL = const(2)  # the card of the current presentation, again
REMOVED = const(3)  # the current presentation ended (no tap)

REMOVAL_MS = const(500)
POLL_MS = const(30)


class CardReader:
    """Polls a PN532 and turns what it sees into taps; see the module docstring."""

    def __init__(self, pn532, removal_ms=REMOVAL_MS, poll_ms=POLL_MS, reinit_after=2,
                 backoff_ms=50, backoff_max_ms=5000, wait_ms=0):
        self.pn = pn532
        self.clock = pn532.link.clock
        self.removal_ms = removal_ms
        self.poll_ms = poll_ms
        self.wait_ms = wait_ms  # > 0: pending polls while no card is seen (0: plain polling)
        self.pause_ms = poll_ms  # how long to wait before the next step()
        self.reinit_after = reinit_after
        self.backoff_ms = backoff_ms
        self.backoff_max_ms = backoff_max_ms
        self.uid = bytearray(UID_MAX)
        self.uid_len = 0
        self._mv = memoryview(self.uid)
        self.present = False
        self._miss_since = 0
        self._misses = 0
        self.ready = False
        self._failed_at = 0
        self._backoff = 0
        # health counters
        self.polls = 0
        self.taps = 0
        self.errors = 0
        self.timeouts = 0
        self.frame_errors = 0
        self.chip_errors = 0
        self.io_errors = 0
        self.other_errors = 0
        self.consecutive_errors = 0
        self.reinits = 0  # initialisations, the first one included
        self.reinit_failures = 0
        self.reset_pulses = 0
        self.last_error = ""

    # -- public ---------------------------------------------------------------------
    def health(self):
        """Counters for health reports (a new dict: call it rarely)."""
        pn = self.pn
        link = pn.link
        return {
            "ok": self.ready, "polls": self.polls, "taps": self.taps, "errors": self.errors,
            "timeouts": self.timeouts, "frame_errors": self.frame_errors,
            "chip_errors": self.chip_errors, "io_errors": self.io_errors,
            "other_errors": self.other_errors, "reinits": self.reinits,
            "reinit_failures": self.reinit_failures, "reset_pulses": self.reset_pulses,
            "nacks": pn.nacks_sent, "aborts": pn.aborts, "stray": pn.stray_frames,
            "noise_bytes": pn.reader.dropped, "bad_frames": pn.reader.bad_frames,
            "bus_errors": link.bus_errors, "last_error": self.last_error,
        }

    def removed(self, uid):
        """True unless `uid` is the card of the current presentation."""
        if not self.present or len(uid) != self.uid_len:
            return True
        for i in range(self.uid_len):
            if uid[i] != self.uid[i]:
                return True
        return False

    async def next_tap(self):
        """Wait for the next tap and return its UID (see the module docstring)."""
        while True:
            if await self.step() == TAP:
                return self._mv[:self.uid_len]
            await self.clock.sleep_ms(self.pause_ms)

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self.next_tap()

    async def step(self):
        """One poll (or one re-initialisation attempt); return what happened."""
        clock = self.clock
        self.pause_ms = self.poll_ms
        if not self.ready:
            if self._backoff and clock.ticks_diff(clock.ticks_ms(), self._failed_at) < self._backoff:
                return ERROR
            if not await self._reinit():
                return ERROR
        self.polls += 1
        waited = False
        try:
            if self.wait_ms and not (self.present and self._misses == 0):
                waited = True
                n = await self.pn.wait_for_card(self._wait_for())
            else:
                n = await self.pn.read_uid()
        except Exception as e:  # noqa: BLE001 - nothing may leave the read loop
            self._failed(e)
            return ERROR
        self.consecutive_errors = 0
        if waited and not n:
            self.pause_ms = 0  # the step itself waited: look again at once
        now = clock.ticks_ms()
        if n:
            self._misses = 0
            if self.present and not self.removed(memoryview(self.pn.uid)[:n]):
                return STILL
            self.uid[:n] = self.pn.uid[:n]
            self.uid_len = n
            self.present = True
            self.taps += 1
            return TAP
        if not self.present:
            return NOTHING
        if self._misses == 0:
            self._miss_since = now
        self._misses += 1
        if self._misses >= 2 and clock.ticks_diff(now, self._miss_since) >= self.removal_ms:
            self.present = False
            self._misses = 0
            return REMOVED
        return NOTHING

    def _wait_for(self):
        """How long a pending poll may wait: `wait_ms`, or while a presentation may still
        end, until its removal window has passed (never less than one poll period)."""
        w = self.wait_ms
        if self.present:
            left = self.removal_ms - self.clock.ticks_diff(self.clock.ticks_ms(), self._miss_since)
            if left < w:
                w = left if left > self.poll_ms else self.poll_ms
        return w

    # -- healing ---------------------------------------------------------------
    def _failed(self, e):
        self.errors += 1
        self.consecutive_errors += 1
        self._misses = 0  # a failed poll is no evidence that the card left
        if isinstance(e, F.PN532Timeout):
            self.timeouts += 1
        elif isinstance(e, F.FrameError):
            self.frame_errors += 1
        elif isinstance(e, F.ChipError):
            self.chip_errors += 1
        elif isinstance(e, OSError):
            self.io_errors += 1
        else:
            self.other_errors += 1
        try:
            self.last_error = "%s: %s" % (type(e).__name__, e)
        except Exception:  # noqa: BLE001
            self.last_error = "?"
        if self.consecutive_errors >= self.reinit_after:
            self.ready = False

    async def _reinit(self):
        self.reinits += 1
        try:
            if await self.pn.link.pulse_reset():
                self.reset_pulses += 1
            await self.pn.begin()
        except Exception as e:  # noqa: BLE001
            self.reinit_failures += 1
            self._failed(e)
            self._backoff = min(self._backoff * 2, self.backoff_max_ms) if self._backoff else self.backoff_ms
            self._failed_at = self.clock.ticks_ms()
            return False
        self.ready = True
        self._backoff = 0
        self.consecutive_errors = 0
        return True
