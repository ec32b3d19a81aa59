"""Outcome classes: which of four kinds of answer each reason code is, for sound and screen.

A student hears the class, not the reason (cpos.feedback plays one rhythm per class);
the screen names the reason. Classes: approved (and a refund: money given back); refused for money or limits (the
student can fix it: top up, wait for tomorrow); refused for the card itself (unknown,
blocked, replaced, not allowed here); terminal problem (staff must act). A reason code
this build does not list below (a newer one, e.g. a clock that is not set) is a
terminal problem: the safe default, since the student cannot fix it.
"""
from cpos import reasons
from cpos.compat import const

APPROVED = const(0)
MONEY = const(1)  # refused for money or limits
CARD = const(2)  # refused for the card itself
TERMINAL = const(3)  # terminal problem

NAMES = ("approved", "money", "card", "terminal")

_MONEY = (reasons.DAY_LIMIT, reasons.WEEK_LIMIT, reasons.MONTH_LIMIT, reasons.INSUFFICIENT_FUNDS)
_CARD = (reasons.UNKNOWN_CARD, reasons.BLOCKED, reasons.REPLACED, reasons.PLACE_NOT_ALLOWED)


def of(code):
    """The outcome class of a reason code."""
    if code == reasons.APPROVED or code == reasons.REVERSED:  # a refund sounds like an approval
        return APPROVED
    if code in _MONEY:
        return MONEY
    if code in _CARD:
        return CARD
    return TERMINAL
