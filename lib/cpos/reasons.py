"""Decision reason codes: one code per outcome of a tap, shared by every layer.

A code is a small int that fits one byte in the journal and on the wire. Each
refusal has its own code so the display, the journal and the backend can tell
them apart; "no read" is not a reason: a tap that was not read makes no decision.
"""
from cpos.compat import const

APPROVED = const(0)
UNKNOWN_CARD = const(1)
BLOCKED = const(2)
REPLACED = const(3)
PLACE_NOT_ALLOWED = const(4)
DAY_LIMIT = const(5)
WEEK_LIMIT = const(6)
MONTH_LIMIT = const(7)
INSUFFICIENT_FUNDS = const(8)
INVALID_AMOUNT = const(9)
NEEDS_UPDATE = const(10)  # card table unreadable or out of date: resync first
TERMINAL_FULL = const(11)  # journal holds too many unacknowledged purchases
CLOCK_NOT_SET = const(12)  # the time is unknown and this purchase needs it (cpos.timekeeper)

# Stable machine names, index = code. Used in logs, JSON and the backend.
NAMES = (
    "approved",
    "unknown_card",
    "blocked",
    "replaced",
    "place_not_allowed",
    "day_limit",
    "week_limit",
    "month_limit",
    "insufficient_funds",
    "invalid_amount",
    "needs_update",
    "terminal_full",
    "clock_not_set",
)


def name(code):
    """Machine name of a reason code; `"reason_<n>"` for a code this build does not know."""
    if 0 <= code < len(NAMES):
        return NAMES[code]
    return "reason_%d" % code
