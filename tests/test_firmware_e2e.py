"""End to end on the virtual board: the real firmware (a `micropython` process, unix
board, WROOM data-heap cap) reads cards from the emulated PN532 and is paid through
the POS line protocol by the simulator.

- every refusal reason is observed through the firmware;
- power cuts during a lunch queue lose no approved purchase and charge none twice;
- after a power cut the till's `LAST` tells which of its unanswered requests was recorded;
- a configuration error stops the firmware with one line naming the field.
"""
import asyncio
import json
import os
import random
import subprocess

import pytest

from cpos import purchase
from cpos.blockfile import BlockFile
from cpos.journal import Journal, JournalFull
from simulator import scenario as scen
from simulator.terminal import micropython
from support.site_run import booted

START = 1764068400  # 2025-11-25 12:00 in Copenhagen

CARDS = {
    "ok": ("04000001", 1), "day": ("04000002", 2), "week": ("04000003", 3), "month": ("04000004", 4),
    "poor": ("04000005", 5), "club": ("04000006", 6), "blocked": ("04000007", 7),
    "old": ("04000008", 8), "new": ("0400000801AB09", 8), "topup": ("04000009", 9),
}


def base_scenario(terminals, events, rush=(), uplink=False):
    accounts = [
        {"account": 1, "balance": 100000},
        {"account": 2, "balance": 100000, "limits": {"school": {"day": 3000}}},
        {"account": 3, "balance": 100000, "limits": {"school": {"week": 3000}}},
        {"account": 4, "balance": 100000, "limits": {"school": {"month": 3000}}},
        {"account": 5, "balance": 1000},
        {"account": 6, "balance": 100000, "places": ["club"]},
        {"account": 7, "balance": 100000},
        {"account": 8, "balance": 100000},
        {"account": 9, "balance": 4000, "topup_kr": 200},
    ]
    cards = [{"uid": uid, "number": name, "account": acc,
              "status": "blocked" if name == "blocked" else "replaced" if name == "old" else "active"}
             for name, (uid, acc) in CARDS.items()]
    return scen.Scenario({"name": "e2e", "start": START, "terminals": terminals, "accounts": accounts,
                          "cards": cards, "unknown_uids": ["FEEDFACE"],  # a card no table knows
                          "events": events, "rush": list(rush), "uplink": uplink})


def purchases(terminal, t0, plan, every=0.9):
    """(card, amount) pairs -> pay + tap events one customer after another."""
    evs, t = [], t0
    for card, amount in plan:
        evs.append({"at": t, "terminal": terminal, "pay": amount, "item": "1x Test"})
        evs.append({"at": t + 0.1, "terminal": terminal, "tap": card, "hold": 0.3})
        t += every
    return evs


def run(sc, hook=None, terminal_config=None, workdir=None):
    """Play scenario sc to its end and settle; returns (run, summary text, problems)."""
    async def go():
        async with booted(sc, workdir, terminal_config, hook) as r:
            await r.play()
            await asyncio.sleep(0.3)
            await r.settle()
            text, problems = r.summary()
            return r, text, problems

    return asyncio.run(go())


def reasons_seen(r, terminal):
    return [t.reason for t in r.taps if t.terminal == terminal and t.decision in ("approved", "refused")]


