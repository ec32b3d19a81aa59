"""One table-driven test per rule of RULES.md (cpos.rules.authorize), on both runtimes.

Each row: (what it shows, case, expected reason, expected top-up trigger).
"""
from cpos import reasons, rules, texts
from rules_cases import decide

NOW = 1764072000  # 2025-11-25 12:00 UTC, a Tuesday (13:00 CET)
DAY = 86400
NL = rules.NO_LIMIT
SCHOOL_TILL = {"place": rules.PLACE_SCHOOL, "kind": rules.TILL}
CLUB_TILL = {"place": rules.PLACE_CLUB, "kind": rules.TILL}
SCHOOL_VENDING = {"place": rules.PLACE_SCHOOL, "kind": rules.VENDING}


def card(**kw):
    c = {"status": rules.ACTIVE, "balance": 10000, "places": rules.ALL_PLACES, "limits": [NL] * 6}
    c.update(kw)
    return c


def limits(school=(NL, NL, NL), club=(NL, NL, NL)):
    return list(school) + list(club)


def case(c, amount=1000, profile=SCHOOL_TILL, spends=None, now=NOW):
    return {"card": c, "amount": amount, "profile": profile, "spends": spends, "now": now}


def check(rows):
    for what, cs, want_reason, want_topup in rows:
        d = decide(cs)
        got = (reasons.name(rules.reason(d)), rules.topup_triggered(d))
        want = (reasons.name(want_reason), want_topup)
        assert got == want, "%s: got %r, want %r" % (what, got, want)


def test_unknown_card_is_refused():
    check([("card not in table", case(None), reasons.UNKNOWN_CARD, False)])


def test_blocked_card_is_refused_and_reactivated_card_accepted():
    check([
        ("blocked", case(card(status=rules.BLOCKED)), reasons.BLOCKED, False),
        ("re-activated", case(card(status=rules.ACTIVE)), reasons.APPROVED, False),
        ("blocked at vending", case(card(status=rules.BLOCKED), profile=SCHOOL_VENDING), reasons.BLOCKED, False),
    ])


def test_replaced_card_is_refused_distinctly_from_blocked():
    check([
        ("replaced", case(card(status=rules.REPLACED)), reasons.REPLACED, False),
        ("replaced at vending", case(card(status=rules.REPLACED), profile=SCHOOL_VENDING), reasons.REPLACED, False),
    ])
    assert texts.danish(reasons.REPLACED) != texts.danish(reasons.BLOCKED)
    assert texts.english(reasons.REPLACED) != texts.english(reasons.BLOCKED)


def test_places_where_a_card_may_be_used():
    school_only = 1 << rules.PLACE_SCHOOL
    club_only = 1 << rules.PLACE_CLUB
    check([
        ("school card at school", case(card(places=school_only)), reasons.APPROVED, False),
        ("school card at club", case(card(places=school_only), profile=CLUB_TILL), reasons.PLACE_NOT_ALLOWED, False),
        ("club card at school", case(card(places=club_only)), reasons.PLACE_NOT_ALLOWED, False),
        ("club card at club", case(card(places=club_only), profile=CLUB_TILL), reasons.APPROVED, False),
        ("no places at all", case(card(places=0), profile=SCHOOL_VENDING), reasons.PLACE_NOT_ALLOWED, False),
    ])


def test_daily_limit_at_till_guide_example():
    # The guide's example: club daily 20 kr, school daily 25 kr.
    lim = limits(school=(2500, NL, NL), club=(2000, NL, NL))
    today = {"at": NOW - 3600, "totals": [2000, 0, 0, 1500, 0, 0]}
    check([
        ("school: 20 spent + 5 = 25 fits", case(card(limits=lim), 500, spends=today), reasons.APPROVED, False),
        ("school: 20 spent + 5.01 > 25", case(card(limits=lim), 501, spends=today), reasons.DAY_LIMIT, False),
        ("club: 15 spent + 5 = 20 fits", case(card(limits=lim), 500, CLUB_TILL, today), reasons.APPROVED, False),
        ("club: 15 spent + 6 > 20", case(card(limits=lim), 600, CLUB_TILL, today), reasons.DAY_LIMIT, False),
        ("one purchase over the limit alone", case(card(limits=lim), 2600), reasons.DAY_LIMIT, False),
    ])


