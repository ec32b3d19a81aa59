"""Display texts for every decision, in Danish with English beneath.

Index = reason code (see `cpos.reasons`). Lines stay short enough for a 2x20
character display after the amount line; the Danish words are the card system's own
(spærret, maks forbrug, saldo).
"""
# (Danish, English) per reason code, in code order.
_TEXTS = (
    ("Godkendt", "Approved"),
    ("Ukendt kort", "Unknown card"),
    ("Kortet er spærret", "Card is blocked"),
    ("Kortet er erstattet - brug dit nyeste kort", "Card replaced - use your newest card"),
    ("Kortet må ikke bruges her", "Card not allowed here"),
    ("Dagens maks forbrug er nået", "Daily limit reached"),
    ("Ugens maks forbrug er nået", "Weekly limit reached"),
    ("Månedens maks forbrug er nået", "Monthly limit reached"),
    ("Ikke nok penge på kortet", "Not enough money on card"),
    ("Ugyldigt beløb", "Invalid amount"),
    ("Terminalen skal opdateres", "Terminal needs update"),
    ("Terminalen er fuld - kontakt personalet", "Terminal full - contact staff"),
    ("Terminalens ur er ikke indstillet", "Terminal clock not set"),
)

BALANCE_DA = "Saldo"
BALANCE_EN = "Balance"


def danish(code):
    """Danish display text for a reason code."""
    return _TEXTS[code][0] if 0 <= code < len(_TEXTS) else "Fejl %d" % code


def english(code):
    """English display text for a reason code."""
    return _TEXTS[code][1] if 0 <= code < len(_TEXTS) else "Error %d" % code