def test_every_reason_through_the_real_firmware(tmp_path):
    plan = [("ok", 2000), ("day", 2000), ("day", 2000), ("week", 2000), ("week", 2000),
            ("month", 2000), ("month", 2000), ("poor", 2000), ("club", 2000), ("blocked", 500),
            ("old", 500), ("new", 500), ("FEEDFACE", 500), ("topup", 1000)]
    events = purchases("till1", 0.5, plan)
    events += purchases("vend1", 0.6, [("day", 2000), ("day", 2000), ("topup", 1000)])
    events += purchases("broken", 0.7, [("ok", 100)])
    events += purchases("full", 0.8, [("ok", 100)])
    events += [{"at": 14.0, "terminal": "till1", "tap": "ok", "hold": 0.3}]  # no open payment: balance
    sc = base_scenario([{"id": "till1", "kind": "till"}, {"id": "vend1", "kind": "vending"},
                        {"id": "broken", "kind": "till"}, {"id": "full", "kind": "till"}], events)

    def damage(r):
        # A flipped bit in every written block of the broken terminal's table (the two
        # commit blocks come first and are left alone): found on mount or on lookup.
        path = os.path.join(r.terminals["broken"].dir, "cards.bin")
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            for blk in range(2, len(data) // 4096):
                block = data[blk * 4096:(blk + 1) * 4096]
                if block.count(0xFF) != 4096:
                    data[blk * 4096 + 100] ^= 0x10
            f.seek(0)
            f.write(data)
        # The full terminal's journal already holds as many unacknowledged purchases as it can.
        spec = r.terminals["full"].config()["storage"]["journal"]
        dev = BlockFile(spec["file"], spec["size"])
        j = Journal(dev)
        j.recover()
        try:
            for i in range(j.capacity() + 1):
                j.append(START, bytes.fromhex("04000001"), 1, 100, 0, 0, 4, "earlier", 0, 0)
        except JournalFull:
            pass
        else:
            raise AssertionError("the journal never filled")
        dev.close()

    def small_journal(spec):
        if spec["id"] == "full":
            d = os.path.join(str(tmp_path), "run", "full")
            return {"storage": {"journal": {"file": os.path.join(d, "journal.bin"), "size": 4 * 4096},
                                "cardtable": {"file": os.path.join(d, "cards.bin"), "size": 256 * 4096}}}
        return None

    r, text, problems = run(sc, damage, small_journal, os.path.join(str(tmp_path), "run"))
    assert problems == [], text
    assert reasons_seen(r, "till1") == [
        "approved", "approved", "day_limit", "approved", "week_limit", "approved", "month_limit",
        "insufficient_funds", "place_not_allowed", "blocked", "replaced", "approved", "unknown_card",
        "approved"], text
    assert reasons_seen(r, "vend1") == ["approved", "approved", "approved"], "limits never at vending"
    assert reasons_seen(r, "broken") == ["needs_update"]
    assert reasons_seen(r, "full") == ["terminal_full"]
    balance = [t for t in r.taps if t.decision == "balance"]
    assert len(balance) == 1 and balance[0].reason == "approved" and balance[0].balance_after == 100000 - 2000
    # The top-up trigger travels in the journal record, at the till only.
    recs = {t: r.journal_records(t) for t in ("till1", "vend1")}
    assert [x["topup"] for x in recs["till1"] if x["account"] == 9] == [True]
    assert [x["topup"] for x in recs["vend1"] if x["account"] == 9] == [False]
    # Each refusal made its own sound and text; "no read" is tested below.
    shown = [e for e in r.terminals["till1"].events if e["ev"] == "display"]
    assert any(e["l1"].startswith("Kortet er erstattet") for e in shown)
    assert any(e["l1"] == "Kortet er spærret" for e in shown)


def test_invalid_amount_and_garbage_from_the_pos_are_refused(tmp_path):
    sc = base_scenario([{"id": "till1", "kind": "till"}], [])

    async def go():
        async with booted(sc, str(tmp_path)) as r:
            t = r.terminals["till1"]
            answers = []
            for line, ref in (("PAY r1 0 x", "r1"), ("PAY r2 -5 x", "r2"), ("VEND r3 100 x", "r3"),
                              ("HELLO", "-"), ("PAY r/4 100", "-"), ("PING", "till1")):
                fut = t.expect(ref)
                await t.send(line)
                answers.append((await asyncio.wait_for(fut, 5))[1])
            t.pos_writer.write(b"\xff\xfe\n")
            fut = t.expect("-")
            await t.pos_writer.drain()
            answers.append((await asyncio.wait_for(fut, 5))[1])
            return answers, t.running()

    answers, alive = asyncio.run(go())
    assert answers == ["ERR r1 bad-amount", "ERR r2 bad-amount", "ERR r3 wrong-kind", "ERR - unknown-request",
                       "ERR - bad-ref", "PONG till1", "ERR - not-utf8"]
    assert alive


def test_no_read_stays_silent(tmp_path):
    """A card the reader cannot read (here: none placed) gets no sound, text or reply."""
    sc = base_scenario([{"id": "till1", "kind": "till"}],
                       [{"at": 0.3, "terminal": "till1", "pay": 500, "item": "x"}])
    r, text, problems = run(sc, workdir=str(tmp_path))
    t = r.terminals["till1"]
    assert not [e for e in t.events if e["ev"] in ("buzzer", "display", "decision")]


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.soak), pytest.param(3, marks=pytest.mark.soak)])
def test_power_cuts_lose_no_purchase_and_charge_none_twice(tmp_path, seed):
    rnd = random.Random(seed)
    cards = ["ok", "new", "week", "topup", "poor", "month"]
    plan = [(rnd.choice(cards), rnd.choice([100, 200, 300])) for _ in range(40)]
    events = purchases("till1", 0.5, plan, every=0.35)
    cuts = [1.5 + 2.5 * i + rnd.uniform(0, 1.5) for i in range(5)]  # >= 1 s apart, 0.4 s off
    for c in cuts:
        events += [{"at": c, "terminal": "till1", "power_cut": True},
                   {"at": c + 0.4, "terminal": "till1", "boot": True}]
    sc = base_scenario([{"id": "till1", "kind": "till"}], events, uplink=True)
    r, text, problems = run(sc, workdir=str(tmp_path))
    assert problems == [], text  # with the uplink on: also every record in the ledger exactly once
    assert r.drained is True
    t = r.terminals["till1"]
    assert t.power_cuts == 5 and t.boots == 6
    heard = [x for x in r.taps if x.decision == "approved"]
    recs = [x for x in r.journal_records("till1") if x["reason"] == 0]
    assert len({x["seq"] for x in recs}) == len(recs)
    assert {x.seq for x in heard} <= {x["seq"] for x in recs}  # nothing the POS heard is lost
    # A record may be durable while its reply died with the power: at most one per cut.
    assert len(recs) - len(heard) <= t.power_cuts
    assert len(heard) >= 10, text  # the queue really went through