def test_weekly_and_monthly_limits_at_till():
    lim = limits(school=(NL, 10000, 30000))
    spent = {"at": NOW - 2 * DAY, "totals": [0, 9500, 29000, 0, 0, 0]}  # Sunday before: other week
    same_week = {"at": NOW - DAY, "totals": [0, 9500, 20000, 0, 0, 0]}  # Monday: same week
    check([
        ("week total 95 + 6 > 100", case(card(limits=lim), 600, spends=same_week), reasons.WEEK_LIMIT, False),
        ("week total 95 + 5 = 100", case(card(limits=lim), 500, spends=same_week), reasons.APPROVED, False),
        ("last week's total does not count", case(card(limits=lim), 600, spends=spent), reasons.APPROVED, False),
        ("month 290 + 10.01 > 300", case(card(limits=lim), 1001, spends=spent), reasons.MONTH_LIMIT, False),
        ("month 290 + 10 = 300 fits", case(card(limits=lim), 1000, spends=spent), reasons.APPROVED, False),
    ])


def test_order_day_before_week_before_month():
    lim = limits(school=(1000, 1000, 1000))
    week_and_month = limits(school=(5000, 1000, 1000))
    check([
        ("all exceeded: day reported", case(card(limits=lim), 2000), reasons.DAY_LIMIT, False),
        ("week and month exceeded: week reported", case(card(limits=week_and_month), 2000), reasons.WEEK_LIMIT, False),
    ])


def test_limits_never_apply_at_vending_machines():
    lim = limits(school=(0, 0, 0), club=(0, 0, 0))
    full = {"at": NOW, "totals": [99999, 99999, 99999, 99999, 99999, 99999]}
    check([
        ("zero limits at vending", case(card(limits=lim), 1000, SCHOOL_VENDING, full), reasons.APPROVED, False),
        ("zero limits at till", case(card(limits=lim), 1000, SCHOOL_TILL, full), reasons.DAY_LIMIT, False),
    ])


def test_limits_reset_at_local_midnight_monday_and_first_of_month():
    lim = limits(school=(2500, 2500, 2500))
    # Totals counted on 2025-10-31 at 22:59:59 UTC (23:59:59 CET, a Friday).
    before = 1761951599
    spends = {"at": before, "totals": [2500, 2500, 2500, 0, 0, 0]}
    check([
        ("same local day: limit reached", case(card(limits=lim), 100, spends=spends, now=before), reasons.DAY_LIMIT, False),
        # One second later it is 1 November locally: day and month reset, week does not.
        ("next local day, same week", case(card(limits=lim), 100, spends=spends, now=before + 1), reasons.WEEK_LIMIT, False),
        # Monday 2025-11-03 00:00 CET: everything reset.
        ("next Monday", case(card(limits=lim), 100, spends=spends, now=before + 1 + 2 * DAY), reasons.APPROVED, False),
    ])


def test_limits_are_per_kind_of_place():
    lim = limits(school=(1000, NL, NL))
    spent_at_school = {"at": NOW, "totals": [1000, 1000, 1000, 0, 0, 0]}
    check([
        ("school limit reached", case(card(limits=lim), 100, spends=spent_at_school), reasons.DAY_LIMIT, False),
        ("club has no limit", case(card(limits=lim), 100, CLUB_TILL, spent_at_school), reasons.APPROVED, False),
    ])


