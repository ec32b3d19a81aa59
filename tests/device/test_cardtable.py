"""Card-table cases (lib/cpos/cards/table.py) against a plain-dict reference: lookups, deltas,
the change store's bucket refreshes, atomic installs under power cuts, corruption, garbage input. Run on both
runtimes by tests/test_device_suites.py, MicroPython under the WROOM heap cap."""
import gc
import os
import sys

from cardtable_model import FLASH, SHIPPED_BLOCKS, SHIPPED_GEOMETRY, Ref, Rng, flash, make_snapshot, make_account, make_uid, install_image, install_built, check_all
from cpos.cards import layout
from cpos.cards import delta as carddelta
from cpos.cards import table as cardtable
from cpos.cards import changes
from cpos.cards.table import CardTable, FOUND, NOT_FOUND, CORRUPT, APPLIED, DUPLICATE, GAP, MALFORMED
from cpos.rules import CardRecord, Spends, BLOCKED, ACTIVE, REPLACED, NO_LIMIT
from simulator.norflash import NorFlash, PowerCut, CUT_BEFORE, CUT_INSIDE, CUT_AFTER
try:  # the harsher model: torn programs leave 3 %, 50 % or 97 % of their bits (issue 13)
    from simulator.norflash import TEARS
except ImportError:
    TEARS = (None,)


def _arm(dev, k, mode, tear=None):
    if tear is None:
        dev.arm(k, mode)
    else:
        dev.arm(k, mode, tear)


# every power-cut sweep: before and after each write, and inside it with each tear
CUTS = ((CUT_BEFORE, None),) + tuple((CUT_INSIDE, t) for t in TEARS) + ((CUT_AFTER, None),)

KEYS = (20400, 202548, 202511)
BLOCKS = 10  # 2 commit blocks + 2 slots of (header + up to 2 pages) + change store (1 bucket, 1 spare)


def fresh(n_cards=40, seed=7, version=5, inc=3, fat=False):
    gc.collect()
    dev = FLASH
    dev.wipe(seed)
    t = CardTable(dev)
    rng = Rng(seed)
    cards, accounts = make_snapshot(rng, n_cards, fat)
    ref = Ref()
    ref.install(cards, accounts, version, inc)
    b = layout.ImageBuilder(cards, accounts, version, inc, KEYS)
    cards = accounts = None
    assert install_built(t, b, version, inc) == cardtable.INSTALL_OK
    b = None
    gc.collect()
    return dev, t, ref, rng


def test_empty_device_refuses_every_lookup():
    FLASH.wipe()
    t = CardTable(FLASH)
    assert t.state == cardtable.EMPTY
    assert t.lookup(b"\1\2\3\4", CardRecord(), Spends()) == CORRUPT
    assert t.apply_delta(carddelta.encode(1, 0, carddelta.BALANCE, account=1, value=5)) == GAP
    assert not t.step() and t.state == cardtable.EMPTY


def test_lookups_match_the_reference_after_install():
    dev, t, ref, rng = fresh(60)
    assert (t.version, t.included_seq, t.n_cards) == (5, 3, 60)
    check_all(t, ref, [make_uid(rng) for _ in range(20)])
    card, spends = CardRecord(), Spends()
    assert t.lookup(b"\1\2\3", card, spends) == NOT_FOUND  # 3 bytes is no UID length
    assert t.lookup(b"", card, spends) == NOT_FOUND
    t2 = CardTable(dev)  # after a reboot
    check_all(t2, ref)


def test_multi_page_table_one_read_per_lookup():
    """One block read per lookup; a card whose account has changes since the image reads
    its account's bucket too: two."""
    dev, t, ref, rng = fresh(80, fat=True)
    assert t.n_pages >= 2
    reads = [0]
    orig = dev.readblocks

    def counting(block, buf, offset=0):
        reads[0] += 1
        orig(block, buf, offset)
    dev.readblocks = counting
    try:
        check_all(t, ref, [make_uid(rng) for _ in range(10)])
    finally:
        del dev.readblocks  # FLASH is shared by every case
    assert reads[0] == len(ref.cards) + 10
    for d in _deltas(ref, rng, 6, 5):
        assert t.apply_delta(d) == APPLIED
    dev.readblocks = counting
    per = []
    card, spends = CardRecord(), Spends()
    try:
        for uid in ref.cards:
            reads[0] = 0
            assert t.lookup(uid, card, spends) == FOUND
            per.append(reads[0])
    finally:
        del dev.readblocks
    assert max(per) == 2 and min(per) >= 1, per  # one bucket here: every account's changes are in it
    check_all(t, ref)


