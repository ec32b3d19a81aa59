"""The offline policy's guarantee, and the exposure simulation that compares it with none.

Guarantee (docs/offline.md): every terminal synced at the outage's start, knowing the
balance B. Let F_i be what the card spent at terminal i while its view was still fresh
(at most threshold_s after the sync). Then what the card spends at terminal i is at most
max(F_i, min(A, B)), so the overdraft is at most sum_i max(F_i, min(A, B)) - B; in
particular at most N x A whenever sum_i F_i <= B, which always holds with threshold 0.
"""
from hypothesis import given, settings, strategies as st

from cpos.offline import OfflinePolicy
from simulator import exposure
from simulator.exposure import T0, Account, NoPolicy, simulate, summary, tap

TAPS = st.lists(st.tuples(st.integers(0, 4 * 3600), st.integers(0, 7),
                          st.one_of(st.none(), st.integers(1, 30000))), max_size=40)


@settings(max_examples=300, deadline=None)
@given(balance=st.integers(0, 50000), n=st.integers(1, 8), threshold=st.integers(0, 1800),
       allowance=st.integers(0, 20000), taps=TAPS)
def test_policy_bounds_the_overdraft(balance, n, threshold, allowance, taps):
    policy = OfflinePolicy(threshold, allowance)
    acct = Account(balance, n)
    fresh = [0] * n
    for t, term, amount in sorted(taps, key=lambda x: x[0]):
        term %= n
        got = tap(policy, acct, term, amount, T0 + t)
        if t <= threshold:
            fresh[term] += got
    for i in range(n):
        assert acct.spent[i] <= max(fresh[i], min(allowance, balance))
    assert acct.overdraft <= max(0, sum(max(f, min(allowance, balance)) for f in fresh) - balance)
    if sum(fresh) <= balance:
        assert acct.overdraft <= n * allowance


@settings(max_examples=200, deadline=None)
@given(balance=st.integers(0, 50000), n=st.integers(1, 8), allowance=st.integers(0, 20000), taps=TAPS)
def test_threshold_zero_bounds_every_outage_at_n_allowances(balance, n, allowance, taps):
    acct = Account(balance, n)
    for t, term, amount in sorted(taps, key=lambda x: x[0]):
        tap(OfflinePolicy(0, allowance), acct, term % n, amount, T0 + 1 + t)
    assert acct.overdraft <= n * allowance
    assert sum(acct.spent) <= n * min(allowance, balance)


def test_simulation_compares_policy_with_none():
    n, allowance = 4, 4000
    none = summary(simulate(NoPolicy(), n, 300, 7200, "greedy", seed=3))
    capped = summary(simulate(OfflinePolicy(0, allowance), n, 300, 7200, "greedy", seed=3))
    lunch = summary(simulate(OfflinePolicy(600, allowance), n, 300, 7200, "lunch", seed=3))
    assert none["worst"] > n * allowance  # without a policy a walk past the tills overdraws (N-1) x B
    assert 0 < capped["worst"] <= n * allowance
    assert capped["total"] < none["total"]
    assert lunch["worst"] <= n * allowance
    # Without a policy nothing the balance covered is refused; the cap's cost is visible.
    assert none["covered_refusals"] == 0
    assert summary(simulate(NoPolicy(), n, 300, 7200, "lunch", seed=3))["covered_refusals"] == 0


def test_no_policy_greedy_worst_case_is_n_minus_one_balances():
    acct = Account(10000, 4)
    for i in range(4):
        tap(NoPolicy(), acct, i, None, T0 + 60 * i)
    assert acct.overdraft == 3 * 10000


def test_report_table():
    text = exposure.report(terminals=3, students=50, outage_min=60, threshold_min=5, allowance_kr=30, seed=2)
    rows = [ln for ln in text.splitlines() if ln.startswith("| lunch") or ln.startswith("| greedy")]
    assert len(rows) == 6 and "bound N x allowance = 90.00 kr." in text
    assert rows[3].split("|")[2].strip() == "no policy"


def test_every_exposure_option_has_help(capsys):
    """`python -m simulator exposure --help` says what each figure means and its default."""
    import pytest as _pytest
    from simulator.__main__ import main

    with _pytest.raises(SystemExit) as e:
        main(["exposure", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, words in (("--terminals", "cut off"), ("--students", "students"), ("--outage-min", "minutes"),
                          ("--threshold-min", "threshold"), ("--allowance-kr", "kroner"), ("--walk-s", "walk"),
                          ("--seed", "seed")):
        at = text.index(option + " ", text.index("options:"))
        assert words in text[at:at + 250] and "(default" in text[at:at + 250], option
