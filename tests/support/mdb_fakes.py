"""A stand-in for the app around `cpos.mdb.service.Service` in CPython tests: the same
method names the service calls on `firmware/app.py`'s App (balance_of, decide, reverse,
report, _show, clock.now, card.account, capped), with balances in a dict and a list for a journal."""
from cpos import reasons


class _Board:
    def __init__(self):
        self.t = 1764068400

    def now(self):
        return self.t

    def waiting(self):  # as TimeKeeper.waiting: the time is known here
        return False


class _Card:
    account = 0


class _Cfg:
    terminal_id = "t0009"


class FakeApp:
    cfg = _Cfg()
    capped = False  # the last decision was not refused by the offline cap

    def __init__(self, balances, with_reverse=True):
        self.balances = dict(balances)  # uid bytes -> (account, øre)
        self.board = _Board()
        self.clock = self.board  # the trusted clock: here, the board's own
        self.card = _Card()
        self.journal = []  # [seq, uid, amount, reversed_by]
        self.reversals = []  # (reversal seq, original seq)
        self.shown = []
        self.reports = []
        if not with_reverse:
            self.reverse = None

    def balance_of(self, uid, now):
        acc = self.balances.get(bytes(uid))
        if acc is None:
            return reasons.UNKNOWN_CARD, 0
        self.card.account = acc[0]
        return reasons.APPROVED, acc[1]

    def decide(self, uid, amount, item, now):
        acc = self.balances.get(bytes(uid))
        if acc is None:
            return reasons.UNKNOWN_CARD, False, 0, 0, (0, 0, 0)
        if acc[1] < amount:
            return reasons.INSUFFICIENT_FUNDS, False, 0, acc[1], (0, 0, 0)
        seq = len(self.journal) + len(self.reversals) + 1
        self.balances[bytes(uid)] = (acc[0], acc[1] - amount)
        self.journal.append([seq, bytes(uid), amount, None])
        return reasons.APPROVED, False, seq, acc[1] - amount, (0, 0, 0)

    def reverse(self, orig_seq, now):
        for rec in self.journal:
            if rec[0] == orig_seq:
                if rec[3] is not None:
                    return reasons.name_code("already-reversed") if hasattr(reasons, "name_code") else 99, 0
                seq = len(self.journal) + len(self.reversals) + 1
                rec[3] = seq
                self.reversals.append((seq, orig_seq))
                acc = self.balances[rec[1]]
                self.balances[rec[1]] = (acc[0], acc[1] + rec[2])
                return reasons.APPROVED, seq
        return reasons.UNKNOWN_CARD, 0

    def report(self, kind, **fields):
        self.reports.append((kind, fields))

    def _event(self, kind, **fields):
        self.reports.append((kind, fields))

    def _show(self, what):
        self.shown.append(what)
