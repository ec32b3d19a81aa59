"""Own purchases not yet included by the backend (cpos.cards.unincluded): counted exactly once."""
from cpos import rules
from cpos.cards import unincluded

NOW = 1764072000


def test_pending_purchases_reduce_balance_and_add_to_windows():
    p = unincluded.Unincluded()
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
    p = unincluded.Unincluded()
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


def _state(p, now):
    """What the tap path can see of `p`: per account, the money and the window totals."""
    out = []
    for acct in (1, 2, 3):
        card, s = rules.CardRecord(), rules.Spends()
        card.account = acct
        p.apply_to(card, s, now)
        out.append((acct, -card.balance, [s.spent(pl, w, now) for pl in (0, 1) for w in range(3)]))
    return p.count, p.accounts(), out


def test_advance_forgets_what_a_rebuild_would_and_reads_only_the_new_records():
    from cpos import reasons
    from cpos.journal import Journal
    from simulator.norflash import NorFlash

    j = Journal(NorFlash(8 * 4096))
    j.recover()
    p = unincluded.Unincluded()
    p.clear(0)
    t = NOW - 86400 - 3600  # yesterday, then today: window totals roll between them
    for i in range(40):
        acct, place, amount = 1 + i % 3, (i // 3) % 2, 100 + 7 * i
        reason = reasons.INSUFFICIENT_FUNDS if i % 9 == 4 else reasons.APPROVED
        t += 2700
        seq = j.append(t, b"\x04\x00\x00\x01", acct, amount, place, rules.TILL, 1, "1x Te", 0, reason, False)
        if reason == reasons.APPROVED:
            p.add(seq, acct, place, amount, t)
    now = t
    reads = [0]
    orig = j.read

    def counting(seq, buf, acked=False):
        reads[0] += 1
        return orig(seq, buf, acked)

    j.read = counting
    done = 0
    for inc in (0, 3, 4, 11, 12, 25, 25, 39, 40):
        reads[0] = 0
        p.advance(j, inc)
        assert reads[0] <= inc - done + 1, (inc, reads[0])  # the new records, and one look past
        done = inc
        fresh = unincluded.Unincluded()
        fresh.rebuild(j, inc)
        assert _state(p, now) == _state(fresh, now), inc
    assert p.count == 0 and p.accounts() == 0
    p.advance(j, 7)  # backwards (a restored backend): everything above 7 counts again
    fresh = unincluded.Unincluded()
    fresh.rebuild(j, 7)
    assert p.included_seq == 7 and _state(p, now) == _state(fresh, now) and p.count > 0
