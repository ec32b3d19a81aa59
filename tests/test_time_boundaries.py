"""Trusted time across the boundaries, end to end: the real firmware on the virtual board
(its clock lost on a power cut, docs/time.md), the site's SNTP server, broker and backend,
and the world's time moved forward across local midnight and a DST switch.

Each test checks the day limit against the ledger: per account and Copenhagen local day
(computed here with zoneinfo, not cpos.localtime), what the ledger books never exceeds
the limit; every purchase made with a known time is booked in the local day it was made
in (by the world's clock at the tap); one made while the time was unknown is booked no
earlier than it was made (never in an earlier window); no journal record is older than
the one before it.
"""
import asyncio
import re

from datetime import datetime
from zoneinfo import ZoneInfo

from simulator import scenario as scen
from simulator.run import Run

CPH = ZoneInfo("Europe/Copenhagen")
DAY_LIMIT = 3000
CARDS = {"free": ("04000001", 1), "lim": ("04000002", 2)}


def local_day(t):
    return datetime.fromtimestamp(t, CPH).date()


def world(events, local_start, rtc=False):
    """The scenario; its clock starts an hour before `local_start`, so that moving it on to
    `local_start` once every terminal is up (`played`) is a step forward, as time goes."""
    accounts = [{"account": 1, "balance": 100000},
                {"account": 2, "balance": 100000, "limits": {"school": {"day": DAY_LIMIT}}}]
    cards = [{"uid": uid, "number": name, "account": acc} for name, (uid, acc) in CARDS.items()]
    start = int(datetime.fromisoformat(local_start).replace(tzinfo=CPH).timestamp()) - 3600
    return scen.Scenario({"name": "time", "start": start, "site": "skole-nord",
                          "terminals": [{"id": "till1", "kind": "till", "rtc": rtc}],
                          "accounts": accounts, "cards": cards, "events": events})


def buy(at, card, amount):
    return [{"at": at, "terminal": "till1", "pay": amount, "item": "1x Test"},
            {"at": at + 0.1, "terminal": "till1", "tap": card, "hold": 0.2}]


def allowance(spec):
    return {"offline": {"threshold_s": 600, "allowance_ore": 10000}}


