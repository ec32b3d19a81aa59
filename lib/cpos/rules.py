"""The card system's rules as one pure step: `authorize`.

Owns: the card record the rules read (`CardRecord`), the window spending totals
(`Spends`), the terminal's profile (`Profile`), and the decision. No I/O, no clock,
no globals: the same inputs give the same decision on MicroPython and CPython.

A decision is one small int, so a tap allocates nothing to carry it:
    reason code (cpos.reasons) | TOPUP_TRIGGER if the automatic top-up should fire.

Order of checks (the guide's card-trouble checklist): unknown card, replaced,
blocked, place, day / week / month limit (tills only), balance. The automatic
top-up trigger is judged on its own and reported with any outcome.
"""
from cpos import reasons
from cpos.compat import const
from cpos.localtime import window_key, WINDOW_DAY, WINDOW_WEEK, WINDOW_MONTH
from cpos.money import is_ore, MAX_ORE

# Kinds of place (forbrugssteder). A card's allowed places are a bit mask: 1 << PLACE_*.
PLACE_SCHOOL = const(0)
PLACE_CLUB = const(1)
PLACE_KINDS = const(2)
ALL_PLACES = const(3)

# Kinds of terminal.
TILL = const(0)  # betalingskasse: limits apply
VENDING = const(1)  # automat: limits never apply

# Card status.
ACTIVE = const(0)
BLOCKED = const(1)
REPLACED = const(2)

NO_LIMIT = const(-1)
WINDOWS = const(3)  # day, week, month (cpos.localtime.WINDOW_*)

TOPUP_TRIGGER = const(0x100)
_REASON_MASK = const(0xFF)
DEFAULT_TOPUP_THRESHOLD = const(5000)  # 50 kr in øre


def slot(place, window):
    """Index into a 6-slot limits or totals list for a place kind and a window."""
    return place * WINDOWS + window


class CardRecord:
    """What the terminal knows of one card and its account, as the rules need it.

    `balance` is the money available to this terminal in øre (synced balance minus
    the terminal's own purchases the backend has not yet included).
    `limits` has 6 slots (see `slot`), each øre or NO_LIMIT.
    A card table fills one instance in place per lookup, so a tap allocates none.
    """

    def __init__(self):
        self.limits = [NO_LIMIT] * (PLACE_KINDS * WINDOWS)
        self.clear()

    def clear(self):
        self.account = 0
        self.status = ACTIVE
        self.balance = 0
        self.places = ALL_PLACES
        for i in range(PLACE_KINDS * WINDOWS):
            self.limits[i] = NO_LIMIT
        self.topup_enrolled = False
        self.topup_amount_kr = 0
        return self


class Spends:
    """Purchases already counted for one account in the current windows, per place kind.

    `keys[w]` is the window key (cpos.localtime) the totals of window `w` belong to;
    a total from an older window counts as zero, so limits reset at local midnight,
    on Monday and on the 1st without anyone clearing them.
    """

    def __init__(self):
        self.keys = [0] * WINDOWS
        self.totals = [0] * (PLACE_KINDS * WINDOWS)

    def clear(self):
        for w in range(WINDOWS):
            self.keys[w] = 0
        for i in range(PLACE_KINDS * WINDOWS):
            self.totals[i] = 0
        return self

    def spent(self, place, window, now):
        """Total spent at `place` in the window containing UTC instant `now`."""
        if self.keys[window] != window_key(now, window):
            return 0
        return self.totals[slot(place, window)]

    def add(self, place, amount, now):
        """Count a purchase of `amount` øre at `place` at UTC instant `now`."""
        self.roll(now)
        for w in range(WINDOWS):
            self.totals[slot(place, w)] += amount

    def roll(self, now):
        """Move every window to the one containing `now`, zeroing totals from older windows."""
        for w in range(WINDOWS):
            key = window_key(now, w)
            if self.keys[w] != key:
                self.keys[w] = key
                for p in range(PLACE_KINDS):
                    self.totals[slot(p, w)] = 0

    def add_from(self, other, now):
        """Add `other`'s totals of the windows containing `now` to this one's (both rolled)."""
        self.roll(now)
        for w in range(WINDOWS):
            if other.keys[w] == self.keys[w]:
                for p in range(PLACE_KINDS):
                    self.totals[slot(p, w)] += other.totals[slot(p, w)]


class Profile:
    """The terminal's fixed facts: kind of place, till or vending, top-up threshold."""

    def __init__(self, place=PLACE_SCHOOL, kind=TILL, topup_threshold=DEFAULT_TOPUP_THRESHOLD):
        if place not in (PLACE_SCHOOL, PLACE_CLUB):
            raise ValueError("place must be PLACE_SCHOOL or PLACE_CLUB")
        if kind not in (TILL, VENDING):
            raise ValueError("kind must be TILL or VENDING")
        if not is_ore(topup_threshold) or topup_threshold < 0:
            raise ValueError("topup_threshold must be non-negative øre")
        self.place = place
        self.kind = kind
        self.topup_threshold = topup_threshold


_LIMIT_REASONS = (reasons.DAY_LIMIT, reasons.WEEK_LIMIT, reasons.MONTH_LIMIT)


def _topup_due(card, profile):
    return (
        profile.kind == TILL
        and card.status != REPLACED
        and card.topup_enrolled
        and card.balance < profile.topup_threshold
    )


def _refusal(card, profile, amount, spends, now):
    if card.status == REPLACED:
        return reasons.REPLACED
    if card.status != ACTIVE:
        return reasons.BLOCKED
    place = profile.place
    if not card.places & (1 << place):
        return reasons.PLACE_NOT_ALLOWED
    if profile.kind == TILL:
        for w in (WINDOW_DAY, WINDOW_WEEK, WINDOW_MONTH):
            limit = card.limits[slot(place, w)]
            if limit != NO_LIMIT and spends.spent(place, w, now) + amount > limit:
                return _LIMIT_REASONS[w]
    if amount > card.balance:
        return reasons.INSUFFICIENT_FUNDS
    return reasons.APPROVED


def authorize(card, spends, profile, amount, now):
    """Decide one purchase of `amount` øre at UTC instant `now`.

    `card` is a CardRecord or None (not in the table); `spends` the account's Spends.
    Returns a reason code, OR-ed with TOPUP_TRIGGER when the account is enrolled in
    automatic top-up, the terminal is a till and the balance is under the threshold.
    """
    if card is None:
        return reasons.UNKNOWN_CARD
    if not is_ore(amount) or amount <= 0 or amount > MAX_ORE:
        return reasons.INVALID_AMOUNT
    decision = _refusal(card, profile, amount, spends, now)
    if _topup_due(card, profile):
        decision |= TOPUP_TRIGGER
    return decision


def reason(decision):
    """The reason code inside a decision."""
    return decision & _REASON_MASK


def approved(decision):
    """True if the decision approves the purchase."""
    return decision & _REASON_MASK == reasons.APPROVED


def topup_triggered(decision):
    """True if the decision asks the backend to try an automatic top-up."""
    return bool(decision & TOPUP_TRIGGER)