def test_balance_must_cover_the_purchase():
    check([
        ("exact balance", case(card(balance=1000), 1000), reasons.APPROVED, False),
        ("one øre short", case(card(balance=999), 1000), reasons.INSUFFICIENT_FUNDS, False),
        ("negative balance", case(card(balance=-100), 1, SCHOOL_VENDING), reasons.INSUFFICIENT_FUNDS, False),
        ("limits checked before balance", case(card(balance=0, limits=limits((500, NL, NL))), 1000), reasons.DAY_LIMIT, False),
    ])


def test_automatic_topup_trigger():
    low = card(balance=4999, enrolled=True, topup_kr=200)
    check([
        ("under 50 kr at till, approved", case(low, 1000), reasons.APPROVED, True),
        ("under 50 kr at till, refused", case(low, 6000), reasons.INSUFFICIENT_FUNDS, True),
        ("exactly 50 kr: no trigger", case(card(balance=5000, enrolled=True), 1000), reasons.APPROVED, False),
        ("not enrolled", case(card(balance=100), 1000), reasons.INSUFFICIENT_FUNDS, False),
        ("vending machine: no trigger", case(low, 1000, SCHOOL_VENDING), reasons.APPROVED, False),
        ("blocked card: backend decides, terminal reports", case(card(balance=0, enrolled=True, status=rules.BLOCKED)), reasons.BLOCKED, True),
        ("replaced card is not tied to the account", case(card(balance=0, enrolled=True, status=rules.REPLACED)), reasons.REPLACED, False),
        ("limit refusal still reports", case(card(balance=100, enrolled=True, limits=limits((0, NL, NL)))), reasons.DAY_LIMIT, True),
    ])


def test_topup_threshold_is_configurable():
    c = card(balance=9000, enrolled=True)
    check([
        ("threshold 100 kr", case(c, 100, {"place": 0, "kind": rules.TILL, "threshold": 10000}), reasons.APPROVED, True),
        ("default 50 kr", case(c, 100), reasons.APPROVED, False),
    ])


def test_bad_amounts_are_refused_not_raised():
    for amount in (0, -100, 1.5, "100", None, True, 10 ** 12):
        d = decide(case(card(), amount))
        assert rules.reason(d) == reasons.INVALID_AMOUNT, amount
        assert not rules.topup_triggered(d)


def test_every_reason_has_texts_in_both_languages():
    n = len(reasons.NAMES)
    assert texts.danish(n) == "Fejl %d" % n, "a text for a code that is not a reason"
    for code in range(n):
        assert texts.danish(code) != "Fejl %d" % code and texts.english(code) != "Error %d" % code
        assert texts.danish(code) != texts.english(code) or code == reasons.APPROVED
    danish = [texts.danish(c) for c in range(len(reasons.NAMES))]
    assert len(set(danish)) == len(danish), "each reason needs its own text"


def test_spends_add_rolls_windows():
    s = rules.Spends()
    s.add(rules.PLACE_SCHOOL, 700, NOW)
    s.add(rules.PLACE_CLUB, 300, NOW)
    assert s.spent(rules.PLACE_SCHOOL, 0, NOW) == 700
    assert s.spent(rules.PLACE_CLUB, 2, NOW) == 300
    tomorrow = NOW + DAY
    assert s.spent(rules.PLACE_SCHOOL, 0, tomorrow) == 0
    assert s.spent(rules.PLACE_SCHOOL, 1, tomorrow) == 700
    s.add(rules.PLACE_SCHOOL, 100, tomorrow)
    assert s.spent(rules.PLACE_SCHOOL, 0, tomorrow) == 100
    assert s.spent(rules.PLACE_SCHOOL, 1, tomorrow) == 800
    assert s.spent(rules.PLACE_CLUB, 0, tomorrow) == 0
    assert s.spent(rules.PLACE_CLUB, 1, tomorrow) == 300


def test_profile_rejects_bad_values():
    for args in ((5, rules.TILL), (rules.PLACE_SCHOOL, 7), (rules.PLACE_SCHOOL, rules.TILL, -1)):
        try:
            rules.Profile(*args)
        except ValueError:
            continue
        raise AssertionError("Profile%r accepted" % (args,))
