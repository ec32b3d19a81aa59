"""Build rule inputs from plain JSON-able cases; shared by device tests and the
differential tests, so MicroPython and CPython decide exactly the same inputs.

A case is a dict:
  card:    None, or {status, balance, places, limits[6], enrolled, topup_kr}
  spends:  {at: UTC seconds the totals were last counted, totals[6]}
  profile: {place, kind, threshold}
  amount, now
"""
from cpos import rules


def card_from(c):
    if c is None:
        return None
    card = rules.CardRecord()
    card.status = c.get("status", rules.ACTIVE)
    card.balance = c.get("balance", 0)
    card.places = c.get("places", rules.ALL_PLACES)
    for i, v in enumerate(c.get("limits", [rules.NO_LIMIT] * 6)):
        card.limits[i] = v
    card.topup_enrolled = c.get("enrolled", False)
    card.topup_amount_kr = c.get("topup_kr", 0)
    return card


def spends_from(s):
    spends = rules.Spends()
    if s:
        at = s["at"]
        for w in range(rules.WINDOWS):
            spends.keys[w] = rules.window_key(at, w)
        for i, v in enumerate(s.get("totals", [0] * 6)):
            spends.totals[i] = v
    return spends


def profile_from(p):
    return rules.Profile(
        p.get("place", rules.PLACE_SCHOOL),
        p.get("kind", rules.TILL),
        p.get("threshold", rules.DEFAULT_TOPUP_THRESHOLD),
    )


def decide(case):
    return rules.authorize(
        card_from(case.get("card")),
        spends_from(case.get("spends")),
        profile_from(case.get("profile", {})),
        case["amount"],
        case["now"],
    )


def decide_many(cases):
    return [decide(c) for c in cases]
