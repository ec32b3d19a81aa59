"""Offline exposure: how far accounts can be overdrawn while N terminals are cut off.

Owns the simulation behind docs/offline.md and `python -m simulator exposure`. Every
terminal synced at the start of the outage (each knows every balance B exactly) and then
sees only its own purchases: its available money for an account is B minus what it
approved itself. Students tap at several terminals during the outage; each tap is decided
by the terminal alone, with no policy (`available` is all that counts) or with
cpos.offline.OfflinePolicy. The overdraft of an account is what its card spent beyond B.

Two ways of tapping:
- `lunch`: each student taps 0-6 times at random moments and terminals, buying an item
  from the menu (an ordinary outage);
- `greedy`: each student starts at a random moment and walks from terminal to terminal
  (one every `walk_s`), each time spending all the terminal lets it (the worst case).

Besides the overdraft the table counts the policy's cost: taps refused although the
student's real balance would have covered them.
"""
import random

from cpos.offline import OfflinePolicy

T0 = 1764000000
MENU_KR = (5, 8, 12, 15, 20, 25, 32, 45)


class NoPolicy:
    """Only the balance rule: a terminal lets a card spend what it counts as available."""

    def limit(self, balance_available, spent_offline, now, last_sync):
        return balance_available if balance_available > 0 else 0


class Account:
    """One account's outage: `spent[i]` at terminal i, `trusted[i]` the part of it approved
    while terminal i still trusted its view, refusals of taps the balance would have covered."""

    def __init__(self, balance, terminals):
        self.balance = balance
        self.spent = [0] * terminals
        self.trusted = [0] * terminals
        self.covered_refusals = 0
        self.approved = 0

    @property
    def overdraft(self):
        return max(0, sum(self.spent) - self.balance)


def tap(policy, acct, terminal, amount, now, last_sync=T0):
    """Terminal `terminal` decides a purchase of `amount` øre (None: as much as it allows).
    Returns the amount approved (0: refused)."""
    mine = acct.spent[terminal]
    room = policy.limit(acct.balance - mine, mine, now, last_sync)
    if amount is None:
        amount = room
    if amount <= 0 or amount > room:
        if amount > 0 and sum(acct.spent) + amount <= acct.balance:
            acct.covered_refusals += 1
        return 0
    acct.spent[terminal] += amount
    if not isinstance(policy, NoPolicy) and not policy.stale(now, last_sync):
        acct.trusted[terminal] += amount
    acct.approved += 1
    return amount


def _taps(rng, mode, terminals, outage_s, walk_s):
    """(seconds into the outage, terminal, amount or None) for one student, in time order."""
    if mode == "lunch":
        out = [(rng.randrange(outage_s), rng.randrange(terminals), rng.choice(MENU_KR) * 100)
               for _ in range(rng.randint(0, 6))]
        return sorted(out)
    start = rng.randrange(outage_s)
    first = rng.randrange(terminals)
    out = []
    k = 0
    while start + k * walk_s < outage_s and k < 3 * terminals:
        out.append((start + k * walk_s, (first + k) % terminals, None))
        k += 1
    return out


def simulate(policy, terminals=4, students=300, outage_s=7200, mode="lunch", walk_s=60, seed=1,
             max_balance_kr=300):
    """Run one outage; returns the list of Account results (same seed: same taps)."""
    rng = random.Random(seed)
    accounts = []
    for _ in range(students):
        acct = Account(rng.randint(0, max_balance_kr) * 100, terminals)
        for t, term, amount in _taps(rng, mode, terminals, outage_s, walk_s):
            tap(policy, acct, term, amount, T0 + t)
        accounts.append(acct)
    return accounts


def summary(accounts):
    over = [a.overdraft for a in accounts]
    return {"worst": max(over) if over else 0, "overdrawn": sum(1 for o in over if o),
            "total": sum(over), "approved": sum(a.approved for a in accounts),
            "covered_refusals": sum(a.covered_refusals for a in accounts)}


def report(terminals=4, students=300, outage_min=120, threshold_min=10, allowance_kr=40, walk_s=60, seed=1):
    """The comparison as a Markdown table (text)."""
    allowance = allowance_kr * 100
    policies = (("no policy", NoPolicy()),
                ("policy %d min / %d kr." % (threshold_min, allowance_kr),
                 OfflinePolicy(threshold_min * 60, allowance)),
                ("policy 0 min / %d kr." % allowance_kr, OfflinePolicy(0, allowance)))
    lines = ["Outage of %d min at %d terminals, %d students (balances 0-300 kr.), seed %d; "
             "bound N x allowance = %s kr." % (outage_min, terminals, students, seed,
                                               _kr(terminals * allowance)),
             "",
             "| tapping | policy | worst overdraft | accounts overdrawn | total overdraft | approved taps "
             "| refused though covered |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for mode in ("lunch", "greedy"):
        for name, pol in policies:
            s = summary(simulate(pol, terminals, students, outage_min * 60, mode, walk_s, seed))
            lines.append("| %s | %s | %s kr. | %d | %s kr. | %d | %d |" % (
                mode, name, _kr(s["worst"]), s["overdrawn"], _kr(s["total"]), s["approved"], s["covered_refusals"]))
    return "\n".join(lines)


def _kr(ore):
    return "%d.%02d" % (ore // 100, ore % 100)
