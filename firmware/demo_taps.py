"""A short lunch queue through the rules, printed tap by tap (`make demo`).

Runs on the MicroPython unix port (and on a device). It uses only the pure rules:
card records are built in RAM here; later firmware reads them from the card table.
"""
from cpos import localtime, money, reasons, rules, texts

NOON = 1764068400  # 2025-11-25 11:00 UTC = 12:00 in Copenhagen


def make_card(account, balance, status=rules.ACTIVE, places=rules.ALL_PLACES,
              school_day_limit=rules.NO_LIMIT, enrolled=False):
    c = rules.CardRecord()
    c.account = account
    c.balance = balance
    c.status = status
    c.places = places
    c.limits[rules.slot(rules.PLACE_SCHOOL, localtime.WINDOW_DAY)] = school_day_limit
    c.topup_enrolled = enrolled
    return c


CARDS = {
    "884263sae": make_card(1, 12000, school_day_limit=2500),
    "728F9661": make_card(2, 4500, enrolled=True),
    "123456789": make_card(3, 8000, status=rules.BLOCKED),
    "55AA0001": make_card(4, 9000, status=rules.REPLACED),
    "C1UB0002": make_card(5, 9000, places=1 << rules.PLACE_CLUB),
}
TILL = rules.Profile(rules.PLACE_SCHOOL, rules.TILL)
VENDING = rules.Profile(rules.PLACE_SCHOOL, rules.VENDING)

# (seconds after noon, terminal, card number, amount in øre, item)
TAPS = (
    (0, TILL, "884263sae", 2000, "1x Pastasalat"),
    (40, TILL, "884263sae", 1000, "1x Smoothie"),
    (55, VENDING, "884263sae", 1000, "1x Vand"),
    (70, TILL, "728F9661", 3500, "1x Sandwich"),
    (90, TILL, "728F9661", 1500, "1x Frugt"),
    (100, TILL, "123456789", 1500, "1x Frugt"),
    (120, TILL, "55AA0001", 1500, "1x Frugt"),
    (130, TILL, "C1UB0002", 1500, "1x Frugt"),
    (150, TILL, "DEADBEEF", 1500, "1x Frugt"),
)


def main():
    spends = {}
    approved = refused = 0
    for offset, profile, number, amount, item in TAPS:
        now = NOON + offset
        card = CARDS.get(number)
        s = spends.setdefault(number, rules.Spends())
        d = rules.authorize(card, s, profile, amount, now)
        code = rules.reason(d)
        if rules.approved(d):
            card.balance -= amount
            s.add(profile.place, amount, now)
            approved += 1
        else:
            refused += 1
        where = "till" if profile.kind == rules.TILL else "vending"
        print("%s  %-7s %-10s %11s  %-18s %-13s %s / %s%s" % (
            localtime.format_local(now)[11:], where, number, money.format_kr(amount), reasons.name(code),
            item, texts.danish(code), texts.english(code),
            "  [+ automatic top-up]" if rules.topup_triggered(d) else "",
        ))
    print("%d taps: %d approved, %d refused" % (approved + refused, approved, refused))


main()
