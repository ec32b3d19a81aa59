"""Pages for the 128x64 display: what each outcome shows, row by row, in Danish with English.

Owns the layout, not the pixels (cpos.display draws a page into a framebuf). A page
is a headline in an inverted band across the top and up to six rows of text below,
each row placed at a pixel position on a grid of 8x8 characters (16 per row):

    +----------------+   band (11 px): the outcome in a word or two
    |    Godkendt    |
    +----------------+   rows: English headline, then label and amount lines,
        Approved         or the reason in Danish above English (word-wrapped)
    Pris / Price
           45.00 kr.
    Saldo / Balance
          55.00 kr.

Pages: approved (amount and balance), refused (each reason's text; the band says
"refused" or, for a terminal problem, "error"), balance (a tap with no payment open),
top-up started, offline limit reached. `Page.da` and `Page.en` are the same message as
one line each, for a board that has only a console and for the simulator's records.
Built in the feedback task, after the POS has its answer: allocation here is fine.
"""
from cpos import money, outcome, reasons, texts
from cpos.compat import const

WIDTH = const(128)
HEIGHT = const(64)
CHAR = const(8)  # framebuf's built-in font and cpos.display's glyphs: 8x8 pixels
COLS = const(16)  # characters per row
BAND = const(11)  # height of the inverted headline band
_TOP = const(13)  # first row below the band
_GAP = const(3)  # between the Danish and the English block


class Page:
    """One screenful: `band` (headline), `rows` [(x, y, text)], `da`/`en` (one line each)."""

    __slots__ = ("band", "rows", "da", "en")

    def __init__(self, band, rows, da, en):
        self.band = band
        self.rows = rows
        self.da = da
        self.en = en

    def text(self):
        """The page as one console line."""
        return "%s | %s" % (self.da, self.en)


def wrap(text, cols=COLS):
    """Word-wrap `text` into lines of at most `cols` characters (a longer word is cut)."""
    lines = []
    line = ""
    for word in text.split(" "):
        while len(word) > cols:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:cols])
            word = word[cols:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= cols:
            line = line + " " + word
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def centre(text):
    """x at which `text` stands centred (0 when it is as wide as the screen or wider)."""
    x = (WIDTH - CHAR * len(text)) // 2
    return x if x > 0 else 0


def right(text):
    """x at which `text` ends at the right edge."""
    x = WIDTH - CHAR * len(text)
    return x if x > 0 else 0


def _message(band, da, en):
    """A band and a message: Danish lines, then English lines, each line centred."""
    rows = []
    da_lines, en_lines = wrap(da), wrap(en)
    n = len(da_lines) + len(en_lines)
    pitch = CHAR + 1 if _TOP + n * (CHAR + 1) - 1 + _GAP <= HEIGHT else CHAR  # a pixel between rows if it fits
    y = _TOP
    for line in da_lines:
        rows.append((centre(line), y, line))
        y += pitch
    y += _GAP
    for line in en_lines:
        rows.append((centre(line), y, line))
        y += pitch
    return Page(band, rows, da, en)


def approved(amount, balance, code=0):
    """Approved (or, code REVERSED, refunded): the price (the amount given back) and the
    balance left, each under a Danish / English label."""
    price, left = money.format_kr(amount), money.format_kr(balance)
    if code == reasons.REVERSED:
        label_p = "%s / %s" % (texts.RETURNED_DA, texts.RETURNED_EN)
    else:
        label_p = "%s / %s" % (texts.PRICE_DA, texts.PRICE_EN)
    label_b = "%s / %s" % (texts.BALANCE_DA, texts.BALANCE_EN)
    en = texts.english(code)
    rows = [(centre(en), _TOP, en), (0, 25, label_p), (right(price), 34, price),
            (0, 46, label_b), (right(left), 55, left)]
    da = texts.danish(code)
    return Page(da, rows, "%s %s, %s %s" % (da, price, texts.BALANCE_DA.lower(), left),
                "%s %s, %s %s" % (en, price, texts.BALANCE_EN.lower(), left))


def refused(code):
    """A refusal: the reason in Danish above English; the band says whose problem it is."""
    band = texts.TERMINAL_PROBLEM if outcome.of(code) == outcome.TERMINAL else texts.REFUSED
    return _message(band, texts.danish(code), texts.english(code))


def decision(code, amount, balance):
    """The page for a decision on a payment."""
    if outcome.of(code) == outcome.APPROVED:  # approved, or a refund
        return approved(amount, balance, code)
    return refused(code)


def balance(value):
    """A tap with no payment open: the card's balance."""
    shown = money.format_kr(value)
    return Page("%s / %s" % (texts.BALANCE_DA, texts.BALANCE_EN), [(centre(shown), 30, shown)],
                "%s %s" % (texts.BALANCE_DA, shown), "%s %s" % (texts.BALANCE_EN, shown))


def topup():
    """After a decision that started the automatic top-up."""
    return _message(texts.TOPUP, texts.TOPUP_DA, texts.TOPUP_EN)


def offline():
    """A refusal because the card reached what it may spend here while the terminal is offline."""
    return _message(texts.OFFLINE, texts.OFFLINE_DA, texts.OFFLINE_EN)
