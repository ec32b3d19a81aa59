"""Stateful model test of the card table (issue 3, point 6), on both runtimes at once.

Hypothesis runs random sequences of snapshot installs (chunked, some abandoned, some
garbage, some older than the table), deltas of every kind (in order, duplicated, with
gaps, garbage), change-store upkeep steps, reboots and lookups. Every step runs on CPython (in this
process) and on MicroPython (the `mp_worker`, under the WROOM heap cap) through the
JSON driver in tests/device/cardtable_model.py, and both must agree with each other and
with `Ref`, a plain dict. A small card overlay and a change store of three buckets
fill up often: a delta that finds no room (NO_SPACE) gets the snapshot a backend sends. `make soak` runs many more and longer sequences.
"""
import binascii
import os

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import cardtable_model as cpy
from cardtable_model import Ref
from cpos.cards import layout
from cpos.cards import delta as carddelta
from cpos.cards import table as cardtable
from cpos.cards.layout import MAX_AMOUNT, MAX_ACCOUNT
from cpos.rules import NO_LIMIT, ACTIVE, BLOCKED, REPLACED

SECTORS = 20  # 2 commit blocks + 2 slots of (header + 6 pages) + change store (3 buckets, 1 spare)
GEOMETRY = dict(card_slots=8, sectors=SECTORS)
KEYS = (20400, 202548, 202511)

uids = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=7, max_size=7),
                 st.binary(min_size=10, max_size=10))
amounts = st.integers(-MAX_AMOUNT, MAX_AMOUNT)
small_amounts = st.integers(-5000, 200000)
limits = st.lists(st.one_of(st.just(NO_LIMIT), st.integers(0, MAX_AMOUNT), st.integers(0, 9000)),
                  min_size=6, max_size=6)
keys = st.lists(st.integers(0, 0x3FFFFFFF), min_size=3, max_size=3)
totals = st.lists(st.one_of(st.just(0), st.just(0), small_amounts, amounts), min_size=6, max_size=6)
account_ids = st.one_of(st.integers(0, 40), st.integers(0, MAX_ACCOUNT))


@st.composite
def account_states(draw):
    enrolled = draw(st.booleans())
    return (draw(st.one_of(small_amounts, amounts)), draw(st.integers(0, 3)),
            draw(st.one_of(st.just([NO_LIMIT] * 6), limits)), enrolled,
            draw(st.integers(0, 10000000)) if enrolled else 0,
            draw(st.one_of(st.just(list(KEYS)), keys)),
            draw(st.one_of(st.just([0] * 6), totals)))


@st.composite
def snapshots(draw):
    """(cards, accounts): up to 60 cards, some accounts shared by several cards."""
    card_uids = draw(st.lists(uids, max_size=60, unique=True))
    accounts, cards = {}, []
    for uid in card_uids:
        acct = draw(account_ids)
        if acct not in accounts:
            accounts[acct] = draw(account_states())
        cards.append((uid, acct, draw(st.sampled_from((ACTIVE, ACTIVE, BLOCKED, REPLACED)))))
    return cards, accounts


def _hex(b):
    return binascii.hexlify(bytes(b)).decode()


def _chunks(img, size):
    return [_hex(img[i:i + size]) for i in range(0, len(img), size)]


class Both:
    """Runs one driver call on CPython (in process) and MicroPython; they must agree."""

    def __init__(self, mp):
        self.mp = mp

    def __call__(self, fn, *args):
        here = getattr(cpy, fn)(*args)
        try:
            there = self.mp.call("cardtable_model", fn, *args)
        except Exception as e:
            raise AssertionError("MicroPython %s%r: %r" % (fn, args[:2], e))
        assert _plain(here) == there, (fn, here, there)
        return there


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


