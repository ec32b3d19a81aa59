"""The contract with the CPython backend (issue 8): for the same input, the card-table
image and the deltas built on MicroPython are the same bytes as those built on CPython.

CPython builds with `cardfmt.build_image` (the whole image); MicroPython, under the
WROOM heap cap, streams the same input through `cardfmt.ImageBuilder` and returns the
image's length and SHA-256, so no large image crosses the JSON pipe.
"""
import binascii
import hashlib

from hypothesis import given, settings, strategies as st

from cpos.cards import layout
from cpos.cards import delta
from test_cardtable_model import snapshots, account_states, uids, keys, limits, totals, amounts


def _cards_json(cards):
    return [[binascii.hexlify(u).decode(), a, s] for u, a, s in cards]


def _accounts_json(accounts):
    return [[k, list(v)] for k, v in sorted(accounts.items())]


@settings(max_examples=40, deadline=None)
@given(snap=snapshots(), version=st.integers(0, 0xFFFFFFFF), inc=st.integers(0, 0xFFFFFFFF), ref=keys)
def test_image_is_the_same_bytes_on_both_runtimes(mp_worker, snap, version, inc, ref):
    cards, accounts = snap
    if not cards:
        return
    img = layout.build_image(cards, accounts, version, inc, ref)
    got = mp_worker.call("cardtable_model", "build_digest", _cards_json(cards), _accounts_json(accounts),
                         version, inc, ref)
    assert got == [len(img), hashlib.sha256(img).hexdigest()]


def test_image_agreement_sees_a_one_byte_difference(mp_worker):
    """The comparison above can fail: a different balance gives a different digest."""
    cards = [(b"\1\2\3\4", 7, 0)]
    a = (100, 3, [-1] * 6, False, 0, [1, 2, 3], [0] * 6)
    img = layout.build_image(cards, {7: a}, 1, 1, (1, 2, 3))
    b = (101,) + a[1:]
    got = mp_worker.call("cardtable_model", "build_digest", _cards_json(cards), _accounts_json({7: b}), 1, 1,
                         [1, 2, 3])
    assert got[0] == len(img) and got[1] != hashlib.sha256(img).hexdigest()


@st.composite
def deltas(draw):
    kind = draw(st.integers(1, delta.KINDS))
    uid = uid2 = None
    value = None
    account = draw(st.integers(0, layout.MAX_ACCOUNT))
    if kind in (delta.BLOCK, delta.UNBLOCK, delta.NEW_CARD, delta.REPLACE):
        uid = draw(uids)
    if kind == delta.REPLACE:
        uid2 = draw(uids.filter(lambda u: u != uid))
    if kind in (delta.NEW_CARD, delta.REPLACE):
        value = draw(account_states())
    elif kind == delta.BALANCE:
        value = draw(amounts)
    elif kind == delta.LIMITS:
        value = draw(limits)
    elif kind == delta.PLACES:
        value = draw(st.integers(0, 3))
    elif kind == delta.ENROL:
        value = (draw(st.booleans()), draw(st.integers(0, 10000000)))
    elif kind == delta.TOTALS:
        value = (draw(keys), draw(totals))
    version = draw(st.integers(1 if kind == delta.JUMP else 0, 0xFFFFFFFF))
    if kind == delta.JUMP:
        value = draw(st.integers(0, version - 1))  # the version jumped from
    return (version, draw(st.integers(0, 0xFFFFFFFF)), kind, uid, uid2, account, value)


@settings(max_examples=150, deadline=None)
@given(d=deltas())
def test_deltas_are_the_same_bytes_on_both_runtimes(mp_worker, d):
    version, inc, kind, uid, uid2, account, value = d
    want = binascii.hexlify(delta.encode(*d)).decode()
    h = lambda u: binascii.hexlify(u).decode() if u is not None else None  # noqa: E731
    got = mp_worker.call("cardtable_model", "delta_hex", version, inc, kind, h(uid), h(uid2), account,
                         list(value) if isinstance(value, tuple) else value)
    assert got == want