def test_after_a_power_cut_last_tells_the_till_which_unanswered_request_was_recorded(tmp_path):
    """docs/pos-protocol.md, "After a lost reply", against the real firmware: r2 is
    decided and journaled but the till is taken not to hear the reply (the power goes
    right after); r3 dies open, before any tap. After each reboot, CANCEL + LAST."""
    sc = base_scenario([{"id": "till1", "kind": "till"}], [])
    ok = bytes.fromhex(CARDS["ok"][0])

    async def ask(t, line, ref):
        fut = t.expect(ref)
        await t.send(line)
        return (await asyncio.wait_for(fut, 10))[1]

    async def last(t):
        n = len(t.stray_replies)  # a LAST reply names no ref: it lands among the strays
        await t.send("LAST")
        for _ in range(500):
            if len(t.stray_replies) > n:
                return t.stray_replies[n]
            await asyncio.sleep(0.01)
        raise AssertionError("no reply to LAST")

    async def paid(t, ref, amount):
        assert await ask(t, "PAY %s %d 1x Test" % (ref, amount), ref) == "WAIT " + ref
        fut = t.expect(ref)
        t.place(ok)
        line = (await asyncio.wait_for(fut, 10))[1]
        t.remove()
        await asyncio.sleep(0.8)  # gone longer than removal_window_ms: the next tap is new
        return line

    def verdict(reply, s):
        w = reply.split()
        return w[1] != "-" and int(w[1]) > s and w[4] == "approved"

    async def go():
        async with booted(sc, str(tmp_path)) as r:
            t = r.terminals["till1"]
            out = {"first": await last(t)}
            heard = (await paid(t, "r1", 1000)).split()
            assert heard[:2] == ["APPROVED", "r1"]
            s = int(heard[2])
            await paid(t, "r2", 700)  # durable before the reply; the till is taken not to hear it
            await t.power_cut()
            await t.boot()
            out["r2"] = (await ask(t, "CANCEL r2", "r2"), await last(t), s)
            s = int(out["r2"][1].split()[1]) if verdict(out["r2"][1], s) else s
            assert await ask(t, "PAY r3 900 1x Test", "r3") == "WAIT r3"
            await t.power_cut()  # before any tap
            await t.boot()
            out["r3"] = (await ask(t, "CANCEL r3", "r3"), await last(t), s)
            return r, out

    r, out = asyncio.run(go())
    assert out["first"] == "LAST - 0"
    recs = r.journal_records("till1")
    assert [(x["seq"], x["amount"]) for x in recs] == [(1, 1000), (2, 700)]
    cancel, reply, s = out["r2"]
    assert cancel == "ERR r2 not-open" and s == 1
    assert reply.split()[:5] == ["LAST", "2", "700", str(100000 - 1000 - 700), "approved"]
    assert verdict(reply, s)  # r2: recorded, paid
    cancel, reply, s = out["r3"]
    assert cancel == "ERR r3 not-open" and s == 2  # the reboot closed it
    assert reply == out["r2"][1] and not verdict(reply, s)  # r3: not recorded, not paid


