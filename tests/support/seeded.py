"""A ledger that knows the accounts and cards of tests/device/fake_journal.make_record.

The backend books only records that pass its checks (backend.trust): a known account, the
card that account's, a time near the server's. make_record's records name accounts
1000..1004, each with one card, at times from 2025-11-24; these helpers give a ledger (or
a ledger file for `python -m backend`) those accounts and cards and a clock 30 days later."""
from backend import Ledger

T0 = 1764000000  # make_record's default t0
FAKE_NOW = T0 + 30 * 86400  # make_record times up to seq ~200,000 are in the past, none too old
FAKE_ACCOUNTS = tuple(range(1000, 1005))


def fake_uid(k):
    """The card make_record uses for account 1000 + k."""
    return "04%012x" % (k + 0xA1B2C3D4E5)


def seed(led):
    """Add make_record's accounts and cards to `led` (once)."""
    for k, acc in enumerate(FAKE_ACCOUNTS):
        if led.balance(acc) is None:
            led.add_account("fake %d" % acc, account_id=acc)
            led.add_card(fake_uid(k), "fake%d" % acc, acc)
    return led


def fake_ledger(path=":memory:", clock=lambda: FAKE_NOW, **kw):
    return seed(Ledger(path, clock=clock, **kw))