class CardTableMachine(RuleBasedStateMachine):
    both = None  # set by the test function: a Both over the session's worker

    @initialize()
    def start(self):
        self.ref = Ref()
        self.installed = False
        self.resync = False
        self.both("reset", GEOMETRY["card_slots"], GEOMETRY["sectors"])
        self.strangers = []  # UIDs looked up that were never cards

    # -- installs ------------------------------------------------------------------
    def _install(self, version, inc, chunks, total=None, commit=True):
        """begin, chunks, commit, one driver call each; the list of result codes."""
        out = [self.both("begin", version, inc, len(chunks) if total is None else total)]
        if out[0] != cardtable.INSTALL_OK:
            return out
        for i, c in enumerate(chunks):
            out.append(self.both("chunk", i, c))
        if commit:
            out.append(self.both("commit"))
        return out

    def _image(self, data, snap, version, inc):
        cards, accounts = snap
        return layout.build_image(cards, accounts, version, inc, KEYS)

    @rule(data=st.data(), snap=snapshots(), chunk=st.sampled_from((512, 1000, 2048)),
          inc=st.integers(0, 0xFFFFFFFF), older=st.booleans())
    def install(self, data, snap, chunk, inc, older):
        cur = self.ref.version
        if older and self.installed and cur > 0:
            version = data.draw(st.integers(0, cur - 1))
        else:
            version = cur + data.draw(st.integers(0, 3))
        img = self._image(data, snap, version, inc)
        got = self._install(version, inc, _chunks(img, chunk))
        if self.installed and version < cur:
            assert got == [cardtable.INSTALL_OLD]
        elif not snap[0]:
            _refused(got)  # a table needs at least one card
        else:
            assert got == [cardtable.INSTALL_OK] * len(got), got
            self.ref.install(snap[0], snap[1], version, inc)
            self.installed = True
            self.resync = False

    @precondition(lambda self: self.installed)
    @rule(data=st.data(), snap=snapshots(), chunk=st.sampled_from((700, 2048)), how=st.sampled_from(
        ("abandon", "commit_early", "flip", "truncate", "wrong_version")))
    def bad_install(self, data, snap, chunk, how):
        """An install that must leave the live table exactly as it was."""
        if not snap[0]:
            return
        version = self.ref.version + 1
        img = bytearray(self._image(data, snap, version, 0))
        chunks = _chunks(img, chunk)
        if how == "abandon":  # some chunks, then nothing: the next begin starts over
            k = data.draw(st.integers(0, len(chunks) - 1))
            got = self._install(version, 0, chunks[:k], len(chunks), False)
            assert got == [cardtable.INSTALL_OK] * (k + 1)
            return
        if how == "commit_early":
            k = data.draw(st.integers(0, len(chunks) - 1))
            got = self._install(version, 0, chunks[:k], len(chunks), True)
        elif how == "flip":
            pos = data.draw(st.integers(0, len(img) - 1))
            img[pos] ^= 1 << data.draw(st.integers(0, 7))
            got = self._install(version, 0, _chunks(img, chunk))
        elif how == "truncate":
            got = self._install(version, 0, _chunks(img[:-data.draw(st.integers(1, 4096))], chunk))
        else:
            got = self._install(version + 1, 0, chunks)  # header says `version`
        _refused(got, how)

    # -- deltas --------------------------------------------------------------------
    def _known_uid(self, data):
        if self.ref.cards and data.draw(st.integers(0, 3)):
            return data.draw(st.sampled_from(sorted(self.ref.cards)))
        return data.draw(uids)

    def _account(self, data):
        if self.ref.cards and data.draw(st.integers(0, 3)):
            return self.ref.cards[data.draw(st.sampled_from(sorted(self.ref.cards)))][0]
        return data.draw(account_ids)

    def _draw_delta(self, data, version):
        kind = data.draw(st.integers(1, carddelta.KINDS))
        if kind == carddelta.JUMP:  # a catch-up's jump: from exactly the table's version when in order
            cur = self.ref.version
            if version == cur + 1:
                return (cur + data.draw(st.integers(1, 1000)), data.draw(st.integers(0, 0xFFFFFFFF)), kind, None,
                        None, 0, cur)
            if version > 0:
                frm = data.draw(st.integers(0, version - 1).filter(lambda f: f != cur))
                return (version, data.draw(st.integers(0, 0xFFFFFFFF)), kind, None, None, 0, frm)
            kind = carddelta.BALANCE  # no jump arrives at version 0
        uid = uid2 = None
        value = None
        account = 0
        if kind in (carddelta.BLOCK, carddelta.UNBLOCK):
            uid = self._known_uid(data)
        elif kind == carddelta.NEW_CARD:
            uid = self._known_uid(data) if data.draw(st.integers(0, 5)) == 0 else data.draw(uids)
            account = self._account(data)
            value = data.draw(account_states())
        elif kind == carddelta.REPLACE:
            uid = self._known_uid(data)
            uid2 = data.draw(uids.filter(lambda u: u != uid))
            account = self.ref.cards[uid][0] if uid in self.ref.cards else self._account(data)
            value = data.draw(account_states())
        else:
            account = self._account(data)
            if kind == carddelta.BALANCE:
                value = data.draw(st.one_of(small_amounts, amounts))
            elif kind == carddelta.LIMITS:
                value = data.draw(limits)
            elif kind == carddelta.PLACES:
                value = data.draw(st.integers(0, 3))
            elif kind == carddelta.ENROL:
                value = (data.draw(st.booleans()), data.draw(st.integers(0, 10000000)))
            else:
                value = (data.draw(keys), data.draw(totals))
        inc = data.draw(st.integers(0, 0xFFFFFFFF))
        return (version, inc, kind, uid, uid2, account, value)

    @rule(data=st.data(), n=st.integers(1, 6))
    def deltas_in_order(self, data, n):
        for _ in range(n):
            d = self._draw_delta(data, self.ref.version + 1)
            got = self.both("delta", _hex(carddelta.encode(*d)))
            if not self.installed:
                assert got == cardtable.GAP
                self.resync = True
                return
            if got == cardtable.NO_SPACE:
                # the card overlay or a bucket is full of live changes: the table asks for
                # a snapshot (the sync sends the request), the backend sends the one it has
                assert self.both("needs_snapshot") or d[2] in (carddelta.NEW_CARD, carddelta.REPLACE,
                                                               carddelta.BLOCK, carddelta.UNBLOCK)
                self._snapshot_of_ref()
                got = self.both("delta", _hex(carddelta.encode(*d)))
            assert got == cardtable.APPLIED, (got, d)
            self.ref.delta(*d)

    def _snapshot_of_ref(self):
        r = self.ref
        cards = [(u, c[0], c[1]) for u, c in sorted(r.cards.items())]
        img = layout.build_image(cards, r.accounts, r.version, r.included_seq, KEYS)
        got = self._install(r.version, r.included_seq, _chunks(img, 2048))
        assert got == [cardtable.INSTALL_OK] * len(got), got
        self.resync = False

    @precondition(lambda self: self.installed)
    @rule(data=st.data(), how=st.sampled_from(("duplicate", "gap", "garbage", "flip", "trailing")))
    def odd_delta(self, data, how):
        cur = self.ref.version
        if how == "duplicate":
            d = self._draw_delta(data, data.draw(st.integers(max(0, cur - 5), cur)))
            want = cardtable.DUPLICATE
        elif how == "gap":
            d = self._draw_delta(data, data.draw(st.integers(cur + 2, cur + 1000)))
            want = cardtable.GAP
        else:
            d = self._draw_delta(data, cur + 1)
            want = cardtable.MALFORMED
        buf = bytearray(carddelta.encode(*d))
        if how == "garbage":
            buf = bytearray(data.draw(st.binary(max_size=220)))
        elif how == "flip":
            pos = data.draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "trailing":
            buf += data.draw(st.binary(min_size=1, max_size=8))
        got = self.both("delta", _hex(buf))
        assert got == want, (how, got)
        if want == cardtable.GAP:
            self.resync = True

    # -- upkeep, reboot ------------------------------------------------------------
    @rule()
    def step(self):
        self.both("step")  # the data must not change: the invariant checks every card

    @rule()
    def reboot(self):
        self.both("remount")
        self.resync = False  # a gap is seen again by the next delta after a reboot

    # -- lookups -------------------------------------------------------------------
    @rule(data=st.data())
    def lookup_strangers(self, data):
        extra = data.draw(st.lists(uids, max_size=4))
        self.strangers = [u for u in extra if u not in self.ref.cards]
        self._check(self.strangers)

    def _check(self, uid_list):
        got = []
        for i in range(0, len(uid_list), 12):  # small JSON lines for the capped worker
            got += self.both("lookup_many", [_hex(u) for u in uid_list[i:i + 12]])
        for uid, (r, view) in zip(uid_list, got):
            if not self.installed:
                assert r == cardtable.CORRUPT
                continue
            want = self.ref.lookup(uid)
            if want is None:
                assert r == cardtable.NOT_FOUND, (uid, r)
            else:
                assert r == cardtable.FOUND and view == want, (uid, r, view, want)

    @invariant()
    def every_card_matches_the_reference(self):
        if not hasattr(self, "ref"):
            return
        self._check(sorted(self.ref.cards))
        state, version, inc, resync, _n = self.both("info")
        if self.installed:
            assert state == cardtable.OK
            assert (version, inc) == (self.ref.version, self.ref.included_seq)
        else:
            assert state == cardtable.EMPTY
        assert resync == self.resync


def _refused(got, how=None):
    """Each page is checked as it lands: the first bad one ends the install (INSTALL_BAD),
    and the rest of its chunks, and the commit, find no install in progress."""
    assert cardtable.INSTALL_BAD in got, (how, got)
    k = got.index(cardtable.INSTALL_BAD)
    assert got[:k] == [cardtable.INSTALL_OK] * k, (how, got)
    assert got[k + 1:] == [cardtable.INSTALL_IDLE] * (len(got) - k - 1), (how, got)


def _run(mp_worker, examples, steps):
    CardTableMachine.both = Both(mp_worker)
    test = CardTableMachine.TestCase
    test.settings = settings(max_examples=examples, stateful_step_count=steps, deadline=None,
                             suppress_health_check=list(HealthCheck))
    test("runTest").runTest()


def test_card_table_model_both_runtimes(mp_worker):
    _run(mp_worker, examples=int(os.environ.get("CPOS_MODEL_EXAMPLES", "60")), steps=40)


@pytest.mark.soak
def test_card_table_model_soak(mp_worker):
    _run(mp_worker, examples=600, steps=80)