def _deltas(ref, rng, start, n):
    """n random in-order deltas from version `start`, applied to `ref`; returns their bytes."""
    out = []
    uids = list(ref.cards)
    for i in range(n):
        v = start + i
        k = 1 + rng.below(9)
        acct = ref.cards[uids[rng.below(len(uids))]][0]
        uid = uid2 = None
        value = None
        if k == carddelta.BALANCE:
            value = rng.below(100000) - 500
        elif k in (carddelta.BLOCK, carddelta.UNBLOCK):
            uid = uids[rng.below(len(uids))]
        elif k == carddelta.NEW_CARD:
            uid = make_uid(rng)
            value = make_account(rng)
        elif k == carddelta.REPLACE:
            uid = uids[rng.below(len(uids))]
            acct = ref.cards[uid][0]
            uid2 = make_uid(rng)
            value = make_account(rng)
        elif k == carddelta.LIMITS:
            value = [NO_LIMIT, rng.below(9000), NO_LIMIT, NO_LIMIT, rng.below(9000), NO_LIMIT]
        elif k == carddelta.PLACES:
            value = rng.below(4)
        elif k == carddelta.ENROL:
            value = (rng.below(2) == 1, rng.below(300))
        elif k == carddelta.TOTALS:
            value = ([20401, 202549, 202512], [rng.below(700), 0, 5, 0, 0, rng.below(99)])
        out.append(carddelta.encode(v, 100 + v, k, uid, uid2, acct, value))
        ref.delta(v, 100 + v, k, uid, uid2, acct, value)
        if uid2 is not None:
            uids.append(uid2)
        elif k == carddelta.NEW_CARD:
            uids.append(uid)
    return out


