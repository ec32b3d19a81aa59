"""Own purchases not yet included by the backend (cpos.pending): counted exactly once."""
from cpos import pending, rules

NOW = 1764072000


def test_pending_purchases_reduce_balance_and_add_to_windows():
    p = pending.Pending()
    p.clear(included_seq=10)
    p.add(9, 7, rules.PLACE_SCHOOL, 500, NOW)  # already included: ignored
    p.add(11, 7, rules.PLACE_SCHOOL, 1500, NOW)
    p.add(12, 7, rules.PLACE_CLUB, 700, NOW)
    p.add(13, 8, rules.PLACE_SCHOOL, 100, NOW)
    assert p.amount(7) == 2200 and p.amount(8) == 100 and p.amount(9) == 0
    assert p.count == 3 and p.accounts() == 2
    card = rules.CardRecord()
    card.account, card.balance = 7, 10000
    s = rules.Spends()
    s.add(rules.PLACE_SCHOOL, 1000, NOW)  # backend-known total
    p.apply_to(card, s, NOW)
    assert card.balance == 7800
    assert s.spent(rules.PLACE_SCHOOL, 0, NOW) == 2500
    assert s.spent(rules.PLACE_CLUB, 0, NOW) == 700


def test_stale_windows_do_not_count_and_clear_forgets():
    p = pending.Pending()
    p.add(1, 7, rules.PLACE_SCHOOL, 1500, NOW - 86400)  # yesterday
    card = rules.CardRecord()
    card.account, card.balance = 7, 10000
    s = rules.Spends()
    p.apply_to(card, s, NOW)
    assert card.balance == 8500  # money still pending
    assert s.spent(rules.PLACE_SCHOOL, 0, NOW) == 0  # but not today's total
    assert s.spent(rules.PLACE_SCHOOL, 1, NOW) == 1500  # same ISO week
    p.clear(included_seq=1)
    assert p.amount(7) == 0
