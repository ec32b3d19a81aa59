"""Money as integer øre: validation, conversion from kroner, and display.

Amounts are always `int` øre (1 kr = 100 øre). Floats never enter the terminal.
Top-ups are whole kroner. Display follows the card system's statements: `100.00 kr.`
"""
from cpos.compat import const

ORE_PER_KRONE = const(100)
# Largest amount the terminal accepts for one purchase or balance field: 10 million kr.
# Kept below 2**30 so amounts stay small ints (no heap allocation) on a 32-bit ESP32.
MAX_ORE = const(1000000000)


def is_ore(value):
    """True if `value` is a plausible amount in øre: an int (not bool) within ±MAX_ORE."""
    return type(value) is int and -MAX_ORE <= value <= MAX_ORE


def parse_kr(text):
    """Parse `"12"`, `"12.5"` or `"12.50"` (kroner) to øre; raises ValueError otherwise.

    Exists so that till input and configuration never pass through float.
    """
    if not isinstance(text, str):
        raise ValueError("amount must be text")
    s = text.strip()
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    whole, _, frac = s.partition(".")
    if not _digits(whole) or (frac and not _digits(frac)) or len(frac) > 2:
        raise ValueError("bad amount: %r" % text)
    if _ and not frac:
        raise ValueError("bad amount: %r" % text)
    ore = int(whole) * ORE_PER_KRONE + (int(frac) * (10 if len(frac) == 1 else 1) if frac else 0)
    if ore > MAX_ORE:
        raise ValueError("amount too large: %r" % text)
    return -ore if neg else ore


def _digits(s):
    """True if `s` is one or more ASCII digits. Not str.isdigit(): CPython counts other
    scripts' digits (which int() then accepts), MicroPython does not."""
    if not s:
        return False
    for ch in s:
        if not "0" <= ch <= "9":
            return False
    return True


def format_kr(ore):
    """Format øre as the statement does: `1234` -> `"12.34 kr."`, `-500` -> `"-5.00 kr."`."""
    sign = "-" if ore < 0 else ""
    ore = -ore if ore < 0 else ore
    return "%s%d.%02d kr." % (sign, ore // ORE_PER_KRONE, ore % ORE_PER_KRONE)