def test_deltas_in_order_duplicates_gaps_and_garbage():
    dev, t, ref, rng = fresh(50)
    ds = _deltas(ref, rng, 6, 12)
    for d in ds:
        assert t.apply_delta(d) == APPLIED
    assert (t.version, t.included_seq) == (17, 117)
    check_all(t, ref)
    assert t.apply_delta(ds[3]) == DUPLICATE
    assert t.apply_delta(ds[-1]) == DUPLICATE  # the newest one again (an MQTT redelivery)
    assert not t.needs_resync
    assert t.apply_delta(carddelta.encode(19, 0, carddelta.BALANCE, account=1, value=1)) == GAP
    assert t.needs_resync and t.version == 17
    bad = bytearray(carddelta.encode(18, 0, carddelta.BALANCE, account=1, value=1))
    for junk in (b"", b"\x44", bytes(bad[:-1]), bytes(bad) + b"\0", bytes(range(40))):
        assert t.apply_delta(junk) == MALFORMED
    for i in range(len(bad) * 8):
        b2 = bytearray(bad)
        b2[i // 8] ^= 1 << (i % 8)
        assert t.apply_delta(b2) == MALFORMED
    check_all(t, ref)
    t2 = CardTable(dev)  # the log replays
    assert (t2.version, t2.included_seq) == (17, 117)
    check_all(t2, ref)


def test_a_full_bucket_is_rewritten_alone_and_a_full_store_asks_for_a_snapshot():
    dev, t, ref, rng = fresh(60)
    img = list(range(2, 2 + 2 * t._slot_len))
    before = [dev.erase_counts[b] for b in img]
    accts = list(ref.accounts)[:3]
    v = 6
    erases0 = dev.erases
    for i in range(400):  # three accounts, many balance changes: the bucket fills again and again
        acct = accts[i % 3]
        ref.delta(v, v, carddelta.BALANCE, account=acct, value=i * 7)
        assert t.apply_delta(carddelta.encode(v, v, carddelta.BALANCE, account=acct, value=i * 7)) == APPLIED
        v += 1
        if i % 50 == 49:
            check_all(t, ref)
    assert [dev.erase_counts[b] for b in img] == before  # no image block is rewritten
    assert 2 <= dev.erases - erases0 <= 400 * 23 // (4096 - 200) + 2  # one erase per bucket-full
    check_all(t, ref)
    check_all(CardTable(dev), ref)
    # the upkeep step: past its mark a bucket is rewritten between messages, not in a delta
    while t.step():  # erase the blocks the refreshes above replaced
        pass
    while not t.chg.due:
        acct = accts[v % 3]
        ref.delta(v, v, carddelta.BALANCE, account=acct, value=v)
        assert t.apply_delta(carddelta.encode(v, v, carddelta.BALANCE, account=acct, value=v)) == APPLIED
        v += 1
    f0 = t.chg.fill_of(0)
    steps = 0
    while t.step():  # the refresh, then erasing the blocks it (and earlier ones) replaced
        steps += 1
    assert steps == 2 and t.chg.fill_of(0) < 200 < f0 and not t.wants_step
    check_all(t, ref)
    # many distinct accounts: live changes fill the store; a snapshot request, then NO_SPACE
    r = APPLIED
    for acct in list(ref.accounts) + list(range(5000, 5100)):  # the rest no card of ours uses
        for k in range(3):
            d = carddelta.encode(v, v, carddelta.TOTALS, account=acct, value=([20401, 202549, 202512], [k, 1, 2, 3, 4, 5]))
            r = t.apply_delta(d)
            if r != APPLIED:
                break
            ref.delta(v, v, carddelta.TOTALS, account=acct, value=([20401, 202549, 202512], [k, 1, 2, 3, 4, 5]))
            d2 = carddelta.encode(v + 1, v + 1, carddelta.LIMITS, account=acct, value=[k, 5, 6, 7, 8, 9])
            r = t.apply_delta(d2)
            if r != APPLIED:
                v += 1
                break
            ref.delta(v + 1, v + 1, carddelta.LIMITS, account=acct, value=[k, 5, 6, 7, 8, 9])
            v += 2
        if r != APPLIED:
            break
    assert r == cardtable.NO_SPACE and t.needs_snapshot, r
    check_all(t, ref)
    check_all(CardTable(dev), ref)
    gc.collect()
    assert install_built(t, _image_of(ref), ref.version, ref.included_seq) == cardtable.INSTALL_OK
    assert not t.needs_snapshot and t.chg.used == 0
    check_all(t, ref)
    # card changes fill the card overlay: a snapshot request, then NO_SPACE
    r = APPLIED
    while r == APPLIED:
        uid = make_uid(rng)
        acct = list(ref.accounts)[0]
        a = make_account(rng)
        r = t.apply_delta(carddelta.encode(v, v, carddelta.NEW_CARD, uid, None, acct, a))
        if r == APPLIED:
            ref.delta(v, v, carddelta.NEW_CARD, uid, None, acct, a)
            v += 1
    assert r == cardtable.NO_SPACE and t.needs_snapshot
    check_all(t, ref)
    check_all(CardTable(dev), ref)
    assert dev.torn_overwrites == 0


def _cut_sweep(prepare, action, modes=CUTS, least=3):
    """Run `action` with a power cut at every flash operation (before, inside with each
    tear, after); yields (dev, old_ref, new_ref)."""
    dev, t, old, new = prepare()
    ops0 = dev.ops
    action(t)
    total = dev.ops - ops0
    assert total >= least
    for k in range(total):
        for mode, tear in modes:
            t = None
            gc.collect()
            dev, t, old, new = prepare()
            _arm(dev, k, mode, tear)
            try:
                action(t)
                raise AssertionError("no power cut at op %d" % k)
            except PowerCut:
                pass
            dev.reboot()
            t = None  # the caller opens the device afresh, as after a reboot
            yield dev, old, new
            gc.collect()


def _old_or_new(dev, old, new, **geometry):
    t = CardTable(dev, **geometry)
    assert t.state == cardtable.OK, t.state
    ref = old if t.version == old.version else new
    assert t.version == ref.version and t.included_seq == ref.included_seq, (t.version, old.version)
    check_all(t, ref)
    return t


def test_power_cut_at_every_write_of_an_install():
    rng = Rng(99)
    cards, accounts = make_snapshot(rng, 30)
    new = Ref()
    new.install(cards, accounts, 9, 44)
    img = layout.build_image(cards, accounts, 9, 44, KEYS)
    cards = accounts = None
    dev, t, old, _ = fresh(30, seed=3)
    snap = dev.save()

    def prepare():
        dev.restore(snap)
        return dev, CardTable(dev), old, new

    seen = {}
    for dev, old, new_ in _cut_sweep(prepare, lambda t: install_image(t, img, 9, 44, chunk=700)):
        t = _old_or_new(dev, old, new_)
        seen[t.version] = 1
        assert install_image(t, img, 9, 44) == cardtable.INSTALL_OK  # a retry completes
        check_all(t, new_)
        assert dev.torn_overwrites == 0
    assert seen == {5: 1, 9: 1}


def test_power_cut_at_every_write_of_a_bucket_refresh_and_a_delta():
    dev, t, ref, rng = fresh(30, seed=5)
    ds = _deltas(ref, rng, 6, 3)
    for d in ds:
        assert t.apply_delta(d) == APPLIED
    acct = list(ref.accounts)[0]
    v = 9
    while not t.chg.due:  # fill the bucket past its refresh mark
        ref.delta(v, v, carddelta.BALANCE, account=acct, value=v)
        assert t.apply_delta(carddelta.encode(v, v, carddelta.BALANCE, account=acct, value=v)) == APPLIED
        v += 1
    mid = Ref()  # the table's meaning now; `ref` goes on by one delta
    mid.cards, mid.accounts = dict(ref.cards), dict(ref.accounts)
    mid.version, mid.included_seq = ref.version, ref.included_seq
    last = _deltas(ref, rng, v, 1)[0]
    snap = dev.save()

    def prepare():
        dev.restore(snap)
        return dev, CardTable(dev), mid, ref

    # a refresh changes where the changes live, not what they say: the same table either way
    for dev, old, _ in _cut_sweep(prepare, lambda t: t.step()):
        t = CardTable(dev)
        assert t.state == cardtable.OK and (t.version, t.included_seq) == (old.version, old.included_seq)
        check_all(t, old)
        assert t.apply_delta(last) == APPLIED  # and the next delta finds room
        assert dev.torn_overwrites == 0
    # a cut while appending a delta: after reboot the delta is there or not, never half
    for dev, old, new in _cut_sweep(prepare, lambda t: t.apply_delta(last), least=1):
        _old_or_new(dev, old, new)
        assert dev.torn_overwrites == 0


def _shipped_table(seed, n_cards):
    """(device, table, rng, reference): a table in the geometry the firmware ships with a
    fresh snapshot (v5, included 3) of `n_cards` random cards, and its reference meaning."""
    gc.collect()
    dev = flash(SHIPPED_BLOCKS)
    t = CardTable(dev, **SHIPPED_GEOMETRY)
    rng = Rng(seed)
    cards, accounts = make_snapshot(rng, n_cards)
    ref = Ref()
    ref.install(cards, accounts, 5, 3)
    assert install_built(t, layout.ImageBuilder(cards, accounts, 5, 3, KEYS), 5, 3) == cardtable.INSTALL_OK
    return dev, t, rng, ref


def test_deltas_past_the_first_log_block_survive_a_reboot_and_a_cut():
    """Issue 13's reproduction in the geometry the firmware ships (the 4 MB layout's card
    partition, the card slots firmware/app.py gives with the downlink on): 200 balance
    deltas to one account fill its bucket, which is rewritten, and go on in the new block.
    A reboot, and a power cut at any write of the next delta, must find every one of them
    (format 1 lost them: its replay stopped at the first log block's blank tail)."""
    geo = SHIPPED_GEOMETRY
    dev, t, rng, ref = _shipped_table(11, 20)
    acct = ref.cards[list(ref.cards)[0]][0]
    seq0 = t.chg.seq
    for v in range(6, 206):
        assert t.apply_delta(carddelta.encode(v, 3, carddelta.BALANCE, None, None, acct, 1000 + v)) == APPLIED
        ref.delta(v, 3, carddelta.BALANCE, None, None, acct, 1000 + v)
    assert t.chg.seq >= seq0 + 2, t.chg.seq  # the bucket was started, filled and rewritten
    bucket = changes.account_bucket(acct, t.chg.nb)
    while t.chg.fill_of(bucket) <= changes.REFRESH_AT:  # past the mark: the upkeep step rewrites it too
        v += 1
        assert t.apply_delta(carddelta.encode(v, 3, carddelta.BALANCE, None, None, acct, 1000 + v)) == APPLIED
        ref.delta(v, 3, carddelta.BALANCE, None, None, acct, 1000 + v)
    while t.step():
        pass
    assert t.version == v and t.chg.rewrites >= 2  # inline when full, then by the upkeep step
    t = CardTable(dev, **geo)  # a plain reboot
    assert (t.state, t.version, t.needs_resync) == (cardtable.OK, v, False), (t.state, t.version)
    check_all(t, ref)
    old = Ref()
    old.cards, old.accounts, old.version, old.included_seq = dict(ref.cards), dict(ref.accounts), v, 3
    nxt = carddelta.encode(v + 1, 3, carddelta.BALANCE, None, None, acct, 4242)
    ref.delta(v + 1, 3, carddelta.BALANCE, None, None, acct, 4242)
    snap = dev.save()

    def prepare():
        dev.restore(snap)
        return dev, CardTable(dev, **geo), old, ref

    for d, o, n in _cut_sweep(prepare, lambda tb: tb.apply_delta(nxt), least=1):
        t = _old_or_new(d, o, n, **geo)
        # the backend resends what it does not see acknowledged: applied once, either way
        want = APPLIED if t.version == old.version else DUPLICATE
        got = t.apply_delta(nxt)
        assert got == want, (got, want)
        check_all(t, ref)
        check_all(CardTable(d, **geo), ref)  # and it is on flash
        assert d.torn_overwrites == 0  # never a program over what a torn one left


def test_long_stream_with_cuts_reboots_installs_and_resends():
    """The shipped geometry under a long stream (short here; tests/test_cardtable_soak.py
    runs it long): deltas of every kind, bucket refreshes, snapshot installs, plain
    reboots and power cuts at random writes, the backend resending after each cut."""
    fig = long_stream(n_deltas=500, seed=21, install_every=450, hot_pct=88)
    assert fig["bucket_rewrites"] > 0 and fig["resent_applied"] > 0 and fig["reboots"] > 0, fig


def _copy(ref):
    r = Ref()
    r.cards, r.accounts, r.version, r.included_seq = dict(ref.cards), dict(ref.accounts), ref.version, ref.included_seq
    return r


def _image_of(ref):
    """The backend's snapshot of `ref`, as a builder that streams it one block at a time."""
    cards = [(u, c[0], c[1]) for u, c in ref.cards.items()]
    return layout.ImageBuilder(cards, ref.accounts, ref.version, ref.included_seq, KEYS)


def long_stream(n_deltas, seed, install_every, cut_one_in=4, cards=60, blocks=0, modes=None, hot_pct=70):
    """Drive a table through `n_deltas` deltas as a backend would; returns the figures.

    The backend sends each delta until it sees it acknowledged: a cut before the delta was
    durable finds the table at the old version and the resend applies it; a cut after
    finds the new version and the resend is a DUPLICATE. A cut inside an install leaves
    the old table or the new one. Every reopen checks every card against the reference
    at the version the table mounts. `hot_pct` of the deltas are balance changes of one
    account (a lunch regular: its bucket fills and is refreshed), the rest of every kind."""
    gc.collect()
    geo = SHIPPED_GEOMETRY
    dev = flash(blocks or SHIPPED_BLOCKS)
    rng = Rng(seed)
    c, a = make_snapshot(rng, cards)
    ref = Ref()  # the table's meaning as acknowledged
    ref.install(c, a, 5, 3)
    c = a = None
    t = CardTable(dev, **geo)
    assert install_built(t, _image_of(ref), 5, 3) == cardtable.INSTALL_OK
    fig = {"cuts": 0, "reboots": 0, "installs": 0, "resent_applied": 0, "resent_duplicate": 0,
           "upkeep_steps": 0, "bucket_rewrites": 0, "deltas": 0}
    since = 0
    modes = modes or CUTS
    pend = None  # (delta bytes, the meaning after it): sent, not yet acknowledged

    def reopen(old, new):
        fig["bucket_rewrites"] += t.chg.rewrites  # counted per mount: the old one ends here
        tt = CardTable(dev, **geo)
        assert tt.state == cardtable.OK, tt.state
        if tt.version == old.version:
            check_all(tt, old)
            return tt, old
        assert new is not None and tt.version == new.version, (tt.version, old.version)
        check_all(tt, new)
        return tt, new

    while fig["deltas"] < n_deltas:
        cut = rng.below(cut_one_in) == 0
        mode, tear = modes[rng.below(len(modes))]
        installing = since >= install_every or t.needs_snapshot
        new = None
        try:
            if installing:
                new = _copy(ref)  # the backend moved on while the terminal waited for it
                _deltas(new, rng, new.version + 1, 3)
                img = _image_of(new)
                fig["bucket_rewrites"] += t.chg.rewrites
                t.chg.rewrites = 0
                if cut:
                    _arm(dev, rng.below(3 * (img.n_pages + 3)), mode, tear)
                assert install_built(t, img, new.version, new.included_seq) == cardtable.INSTALL_OK
                img = None
                dev.reboot()  # disarm: no cut came
                ref, pend, since = new, None, 0
                fig["installs"] += 1
                check_all(t, ref)
            else:
                if pend is None:
                    new = _copy(ref)
                    if rng.below(100) < hot_pct:
                        v = ref.version + 1
                        hot = sorted(new.accounts)[0]
                        val = rng.below(90000)
                        new.delta(v, 100 + v, carddelta.BALANCE, account=hot, value=val)
                        pend = (carddelta.encode(v, 100 + v, carddelta.BALANCE, account=hot, value=val), new)
                    else:
                        pend = (_deltas(new, rng, ref.version + 1, 1)[0], new)
                d, new = pend
                if cut:
                    _arm(dev, rng.below(6), mode, tear)
                r = t.apply_delta(d)
                if r == cardtable.NO_SPACE:  # only a snapshot helps: the sync asks for one
                    dev.reboot()
                    since, pend = install_every, None
                    continue
                assert r == APPLIED, r
                ref, pend = new, None
                fig["deltas"] += 1
                since += 1
                if t.step():  # upkeep moves changes about, never changes what they say
                    fig["upkeep_steps"] += 1
                    check_all(t, ref)
                dev.reboot()
            if rng.below(25) == 0:
                t, ref = reopen(ref, None)
                fig["reboots"] += 1
        except PowerCut:
            dev.reboot()
            fig["cuts"] += 1
            if installing:
                t, got = reopen(ref, new)
                if got is new:
                    ref, pend, since = new, None, 0
                continue
            if pend is None:  # the cut came after the delta, in the upkeep step
                t, ref = reopen(ref, None)
                continue
            d, new = pend
            t, got = reopen(ref, new)
            if got is new:  # durable before the cut: the backend's resend is a duplicate
                assert t.apply_delta(d) == DUPLICATE
                fig["resent_duplicate"] += 1
                ref, pend = new, None
                fig["deltas"] += 1
                since += 1
            else:
                fig["resent_applied"] += 1  # the next round sends the same delta again
    t, ref = reopen(ref, None)
    check_all(t, ref)
    assert dev.torn_overwrites == 0
    assert fig["cuts"] > 0 and fig["installs"] > 0, fig
    return fig


def test_a_flipped_bit_in_any_block_is_caught():
    dev, t, ref, rng = fresh(80, seed=11, fat=True)
    card, spends = CardRecord(), Spends()
    live = [0, 1] + list(range(t._img_start(t.slot), t._img_start(t.slot) + 1 + t.n_pages))
    for blk in live:
        for off in (0, 5, 777, 4095):
            for bit in (0, 7):
                dev.mem[blk * 4096 + off] ^= 1 << bit
                t2 = CardTable(dev)
                bad = 0
                for uid in ref.cards:
                    r = t2.lookup(uid, card, spends)
                    if r == CORRUPT:
                        bad += 1
                    else:
                        assert r == FOUND
                        assert [card.account, card.status, card.balance] == ref.lookup(uid)[:3]
                assert t2.needs_resync, (blk, off, bit)
                assert bad > 0 or blk < 2, (blk, off, bit)  # a commit block's spare bytes hold no data
                dev.mem[blk * 4096 + off] ^= 1 << bit
    # damage in the change store: never wrong data without a resync asked for
    ds = _deltas(ref, rng, 6, 5)
    for d in ds:
        assert t.apply_delta(d) == APPLIED
    bucket = t.chg.first + t.chg.block_of(0)
    for off in list(range(0, 200, 7)) + [t.chg.fill_of(0) - 1]:
        dev.mem[bucket * 4096 + off] ^= 4
        t2 = CardTable(dev)
        assert t2.needs_resync or t2.version == 10, (off, t2.version, t2.state)
        if t2.state == cardtable.OK:
            assert 5 <= t2.version <= 10
            if t2.version == 10:  # every delta still there: the same data as before
                check_all(t2, ref)
        else:  # damaged beyond replay: refuses every card, never answers from the store
            assert t2.state == cardtable.BROKEN
            for uid in ref.cards:
                assert t2.lookup(uid, card, spends) == CORRUPT
        dev.mem[bucket * 4096 + off] ^= 4
    check_all(CardTable(dev), ref)


def test_garbage_snapshots_leave_the_old_table():
    dev, t, ref, rng = fresh(40)
    cards, accounts = make_snapshot(rng, 40)
    img = bytearray(layout.build_image(cards, accounts, 8, 1, KEYS))
    for pos in (3, 40, 4096 + 2, 4096 + 300, len(img) - 1):
        bad = bytearray(img)
        bad[pos] ^= 0x10
        assert install_image(t, bad, 8, 1) == cardtable.INSTALL_BAD
        check_all(t, ref)
    assert install_image(t, img[:-4096], 8, 1) == cardtable.INSTALL_BAD
    assert install_image(t, img, 9, 1) == cardtable.INSTALL_BAD  # header says version 8
    assert install_image(t, bytes(8192), 8, 1) == cardtable.INSTALL_BAD
    assert install_image(t, img, 4, 1) == cardtable.INSTALL_OLD
    assert t.install_chunk(0, b"x") == cardtable.INSTALL_IDLE
    assert t.install_begin(8, 1, 3) == cardtable.INSTALL_OK
    assert t.install_chunk(1, img[:10]) == cardtable.INSTALL_OUT_OF_ORDER
    assert t.install_chunk(0, img[:4096]) == cardtable.INSTALL_OK
    assert t.install_chunk(0, img[:4096]) == cardtable.INSTALL_DUPLICATE
    assert t.install_commit() == cardtable.INSTALL_BAD  # abandoned half way
    check_all(CardTable(dev), ref)
    assert install_image(t, img, 8, 1) == cardtable.INSTALL_OK
    ref.install(cards, accounts, 8, 1)
    check_all(t, ref)


def test_file_block_device():
    from cpos.blockfile import BlockFile
    path = (os.getenv("CPOS_TMP") or "/tmp") + "/cpos_cardtable_test.bin"  # private per process
    try:
            os.remove(path)
    except OSError:
        pass
    dev = BlockFile(path, BLOCKS * 4096)  # created erased
    assert dev.ioctl(4, 0) == BLOCKS and dev.ioctl(5, 0) == 4096
    t = CardTable(dev)
    rng = Rng(5)
    cards, accounts = make_snapshot(rng, 30)
    ref = Ref()
    ref.install(cards, accounts, 2, 2)
    assert install_image(t, layout.build_image(cards, accounts, 2, 2, KEYS), 2, 2) == cardtable.INSTALL_OK
    for d in _deltas(ref, rng, 3, 5):
        assert t.apply_delta(d) == APPLIED
    dev.close()
    dev = BlockFile(path, readonly=True)  # reopened as it is, read-only: lookups only
    check_all(CardTable(dev), ref)
    dev.close()


def test_lookup_allocates_nothing():
    if sys.implementation.name != "micropython":
        return
    dev, t, ref, rng = fresh(40)
    for d in _deltas(ref, rng, 6, 6):
        t.apply_delta(d)

    class Dev:  # a block device whose reads do not allocate, like esp32.Partition
        def __init__(self, mem):
            self.mem = mem

        def readblocks(self, block, buf, offset=0):
            s = block * 4096 + offset
            m = self.mem
            for i in range(len(buf)):
                buf[i] = m[s + i]
    # a catch-up's jump in the store: the tap path steps over it without allocating
    assert t.apply_delta(carddelta.encode(t.version + 30, t.included_seq, carddelta.JUMP, value=t.version)) == APPLIED
    t.dev = Dev(dev.mem)
    uids = list(ref.cards)[:10]
    card, spends = CardRecord(), Spends()
    for uid in uids:
        assert t.lookup(uid, card, spends) == FOUND
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for uid in uids:
        t.lookup(uid, card, spends)
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used


# -- catch-up: the JUMP delta (docs/protocol.md "Catch-up from the ledger's changes") --------
def test_a_jump_encodes_and_decodes_and_every_malformed_one_is_refused():
    from cpos.crc import seal
    j = carddelta.encode(40, 17, carddelta.JUMP, value=12)
    assert j == bytes([0x44, 1, 10, 40, 0, 0, 0, 17, 0, 0, 0, 12, 0, 0, 0]) + j[15:] and len(j) == 19, j
    d = carddelta.Delta().decode(j)
    assert (d.kind, d.version, d.included_seq, d.value) == (carddelta.JUMP, 40, 17, 12)
    top = carddelta.encode(0xFFFFFFFF, 0, carddelta.JUMP, value=0xFFFFFFFE)
    assert carddelta.Delta().decode(top).value == 0xFFFFFFFE
    for frm in (40, 41, -1, 0x100000000, None, "12", 12.0):  # a jump goes up, from a u32
        try:
            carddelta.encode(40, 17, carddelta.JUMP, value=frm)
            raise AssertionError("encoded a jump from %r to 40" % (frm,))
        except ValueError:
            pass

    def sealed(body):  # a head + body with a good CRC: only the decoder's checks stand between
        b = bytearray(bytes([0x44, 1, 10, 40, 0, 0, 0, 17, 0, 0, 0]) + body + b"\0\0\0\0")
        seal(b)
        return bytes(b)
    assert carddelta.Delta().decode(sealed(b"\x0c\0\0\0")).value == 12  # the harness seals as encode does
    for body in (b"", b"\x0c", b"\x0c\0\0", b"\x0c\0\0\0\0", b"(\0\0\0", b")\0\0\0", b"\xff\xff\xff\xff"):
        try:
            carddelta.Delta().decode(sealed(body))
            raise AssertionError("decoded a jump with body %r" % body)
        except ValueError:
            pass
    for i in range(len(j) * 8):  # any flipped bit: the CRC, or a check, refuses it
        b = bytearray(j)
        b[i // 8] ^= 1 << (i % 8)
        try:
            carddelta.Delta().decode(b)
            raise AssertionError("decoded a jump with bit %d flipped" % i)
        except ValueError:
            pass
    dev, t, ref, rng = fresh(20)
    for bad in (sealed(b"\x05\0\0"), sealed(b"(\0\0\0"), j[:-1]):
        assert t.apply_delta(bad) == MALFORMED and t.version == 5


def test_a_jump_applies_only_from_exactly_its_from_version_and_a_reboot_mounts_at_it():
    dev, t, ref, rng = fresh(30)
    for d in _deltas(ref, rng, 6, 3):
        assert t.apply_delta(d) == APPLIED
    assert t.version == 8
    assert t.apply_delta(carddelta.encode(30, 7, carddelta.JUMP, value=7)) == GAP  # not from 8
    assert t.version == 8 and t.needs_resync
    t.needs_resync = False  # the sync engine clears it: intact, only behind
    assert t.apply_delta(carddelta.encode(30, 7, carddelta.JUMP, value=9)) == GAP  # nor from ahead of it
    assert t.apply_delta(carddelta.encode(8, 7, carddelta.JUMP, value=2)) == DUPLICATE  # at the version
    assert t.apply_delta(carddelta.encode(5, 7, carddelta.JUMP, value=2)) == DUPLICATE  # below it
    assert t.version == 8
    t.needs_resync = False
    j = carddelta.encode(30, 107, carddelta.JUMP, value=8)
    assert t.apply_delta(j) == APPLIED
    ref.version, ref.included_seq = 30, 107
    assert (t.version, t.included_seq, t.needs_resync) == (30, 107, False)
    check_all(t, ref)  # a jump changes no card
    assert t.apply_delta(j) == DUPLICATE
    assert t.apply_delta(carddelta.encode(31, 0, carddelta.JUMP, value=8)) == GAP  # a second jump from 8: no
    t.needs_resync = False
    t2 = CardTable(dev)  # a reboot right after the jump: the jump alone says the version
    assert (t2.state, t2.version, t2.included_seq, t2.needs_resync) == (cardtable.OK, 30, 107, False)
    check_all(t2, ref)
    ds = _deltas(ref, rng, 31, 4)
    for d in ds:
        assert t2.apply_delta(d) == APPLIED  # the catch-up's deltas follow it
    t3 = CardTable(dev)  # and replay after the jump
    assert (t3.version, t3.included_seq) == (34, 134)
    check_all(t3, ref)
    # the account whose id is the jump's `from` (its bytes sit where an account's would)
    acct = 8
    assert t3.apply_delta(carddelta.encode(35, 135, carddelta.NEW_CARD, b"\x08\x08\x08\x08", None, acct,
                                           (1234, 1, [NO_LIMIT] * 6, False, 0, [0, 0, 0], [0] * 6))) == APPLIED
    ref.delta(35, 135, carddelta.NEW_CARD, b"\x08\x08\x08\x08", None, acct,
              (1234, 1, [NO_LIMIT] * 6, False, 0, [0, 0, 0], [0] * 6))
    check_all(t3, ref)
    check_all(CardTable(dev), ref)


def test_a_bucket_refresh_keeps_the_newest_jump_and_the_version_it_gives():
    """Every delta in one bucket here (the test geometry has one): deltas overridden by newer
    ones are dropped, and so is a jump a newer jump follows; the newest jump stays, so a
    reboot after the refresh still mounts at the jumped version."""
    dev, t, ref, rng = fresh(30, seed=9)
    acct = list(ref.accounts)[0]
    v = 6
    for mark in (changes.REFRESH_AT // 3, 2 * changes.REFRESH_AT // 3):
        while t.chg.fill_of(changes.JUMP_BUCKET) < mark:
            ref.delta(v, 40, carddelta.BALANCE, account=acct, value=v)
            assert t.apply_delta(carddelta.encode(v, 40, carddelta.BALANCE, account=acct, value=v)) == APPLIED
            v += 1
        assert t.apply_delta(carddelta.encode(v + 99, 40, carddelta.JUMP, value=v - 1)) == APPLIED
        v += 100
    ref.version, ref.included_seq = v - 1, 40
    rewrites = t.chg.rewrites
    t.chg.refresh(changes.JUMP_BUCKET)
    assert t.chg.rewrites == rewrites + 1
    p = t.page
    dev.readblocks(t.chg.first + t.chg.block_of(changes.JUMP_BUCKET), p)
    kinds = []
    o = changes.HDR
    while o < t.chg.fill_of(changes.JUMP_BUCKET):
        kinds.append((p[o + 4], changes.rd32(p, o + 5)))
        o += 2 + changes.rd16(p, o)
    assert kinds == [(carddelta.BALANCE, ref.version - 100), (carddelta.JUMP, ref.version)], kinds
    t2 = CardTable(dev)
    assert (t2.state, t2.version, t2.included_seq) == (cardtable.OK, ref.version, 40)
    check_all(t2, ref)


def _catch_up(ref, rng, frm, to, n):
    """A catch-up from version `frm`: a jump to `to`, then n deltas (state now) to[+1..n],
    the last carrying the new included_seq; returns (list of bytes, refs by version)."""
    refs = {frm: _copy(ref)}
    out = [carddelta.encode(to, 60, carddelta.JUMP, value=frm)]
    ref.version, ref.included_seq = to, 60
    refs[to] = _copy(ref)
    accts = list(ref.accounts)
    for i in range(n):
        v = to + 1 + i
        inc = 60 if i < n - 1 else 77
        acct = accts[i % len(accts)]
        if i % 5 == 4:
            uid = list(ref.cards)[i % len(ref.cards)]
            out.append(carddelta.encode(v, inc, carddelta.BLOCK, uid=uid))
            ref.delta(v, inc, carddelta.BLOCK, uid=uid)
        else:
            out.append(carddelta.encode(v, inc, carddelta.BALANCE, account=acct, value=5000 + v))
            ref.delta(v, inc, carddelta.BALANCE, account=acct, value=5000 + v)
        refs[v] = _copy(ref)
    return out, refs


def test_power_cut_at_every_write_of_a_catch_up_mounts_old_or_new_per_delta():
    """The shipped geometry: a table at v8 takes a catch-up (a jump to v40, then 10 deltas).
    A cut at any flash write of it: the table mounts at a version of the catch-up's path with
    exactly that version's content, holds every delta it had said APPLIED for, and the
    backend's resend of the whole catch-up then applies each missing delta once."""
    geo = SHIPPED_GEOMETRY
    dev, t, rng, ref = _shipped_table(13, 24)
    for d in _deltas(ref, rng, 6, 3):
        assert t.apply_delta(d) == APPLIED
    ds, refs = _catch_up(ref, rng, 8, 40, 10)
    snap = dev.save()
    done = []

    def prepare():
        dev.restore(snap)
        del done[:]
        return dev, CardTable(dev, **geo), refs[8], ref

    def action(tb):
        for d in ds:
            assert tb.apply_delta(d) == APPLIED
            done.append(carddelta.Delta().decode(d).version)

    seen = {}
    for d_, _, new in _cut_sweep(prepare, action, least=len(ds)):
        t = CardTable(d_, **geo)
        assert t.state == cardtable.OK and t.version in refs, (t.state, t.version)
        assert not done or t.version >= done[-1], (t.version, done)  # no APPLIED delta lost
        want = refs[t.version]
        assert t.included_seq == want.included_seq, (t.version, t.included_seq, want.included_seq)
        check_all(t, want)
        seen[t.version] = 1
        v0 = t.version
        applied = 0
        for d in ds:  # the backend resends the catch-up from the start (a DELTAS message whole)
            r = t.apply_delta(d)
            if r == APPLIED:
                applied += 1
            elif r != DUPLICATE:  # a torn append's resync: the version is right, the rest follows
                raise AssertionError("resend refused: %d at v%d" % (r, t.version))
        assert applied == (11 if v0 == 8 else 50 - v0), (applied, v0)  # each missing one once
        assert (t.version, t.included_seq) == (50, 77)
        check_all(t, new)
        check_all(CardTable(d_, **geo), new)
        assert d_.torn_overwrites == 0
    assert 8 in seen and 40 in seen and 50 in seen, sorted(seen)


def test_a_change_store_of_the_format_before_jumps_mounts_broken_and_asks_for_a_snapshot():
    """Format 1 could not hold a JUMP; a store written by it (a firmware update) is not read
    as if it were format 2: the table mounts BROKEN, refuses every card, asks for a snapshot."""
    dev, t, ref, rng = fresh(20)
    for d in _deltas(ref, rng, 6, 3):
        assert t.apply_delta(d) == APPLIED
    c = t.chg
    p = bytearray(4096)
    blk = c.first + c.block_of(0)
    dev.readblocks(blk, p)
    assert p[0] == changes.MAGIC and p[1] == changes.FORMAT == 2
    p[1] = 1  # the same block, sealed as format 1 wrote it
    crc = c._crc(p, changes.rd16(p, 12))
    for i in range(4):
        p[16 + i] = (crc >> (8 * i)) & 0xFF
    dev.writeblocks(blk, p)
    t = CardTable(dev)
    assert (t.state, t.needs_resync) == (cardtable.BROKEN, True), t.state
    assert t.lookup(list(ref.cards)[0], CardRecord(), Spends()) == CORRUPT
    assert t.apply_delta(carddelta.encode(9, 0, carddelta.BALANCE, account=1, value=5)) == GAP


def test_with_included_tells_the_same_change_with_another_watermark():
    for kw in (dict(account=7, value=12345), dict(uid=b"\x04\x01\x02\x03")):
        kind = carddelta.BALANCE if "account" in kw else carddelta.BLOCK
        d = carddelta.encode(40, 3, kind, **kw)
        assert carddelta.with_included(d, 9) == carddelta.encode(40, 9, kind, **kw)
        assert carddelta.with_included(d, 3) == d