def test_a_till_that_hears_no_decision_learns_it_through_cancel_and_last(tmp_path):
    """The simulated till follows docs/pos-protocol.md after a lost reply, so a decision it
    did not hear in time (a busy machine, a cable glitch) is neither lost nor counted as
    unpaid: r2's refusal is not recorded (not paid), r3's approval is (paid, seq 2)."""
    plan = [("ok", 500), ("poor", 5000), ("ok", 700), ("new", 300)]  # r4: another card, a new tap at once
    sc = base_scenario([{"id": "till1", "kind": "till"}], purchases("till1", 0.5, plan, every=0.9))

    def lose(r):
        r.terminals["till1"].lose_replies.update({"r2", "r3"})
        r.reply_timeout_s = 3.0  # the lost replies are waited for this long (a loaded machine may
        # make r1 or r4 late too: learned through LAST all the same, which is the point)

    r, text, problems = run(sc, hook=lose, workdir=str(tmp_path))
    assert problems == [], text
    got = [(t.ref, t.decision, t.seq) for t in r.taps]
    assert got == [("r1", "approved", 1), ("r2", "no_reply", None), ("r3", "approved", 2), ("r4", "approved", 3)], got
    assert r.taps[2].recovered and not r.taps[1].recovered
    recs = r.journal_records("till1")
    assert [(x["seq"], x["amount"]) for x in recs] == [(1, 500), (2, 700), (3, 300)]
    assert r.taps[2].balance_after == 100000 - 500 - 700


def test_bad_config_stops_with_one_line_naming_the_field(tmp_path):
    from host_tools import bundle

    bdir = str(tmp_path / "bundle")
    bundle.build("unix", bdir)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"terminal_id": "t1", "terminal_no": 1, "site": "s", "place": "canteen",
                               "kind": "till", "pn532": {"link": "tcp", "host": "127.0.0.1", "port": 1},
                               "storage": {"journal": {"partition": "j"}, "cardtable": {"partition": "c"}}}))
    env = dict(os.environ, MICROPYPATH=".frozen:" + bdir, CPOS_CONFIG=str(cfg))
    proc = subprocess.run([micropython(), "-X", "heapsize=512K", "-c", "import main"], env=env,
                          capture_output=True, text=True, timeout=30, cwd=str(tmp_path))
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E ")]
    assert errors == ["E config place: must be one of club/school, got 'canteen'"], proc.stdout
