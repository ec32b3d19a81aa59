"""Display texts for every decision and state, in Danish with English beneath.

Index = reason code (see `cpos.reasons`): adding a reason's text is adding one line to
`_TEXTS`, in code order (tests/device/test_screen.py fails while a reason has none, and
fails when a text does not fit the 128x64 display). The Danish words are the card
system's own (spærret, maks forbrug, saldo, optankning). A text is word-wrapped by
`cpos.screen` to lines of 16 characters; Danish and English together get six lines.
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
    ("Købet findes ikke", "Purchase not found"),
    ("Købet er allerede tilbageført", "Already refunded"),
    ("Kan ikke tilbageføres", "Cannot be refunded"),
    ("For sent at tilbageføre", "Too late to refund"),
    ("Tilbageført", "Refunded"),
)

BALANCE_DA = "Saldo"
BALANCE_EN = "Balance"
PRICE_DA = "Pris"
PRICE_EN = "Price"
RETURNED_DA = "Retur"  # a refund's amount
RETURNED_EN = "Back"
# Headlines of the display's top band, one per kind of page (cpos.screen).
REFUSED = "Afvist / Refused"
TERMINAL_PROBLEM = "Fejl / Error"
TOPUP = "Optankning"
OFFLINE = "Offline"
# What the top-up and offline pages say beneath their headline.
TOPUP_DA = "Automatisk optankning er startet"
TOPUP_EN = "Automatic top-up started"
OFFLINE_DA = "Maks uden forbindelse er nået"
OFFLINE_EN = "Limit while offline reached"


def danish(code):
    """Danish display text for a reason code."""
    return _TEXTS[code][0] if 0 <= code < len(_TEXTS) else "Fejl %d" % code


def english(code):
    """English display text for a reason code."""
    return _TEXTS[code][1] if 0 <= code < len(_TEXTS) else "Error %d" % code


def count():
    """How many reason codes have a text (tests compare it with `cpos.reasons.NAMES`)."""
    return len(_TEXTS)
