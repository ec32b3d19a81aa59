"""Every page fits the 128x64 display, drawn for real (cpos.screen, cpos.display, cpos.texts).

Each page is drawn into a framebuf larger than the screen (256x128), with the same
code that draws on the device: any lit pixel right of x=127 or below y=63 is text the
OLED would cut off. On MicroPython the framebuf is the built-in one; on CPython the
simulator's stand-in (simulator/framebuf.py), which draws MicroPython's own font.
"""
import framebuf

from cpos import display, money, outcome, reasons, screen, texts

_W, _H = 256, 128  # the canvas: twice the screen each way


def _canvas():
    buf = bytearray(_W * _H // 8)
    return buf, framebuf.FrameBuffer(buf, _W, _H, framebuf.MONO_VLSB)


def overflow(page):
    """Lit pixels outside the 128x64 screen when `page` is drawn (0: it fits). The band's
    text is dark on the lit band, so it is drawn once more, lit, to see where it ends."""
    buf, fb = _canvas()
    display.draw(fb, page)
    display.text(fb, page.band, screen.centre(page.band), 2, 1)
    n = 0
    for row in range(_H // 8):  # MONO_VLSB: byte row*W + x holds pixels y = 8*row .. 8*row+7
        base = row * _W
        for x in range(_W):
            b = buf[base + x]
            if b and (x >= screen.WIDTH or row >= screen.HEIGHT // 8):
                while b:
                    n += b & 1
                    b >>= 1
    return n


def _cells_inked(page):
    """Every character of every row leaves ink in its own 8x8 cell (lit pixels; in the
    band, dark pixels): no letter was dropped or drawn outside its place."""
    buf, fb = _canvas()
    display.draw(fb, page)
    rows = [(screen.centre(page.band), 2, page.band, 0)] + [(x, y, s, 1) for x, y, s in page.rows]
    for x, y, s, colour in rows:
        for i in range(len(s)):
            if s[i] == " ":
                continue
            cx = x + 8 * i
            ink = 0
            for dy in range(8):
                for dx in range(8):
                    if fb.pixel(cx + dx, y + dy) == colour:
                        ink += 1
            assert ink, "no ink for %r in %r" % (s[i], s)


def all_pages():
    """(name, page) for every page the terminal can show, with the widest amounts."""
    pages = [("approved", screen.approved(4500, 5500)),
             ("approved, widest amounts", screen.approved(money.MAX_ORE, -money.MAX_ORE)),
             ("balance", screen.balance(12345)), ("balance, widest", screen.balance(-money.MAX_ORE)),
             ("top-up", screen.topup()), ("offline", screen.offline())]
    for code in range(len(reasons.NAMES)):
        pages.append((reasons.name(code), screen.decision(code, 4500, 5500)))
    pages.append(("a reason this build has no text for", screen.refused(len(reasons.NAMES) + 40)))
    return pages


def test_every_reason_has_a_text_in_both_languages():
    assert texts.count() == len(reasons.NAMES), "cpos/texts.py: add one line per reason (%d texts, %d reasons)" % (
        texts.count(), len(reasons.NAMES))
    seen = set()
    for code in range(len(reasons.NAMES)):
        da, en = texts.danish(code), texts.english(code)
        assert da and en and da != en, reasons.name(code)
        assert (da, en) not in seen, reasons.name(code)
        seen.add((da, en))


def test_every_page_fits_the_screen_drawn_for_real():
    for name, page in all_pages():
        assert overflow(page) == 0, "%s: %d pixels beyond 128x64: %r" % (name, overflow(page), page.rows)
        _cells_inked(page)
        for x, y, s in page.rows:  # rows do not overlap each other or the band
            assert y >= screen.BAND + 1 and x >= 0, (name, s)
        ys = sorted(y for _x, y, _s in page.rows)
        for a, b in zip(ys, ys[1:]):
            assert b - a >= screen.CHAR, (name, ys)


def test_the_fit_check_catches_a_text_that_is_too_long():
    """The check above can fail: a reason text of 7 lines, a too-wide amount, a long band."""
    long_da = "Denne tekst er alt for lang til skærmen: den fylder syv linjer, og sammen med den engelske bliver det"
    assert overflow(screen._message("x", long_da, "English too")) > 0
    assert overflow(screen._message("Afvist og meget mere end seksten", "Kort", "Card")) > 0
    assert overflow(screen.Page("x", [(0, 56, "Saldo 10000000.00 kr.")], "", "")) > 0


def test_danish_letters_are_drawn_from_their_own_glyphs():
    base = {"æ": "a", "ø": "o", "å": "a", "Æ": "A", "Ø": "O", "Å": "A"}
    drawn = {}
    for ch in "æøåÆØÅ?aoAO":
        buf, fb = _canvas()
        display.text(fb, ch, 0, 0)
        drawn[ch] = bytes(buf[:8])
        assert any(drawn[ch]), ch
    buf, fb = _canvas()
    fb.text("\x7f", 0, 0, 1)  # what framebuf.text draws for a character outside its font
    block = bytes(buf[:8])
    for ch in "æøåÆØÅ":
        assert drawn[ch] not in (block, drawn["?"], drawn[base[ch]]), ch
    assert len(set(drawn[ch] for ch in "æøåÆØÅ")) == 6
    buf, fb = _canvas()
    display.text(fb, "ü", 0, 0)
    assert bytes(buf[:8]) == drawn["?"]  # other letters outside ASCII: '?', never a checkered block


def test_wrap_keeps_words_whole_and_lines_short():
    assert screen.wrap("Kortet er erstattet - brug dit nyeste kort") == ["Kortet er", "erstattet - brug", "dit nyeste kort"]
    assert screen.wrap("Godkendt") == ["Godkendt"]
    assert screen.wrap("abcdefghijklmnopqrstu vw") == ["abcdefghijklmnop", "qrstu vw"]
    for _name, page in all_pages():
        for _x, _y, s in page.rows:
            assert len(s) <= screen.COLS, s


def test_refusal_bands_name_whose_problem_it_is():
    for code in range(1, len(reasons.NAMES)):
        band = screen.refused(code).band
        if outcome.of(code) == outcome.TERMINAL:
            assert band == texts.TERMINAL_PROBLEM, reasons.name(code)
        else:
            assert band == texts.REFUSED, reasons.name(code)
    p = screen.approved(4500, 5500)
    assert p.band == "Godkendt" and [s for _x, _y, s in p.rows] == [
        "Approved", "Pris / Price", "45.00 kr.", "Saldo / Balance", "55.00 kr."]
    assert p.text() == "Godkendt 45.00 kr., saldo 55.00 kr. | Approved 45.00 kr., balance 55.00 kr."
