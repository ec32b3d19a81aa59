"""A till's VOID through the real firmware (MicroPython) and the site (mosquitto, backend):
the reversal is answered at once, uploaded, booked once, shows in the statement, and the
money and the day total come back on the terminal, before and after the backend includes it."""
import asyncio

from support.site_run import booted, until
from test_firmware_e2e import base_scenario, purchases, reasons_seen


def test_a_void_at_the_till_is_booked_once_and_restores_balance_and_day_limit(tmp_path):
    # "day" is account 2: 1000 kr., school day limit 30 kr.
    first = purchases("till1", 1.0, [("day", 2500), ("day", 1000)], every=1.0)
    later = purchases("till1", 0.3, [("day", 2800)], every=1.0)
    sc = base_scenario([{"id": "till1", "kind": "till"}], first, uplink=True)
    seen = {}

    async def void(term, ref, seq):
        fut = term.expect(ref)
        await term.send("VOID %s %d" % (ref, seq))
        _, line = await asyncio.wait_for(fut, 10)
        return line

    async def go():
        async with booted(sc, str(tmp_path)) as r:
            await r.play()
            term = r.terminals["till1"]
            led = r.site.ledger
            seq = [t.seq for t in r.taps if t.decision == "approved"][0]
            seen["void"] = await void(term, "v1", seq)
            seen["again"] = await void(term, "v2", seq)
            seen["nothing"] = await void(term, "v3", 999)
            rev = int(seen["void"].split()[3])
            # the reversal reaches the ledger (watermark past it) and comes back as included
            await until(lambda: led.watermark(1) >= rev, "the reversal in the ledger")
            await until(lambda: any(e["ev"] == "synced" and e["included_seq"] >= rev for e in term.events),
                        "a delta that includes the reversal")
            await asyncio.sleep(1.0)  # the same card again: it must be gone the removal window (500 ms) first
            r.scenario.events = base_scenario([{"id": "till1", "kind": "till"}], later, uplink=True).events
            await r.play()
            await r.settle()
            text, problems = r.summary()
            seen["statement"] = led.statement("day")
            seen["balance"] = led.balance(2)
            seen["reversals"] = led.reversals(1)
            return r, text, problems, r.journal_records("till1")

    r, text, problems, recs = asyncio.run(go())
    assert problems == [], text
    assert reasons_seen(r, "till1") == ["approved", "day_limit", "approved"], text
    s = [t.seq for t in r.taps if t.decision == "approved"][0]
    assert seen["void"] == "VOIDED v1 %d %d 2500 100000" % (s, s + 1), seen
    assert seen["again"] == "REFUSED v2 already_reversed" and seen["nothing"] == "REFUSED v3 purchase_not_found"
    # 2500 given back: the day total is 0 again, so 28 kr. fits under the 30 kr. limit
    assert seen["balance"] == 100000 - 2800
    assert [(x["status"], x["orig_seq"], x["cause"]) for x in seen["reversals"]] == [("booked", s, "void")]
    lines = [(ln["type"], ln["amount"], ln["text"]) for ln in seen["statement"]]
    assert lines[:3] == [("Hævet", 2800, "1x Test"), ("Indsat", 2500, "Tilbageført: 1x Test"),
                         ("Hævet", 2500, "1x Test")], lines
    assert [x.get("reverses") for x in recs] == [None, s, None]
