"""Hypothesis properties of cpos.rules.authorize, and the differential check that
MicroPython and CPython decide every generated case identically."""
from hypothesis import HealthCheck, find, given, settings, strategies as st

from cpos import reasons, rules
from rules_cases import card_from, decide, profile_from

NOW0 = 1764072000  # 2025-11-25 12:00 UTC
NL = rules.NO_LIMIT

limit = st.one_of(st.just(NL), st.integers(0, 20000))
cards = st.fixed_dictionaries({
    "status": st.sampled_from([rules.ACTIVE, rules.ACTIVE, rules.BLOCKED, rules.REPLACED]),
    "balance": st.integers(-5000, 30000),
    "places": st.integers(0, 3),
    "limits": st.lists(limit, min_size=6, max_size=6),
    "enrolled": st.booleans(),
    "topup_kr": st.integers(0, 500),
})
profiles = st.fixed_dictionaries({
    "place": st.sampled_from([rules.PLACE_SCHOOL, rules.PLACE_CLUB]),
    "kind": st.sampled_from([rules.TILL, rules.VENDING]),
    "threshold": st.one_of(st.just(5000), st.integers(0, 20000)),
})
instants = st.integers(NOW0 - 400 * 86400, NOW0 + 400 * 86400)
spends = st.fixed_dictionaries({
    "at": instants,
    "totals": st.lists(st.integers(0, 30000), min_size=6, max_size=6),
})
amounts = st.one_of(st.integers(1, 15000), st.integers(-100, 0))
cases = st.fixed_dictionaries({
    "card": st.one_of(st.none(), cards),
    "spends": spends,
    "profile": profiles,
    "amount": amounts,
    "now": instants,
})


@given(cases)
def test_approval_never_takes_available_money_below_zero(case):
    d = decide(case)
    if rules.approved(d):
        assert case["card"]["balance"] - case["amount"] >= 0


@given(cards, profiles, st.lists(st.tuples(st.integers(1, 4000), st.integers(0, 3 * 86400)), max_size=30))
def test_at_a_till_no_window_total_ever_exceeds_its_limit(c, p, purchases):
    """Run a sequence of purchases, counting approved ones: windows stay within limits."""
    p = dict(p, kind=rules.TILL)
    card, profile, s = card_from(c), profile_from(p), rules.Spends()
    card.balance = 10 ** 8  # money is not what is tested here
    now = NOW0
    for amount, gap in purchases:
        now += gap
        if rules.approved(rules.authorize(card, s, profile, amount, now)):
            s.add(profile.place, amount, now)
            for w in range(rules.WINDOWS):
                lim = card.limits[rules.slot(profile.place, w)]
                assert lim == NL or s.spent(profile.place, w, now) <= lim


@given(cases)
def test_limits_never_refuse_at_a_vending_machine(case):
    case = dict(case, profile=dict(case["profile"], kind=rules.VENDING))
    r = rules.reason(decide(case))
    assert r not in (reasons.DAY_LIMIT, reasons.WEEK_LIMIT, reasons.MONTH_LIMIT)
    # And the same case without any limits decides the same way.
    if case["card"] is not None:
        unlimited = dict(case, card=dict(case["card"], limits=[NL] * 6))
        assert rules.reason(decide(unlimited)) == r


@given(cases)
def test_topup_trigger_only_at_tills_under_threshold_for_enrolled_accounts(case):
    d = decide(case)
    c, p = case["card"], case["profile"]
    expected = (
        c is not None and case["amount"] > 0 and p["kind"] == rules.TILL
        and c["enrolled"] and c["status"] != rules.REPLACED and c["balance"] < p["threshold"]
    )
    assert rules.topup_triggered(d) == expected


def test_each_refusal_reason_is_reachable():
    """Hypothesis finds a generated case for each reason the rules can give."""
    rule_reasons = [r for r in range(len(reasons.NAMES))
                    if r not in (reasons.NEEDS_UPDATE, reasons.TERMINAL_FULL)]
    for r in rule_reasons:
        found = find(cases, lambda c, r=r: rules.reason(decide(c)) == r,
                     settings=settings(max_examples=5000, database=None))
        assert rules.reason(decide(found)) == r
    # The other two come from the card table and the journal, not from the rules.


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cases, min_size=1, max_size=60))
def test_micropython_and_cpython_decide_identically(mp_worker, batch):
    assert mp_worker.call("rules_cases", "decide_many", batch) == [decide(c) for c in batch]
