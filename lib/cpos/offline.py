"""Offline exposure: how much a card may still spend at a terminal that has lost touch.

Owns one rule (docs/offline.md). While the terminal's last sync is at most `threshold_s`
seconds old it trusts its view: a card may spend what the terminal counts as available
(`synced balance - own purchases not yet included`). Once the last sync is older, or
there has never been one, the terminal cannot know what the card spent at other
terminals, so it caps the card: everything this terminal let the card spend since its
last sync (`spent_offline`, the own purchases the backend has not included yet) may not
exceed `allowance_ore`, and never the available balance either.

Guarantee (proved by tests/test_offline_exposure.py): during an outage at N terminals,
a card whose balance B covered what it spent while terminals still trusted their view
overdraws by at most N x allowance; with `threshold_s = 0` that holds always.

Pure integer logic, no clock of its own, no allocation per call: `limit` is meant for the
tap path, on MicroPython and CPython alike.
"""
from cpos.money import MAX_ORE


class OfflinePolicy:
    """`OfflinePolicy(threshold_s, allowance_ore)`; `limit(...)` is the amount in øre that may
    still be approved for the card's account at this terminal."""

    def __init__(self, threshold_s, allowance_ore):
        if type(threshold_s) is not int or threshold_s < 0:
            raise ValueError("threshold_s must be a non-negative whole number of seconds")
        if type(allowance_ore) is not int or not 0 <= allowance_ore <= MAX_ORE:
            raise ValueError("allowance_ore must be non-negative øre")
        self.threshold_s = threshold_s
        self.allowance_ore = allowance_ore

    def stale(self, now, last_sync):
        """True when the last sync (UTC seconds, 0 = never) is more than threshold_s old."""
        return last_sync <= 0 or now - last_sync > self.threshold_s

    def limit(self, balance_available, spent_offline, now, last_sync):
        """The most that may still be approved: `balance_available` while the view is fresh;
        once stale, also at most `allowance_ore - spent_offline`. Never below 0."""
        room = balance_available
        if self.stale(now, last_sync):
            cap = self.allowance_ore - spent_offline
            if cap < room:
                room = cap
        return room if room > 0 else 0