async def until_logged(r, text, since=0, timeout=30.0):
    lines = r.terminals["till1"].log_lines
    for _ in range(int(timeout * 10)):
        if any(text in line for line in lines[since:]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the terminal never logged %r:\n%s" % (text, "\n".join(lines[-30:])))


async def played(tmp_path, sc, local_start, cut=None, until=None):
    """Run `sc` with the world's clock at `local_start` (Copenhagen wall time) when the
    timeline begins; returns the run, settled (every record in the ledger). With `cut`,
    the events from `cut` s on wait until the terminal has logged `until` since the
    timeline began (a condition, not a guess at how long a reconnect takes)."""
    r = Run(sc, str(tmp_path), quiet=True)
    r.prepare(allowance)
    await r.boot_all()
    await until_logged(r, "time: set by")  # connected; a source has set the time
    want = datetime.fromisoformat(local_start).replace(tzinfo=CPH).timestamp()
    assert want > r.clock(), "set-up took over an hour"
    r.clock.advance(want - r.clock())
    events = sc.events
    mark = len(r.terminals["till1"].log_lines)
    if cut is not None:
        sc.events = [e for e in events if e["at"] < cut]
    await r.play()
    if cut is not None:
        await until_logged(r, until, mark)
        sc.events = [dict(e, at=e["at"] - cut) for e in events if e["at"] >= cut]
        await r.play()
    await asyncio.sleep(0.3)
    assert await r.settle(timeout=60), r.summary()[0]
    return r


def decisions(r):
    return [(t.card, t.amount, t.reason) for t in r.taps]


def check_ledger(r):
    """The day limit per local day, each purchase in its own window, the floor kept."""
    text, problems = r.summary()
    assert problems == [], text
    led = r.site.ledger
    rows = led.db.execute("SELECT account, t, amount, seq FROM ledger WHERE type = 'withdrawn' "
                          "ORDER BY seq").fetchall()
    per_day = {}
    for acc, t, amount, seq in rows:
        per_day[(acc, local_day(t))] = per_day.get((acc, local_day(t)), 0) + amount
    for (acc, day), spent in per_day.items():
        if acc == 2:
            assert spent <= DAY_LIMIT, (day, spent, text)
    recs = {x["seq"]: x for x in r.journal_records("till1")}
    booked = {seq: t for _, t, _, seq in rows}
    for tap in r.taps:
        if tap.decision != "approved":
            continue
        rec = recs[tap.seq]
        if rec.get("time_unknown"):
            assert booked[tap.seq] >= tap.t - 1, (tap.seq, booked[tap.seq], tap.t)  # never an earlier window
            assert rec["t"] <= tap.t + 1  # the floor is a lower bound of the true time
        else:
            assert abs(rec["t"] - tap.t) <= 2, (tap.seq, rec["t"], tap.t)
            assert local_day(booked[tap.seq]) == local_day(tap.t), (tap.seq, booked[tap.seq], tap.t)
    ts = [recs[s]["t"] for s in sorted(recs)]
    assert ts == sorted(ts), ts  # no record older than the one before it: the floor never went back
    return per_day, recs


def test_power_cut_just_before_local_midnight_and_a_reboot_without_network_just_after(tmp_path):
    events = buy(0.5, "lim", 2500) + buy(1.3, "free", 500) + [
        {"at": 2.2, "backend": "down"}, {"at": 2.3, "ntp_down": True},  # the network is gone
        {"at": 2.8, "terminal": "till1", "power_cut": True},
        {"at": 3.2, "advance": 60},  # 00:00:4x: the next local day
        {"at": 3.5, "terminal": "till1", "boot": True},
    ] + buy(7.5, "lim", 2500) + buy(8.5, "free", 1000) + [
        {"at": 9.5, "backend": "up"}, {"at": 9.6, "ntp_up": True},
    ] + buy(11.0, "lim", 2500) + buy(12.0, "lim", 1000)

    async def go():
        start = "2025-11-25 23:59:40"
        r = await played(tmp_path, world(events, start), start, cut=10.5, until="time: set by backend")
        try:
            assert decisions(r) == [("lim", 2500, "approved"), ("free", 500, "approved"),
                                    ("lim", 2500, "clock_not_set"),  # its window is unknown
                                    ("free", 1000, "approved"),  # limit-free, within the allowance
                                    ("lim", 2500, "approved"),  # the new day's window, once the time is back
                                    ("lim", 1000, "day_limit")], r.summary()[0]
            per_day, recs = check_ledger(r)
            d1, d2 = local_day(r.taps[0].t), local_day(r.taps[4].t)
            assert (d2 - d1).days == 1
            assert per_day[(2, d1)] == 2500 and per_day[(2, d2)] == 2500
            untimed = [x for x in recs.values() if x.get("time_unknown")]
            assert [x["amount"] for x in untimed] == [1000]
            assert untimed[0]["t"] >= recs[2]["t"]  # stamped with the floor: the newest record and uptime
            log = "\n".join(r.terminals["till1"].log_lines)
            assert "time: the board's clock did not survive this start" in log
            assert "time unknown: clock_not_set at the floor" in log
            assert "time: set by backend" in log
        finally:
            await r.stop()

    asyncio.run(go())


def test_a_dst_switch_while_offline_keeps_the_local_day(tmp_path):
    # 01:50 CET on the last Sunday of March; at 01:00 UTC Copenhagen moves to CEST
    events = buy(0.5, "lim", 2500) + [
        {"at": 1.5, "broker": "down"}, {"at": 1.6, "ntp_down": True},  # offline, the time known
        {"at": 2.0, "advance": 21 * 3600},  # past the switch (a 23-hour day): 23:50 CEST, still Sunday
    ] + buy(2.5, "lim", 1000) + [
        {"at": 3.5, "advance": 20 * 60},  # 00:10 CEST Monday (23:10 Sunday on a clock stuck in CET)
    ] + buy(4.0, "lim", 2500) + buy(5.0, "lim", 1000)

    async def go():
        start = "2026-03-29 01:50:00"
        r = await played(tmp_path, world(events, start), start)
        try:
            assert decisions(r) == [("lim", 2500, "approved"), ("lim", 1000, "day_limit"),
                                    ("lim", 2500, "approved"), ("lim", 1000, "day_limit")], r.summary()[0]
            per_day, recs = check_ledger(r)
            days = sorted(d for (acc, d) in per_day if acc == 2)
            assert [str(d) for d in days] == ["2026-03-29", "2026-03-30"]
            assert not any(x.get("time_unknown") for x in recs.values())
        finally:
            await r.stop()

    asyncio.run(go())


def test_a_lying_sntp_server_after_a_power_cut_opens_no_second_window(tmp_path):
    events = buy(0.5, "lim", 2500) + [
        {"at": 1.5, "broker": "down"},  # the backend is unreachable ...
        {"at": 1.6, "clock_skew": 86400},  # ... and the SNTP server says it is tomorrow
        {"at": 2.0, "terminal": "till1", "power_cut": True},
        {"at": 2.5, "terminal": "till1", "boot": True},
    ] + buy(6.5, "lim", 2500) + buy(7.5, "free", 500) + [
        {"at": 8.5, "broker": "up"},
    ] + buy(9.5, "lim", 1000)

    async def go():
        start = "2025-11-25 12:00:00"
        r = await played(tmp_path, world(events, start, rtc=True), start, cut=9.0, until="time: set by backend")
        try:
            assert decisions(r) == [("lim", 2500, "approved"),
                                    ("lim", 2500, "clock_not_set"),  # tomorrow's window stays shut
                                    ("free", 500, "approved"),
                                    ("lim", 1000, "day_limit")], r.summary()[0]
            check_ledger(r)
            log = "\n".join(r.terminals["till1"].log_lines)
            assert "S time: refused sntp time" in log
            # whole seconds read a moment apart: the lie of 86,400 s shows as 86,400 or 86,401
            assert re.search(r"disagree by 8640[01] s: neither is believed", log), log
            assert "time: set by backend" in log
            # the server still lies: once the time is known, its answers are refused at S
            await until_logged(r, "differs from the time in use (backend) by +864")
        finally:
            await r.stop()

    asyncio.run(go())
