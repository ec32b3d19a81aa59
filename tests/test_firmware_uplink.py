"""The uplink of the real firmware through real faults: terminals are `micropython`
processes on the virtual board (simulator), the broker is mosquitto with per-terminal
ACLs, the backend is the reference ledger. Each test asserts that every approved
purchase is in the ledger exactly once, every journal record reached it, and each
terminal's journal drained (the backend's watermark covers its last record).

`make soak` holds the broker down for minutes (CPOS_SOAK); `make test` for the length
of the taps (about a minute).
"""
import asyncio
import os

import pytest

from simulator import scenario as scen
from support.site_run import booted

START = 1764068400
SOAK = bool(os.environ.get("CPOS_SOAK"))


def fleet(n_terminals, taps_each, every, events=()):
    accounts = [{"account": a, "balance": 50000000} for a in range(1, 21)]
    cards = [{"uid": "0410%04X" % a, "number": "card%d" % a, "account": a} for a in range(1, 21)]
    terminals = [{"id": "till%d" % i, "kind": "till"} for i in range(1, n_terminals + 1)]
    rush = [{"terminal": t["id"], "count": taps_each, "from": 1.0, "every": every, "hold": 0.06,
             "amounts": [500, 1250, 2000], "items": ["1x Frokost", "1x Juice"], "seed": i}
            for i, t in enumerate(terminals)]
    return scen.Scenario({"name": "uplink faults", "start": START, "site": "skole-nord", "terminals": terminals,
                          "accounts": accounts, "cards": cards, "events": list(events), "rush": rush})


def fast_taps(spec):
    return {"removal_window_ms": 100, "mqtt": {"batch": 20, "ack_timeout_ms": 3000}}


def assert_all_in_ledger(r, text, problems):
    assert problems == [], text
    assert r.drained is True, text
    for tid, term in r.terminals.items():
        recs = r.journal_records(tid)
        assert recs, tid
        assert r.site.ledger.watermark(term.spec["no"]) == recs[-1]["seq"]
        assert r.last_ack(tid) == recs[-1]["seq"], (tid, r.last_ack(tid))  # the firmware released them


@pytest.mark.parametrize("soak", [False, pytest.param(True, marks=pytest.mark.soak)])
def test_broker_down_while_1000_taps_then_back(tmp_path, soak):
    n, each, every = 4, 250, (0.9 if soak else 0.2)
    sc = fleet(n, each, every, [{"at": 0.8, "broker": "down"}])

    async def go():
        async with booted(sc, str(tmp_path), fast_taps) as r:
            await asyncio.sleep(0.5)  # connected and online before the outage
            await r.play()  # every tap, the broker down
            # Counted before the broker comes back (the scenario's own "up" event would race
            # the count with the uploads it lets through on a busy machine).
            uploaded_in_outage = sum(len(r.site.ledger.received_seqs(t.spec["no"])) for t in r.terminals.values())
            await asyncio.sleep(1.0)
            await r.site.event("broker", "up")
            await r.settle(timeout=120)
            text, problems = r.summary()
            approved = [t for t in r.taps if t.decision == "approved"]
            assert len(r.taps) == 1000 and len(approved) >= 950, text  # taps went on without the broker
            assert uploaded_in_outage == 0, "the broker was down: nothing could reach the ledger"
            assert [o[:2] for o in r.site.outages] == [("broker", "down"), ("broker", "up")]
            assert_all_in_ledger(r, text, problems)
            booked = sum(len(r.site.ledger.purchase_seqs(t.spec["no"])) for t in r.terminals.values())
            assert booked == len(approved), text

    asyncio.run(go())


def test_firmware_killed_mid_upload_resends_and_nothing_doubles(tmp_path):
    each, every = 160, 0.15
    end = 1.0 + each * every
    sc = fleet(1, each, every, [{"at": 0.8, "broker": "down"}])

    async def go():
        async with booted(sc, str(tmp_path), fast_taps) as r:
            await r.play()
            term = r.terminals["till1"]
            total = r.journal_records("till1")[-1]["seq"]
            n0 = len(term.events)
            await r.site.event("broker", "up")
            # the upload runs in batches of 20: cut the power after the first ack, mid-way
            for _ in range(3000):
                acks = [e["watermark"] for e in term.events[n0:] if e.get("ev") == "acked"]
                if acks:
                    break
                await asyncio.sleep(0.01)
            await term.power_cut()
            cut_at = acks[-1] if acks else None
            await asyncio.sleep(0.3)
            await term.boot()
            await r.settle(timeout=60)
            text, problems = r.summary()
            assert cut_at is not None and cut_at < total, (cut_at, total)  # killed with records outstanding
            assert_all_in_ledger(r, text, problems)
            assert term.power_cuts == 1 and term.boots == 2
            # after the reboot the firmware resent from its durable watermark: whatever the
            # backend had already applied came again and was booked once
            assert r.site.backend.ledger.received_seqs(1) == [x["seq"] for x in r.journal_records("till1")]

    asyncio.run(go())
