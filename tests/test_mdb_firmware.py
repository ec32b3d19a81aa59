"""The real firmware (MicroPython unix port, unix board, WROOM data-heap cap) as the
cashless reader of an emulated vending machine (simulator/vmc.py) over the virtual bus.

- the decision path is the till's: a vend is decided by App.decide and journaled before
  VEND APPROVED; BEGIN SESSION shows the available balance and the account; a failed vend
  is refunded by a reversal record naming the purchase, and the next session shows the
  money back; the display shows each outcome;
- nothing lost: a power cut of the reader at each step of a vend (after the decision
  before the VMC heard it, after the VMC acknowledged VEND APPROVED, after VEND SUCCESS,
  after VEND FAILURE, in a session without a vend, right after VEND REQUEST) leaves the
  machine's own record of what it sold, the journal and the backend ledger in agreement.
"""
import asyncio

from cpos import reasons
from simulator import scenario as scen
from simulator.vmc import ADDR, VEND
from support.site_run import booted

START = 1764068400
RICH, POOR = "04000001", "04000005"


def scenario(level=2, always_idle=False, uplink=False):
    return scen.Scenario({
        "name": "mdb", "start": START, "uplink": uplink,
        "terminals": [{"id": "vend1", "kind": "vending", "mdb": {"level": level, "always_idle": always_idle}}],
        "accounts": [{"account": 1, "balance": 10000}, {"account": 5, "balance": 500}],
        "cards": [{"uid": RICH, "number": "rich", "account": 1}, {"uid": POOR, "number": "poor", "account": 5}],
        "events": []})


def world(test, **kw):
    async def go():
        async with booted(scenario(**kw)) as r:
            await test(r, r.terminals["vend1"])
    asyncio.run(go())


def records(run):
    """(purchases {seq: amount}, reversals {orig seq: [reversal seqs]}) from the journal."""
    buys, revs = {}, {}
    for rec in run.journal_records("vend1"):
        if "reverses" in rec:
            revs.setdefault(rec["reverses"], []).append(rec["seq"])
        elif rec["reason"] == reasons.APPROVED:
            buys[rec["seq"]] = rec["amount"]
    return buys, revs


async def wait_event(term, pred, n0=0, timeout=20.0):
    for _ in range(int(timeout / 0.02)):
        for e in term.events[n0:]:
            if pred(e):
                return e
        await asyncio.sleep(0.02)
    raise AssertionError("no such firmware event; last: %s" % term.events[-5:])


def units(ore):
    return ore  # READER CONFIG DKK 12 08, scale 1, 2 decimals: one unit is one øre


async def session(term, uid):
    vmc = term.vmc
    term.place(bytes.fromhex(uid))
    p = await vmc.poll_until((0x03,), 20.0)
    assert p is not None, "no BEGIN SESSION"
    return p


async def request(term, price, item=1):
    async with term.vmc.lock:
        kind, _ = await term.vmc.command(ADDR | VEND, 0x00, price >> 8, price & 0xFF, 0, item)
    assert kind == "ACK"


async def finish(term):
    await term.vmc.session_complete()
    term.remove()


def test_vends_on_the_real_firmware_use_the_tills_decision_path():
    async def t(run, term):
        vmc = term.vmc
        assert vmc.config[1:4] == bytes([2, 0x12, 0x08]) and vmc.peripheral_id[1:4] == b"CPS"
        n0 = len(term.events)
        out = await vmc.vend(units(1500), 3, tap=lambda: term.place(bytes.fromhex(RICH)))
        term.remove()
        assert out == "sold" and vmc.funds == 10000 and vmc.media_id == 1
        dec = await wait_event(term, lambda e: e.get("ev") == "decision", n0)
        assert dec["reason"] == "approved" and dec["balance_after"] == 8500
        await wait_event(term, lambda e: e.get("ev") == "display" and e["l1"].startswith("Godkendt"), n0)
        n0 = len(term.events)
        out = await vmc.vend(units(1500), 4, tap=lambda: term.place(bytes.fromhex(POOR)))
        term.remove()
        assert out == "denied"
        assert (await wait_event(term, lambda e: e.get("ev") == "decision", n0))["reason"] == "insufficient_funds"
        out = await vmc.vend(units(1200), 5, tap=lambda: term.place(bytes.fromhex(RICH)), outcome="failure")
        term.remove()
        assert out == "failed"
        await asyncio.sleep(0.6)  # the card leaves the field before the next customer
        out = await vmc.vend(units(100), 6, tap=lambda: term.place(bytes.fromhex(RICH)))
        term.remove()
        assert out == "sold" and vmc.funds == 8500, vmc.funds  # the failed vend's 12.00 kr came back
        buys, revs = records(run)
        assert sorted(buys.values()) == [100, 1200, 1500]
        failed = [s for s, a in buys.items() if a == 1200][0]
        assert revs == {failed: [max(revs.get(failed, [0]))]}, revs  # one reversal, naming the failed vend
    world(t)


def test_always_idle_on_the_real_firmware():
    async def t(run, term):
        assert term.vmc.always_idle and term.vmc.reader_level == 3
        out = await term.vmc.vend(units(2500), 9, tap=lambda: term.place(bytes.fromhex(RICH)))
        term.remove()
        assert out == "sold"
        assert list(records(run)[0].values()) == [2500]
    world(t, level=3, always_idle=True)


def test_a_power_cut_at_each_vend_step_loses_nothing():
    truth = {"sold": [], "failed": []}  # the vending machine's own books, across its reconnects

    async def time_set(term, since):
        # A boot starts with the board's clock lost: the reader waits up to 3 s for a first time
        # (docs/time.md); the test waits for it too, so that a slow source on a busy machine does
        # not turn the vend into a refusal (without an offline allowance it would be one).
        for _ in range(300):
            if any("time: set by" in line for line in term.log_lines[since:]):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the time was never set after the boot")

    async def cut_and_boot(term):
        await term.power_cut()
        term.remove()
        since = len(term.log_lines)
        await term.boot()  # the VMC reconnects and initialises the reader again
        await time_set(term, since)

    async def t(run, term):
        await time_set(term, 0)
        # 1. the decision is journaled, the VMC has not polled for it: nothing was vended
        await session(term, RICH)
        n0 = len(term.events)
        await request(term, 300, 1)
        await wait_event(term, lambda e: e.get("ev") == "decision", n0)
        await cut_and_boot(term)
        # 2. the VMC acknowledged VEND APPROVED (the reader noted it), then the power went:
        #    the machine vends; the standard counts it as a sale
        await session(term, RICH)
        n0 = len(term.events)
        await request(term, 400, 2)
        assert (await term.vmc.poll_until((0x05,), 20.0)) is not None
        await wait_event(term, lambda e: e.get("ev") == "mdb" and e.get("what") == "delivered", n0)
        truth["sold"].append(400)
        await cut_and_boot(term)
        # 3. after VEND SUCCESS
        await session(term, RICH)
        await request(term, 500, 3)
        assert (await term.vmc.poll_until((0x05,), 20.0)) is not None
        async with term.vmc.lock:
            assert (await term.vmc.command(ADDR | VEND, 0x02, 0, 3))[0] == "ACK"
        truth["sold"].append(500)
        await cut_and_boot(term)
        # 4. after VEND FAILURE was acknowledged (the refund is durable before the ACK)
        await session(term, RICH)
        await request(term, 600, 4)
        assert (await term.vmc.poll_until((0x05,), 20.0)) is not None
        async with term.vmc.lock:
            assert (await term.vmc.command(ADDR | VEND, 0x03))[0] == "ACK"
        truth["failed"].append(600)
        await cut_and_boot(term)
        # 5. in a session, no vend yet
        await session(term, RICH)
        await cut_and_boot(term)
        # 6. right after VEND REQUEST's ACK: decided or not, the VMC heard nothing
        await session(term, RICH)
        await request(term, 700, 6)
        await cut_and_boot(term)
        # afterwards the reader works as before
        out = await term.vmc.vend(units(800), 7, tap=lambda: term.place(bytes.fromhex(RICH)))
        term.remove()
        assert out == "sold"
        truth["sold"].append(800)
        await run.settle(60.0)

        buys, revs = records(run)
        assert all(len(v) == 1 for v in revs.values()), revs  # never reversed twice
        kept = sorted(a for s, a in buys.items() if s not in revs)
        assert kept == sorted(truth["sold"]), (buys, revs, truth)
        assert 300 in buys.values() and 600 in buys.values()  # both journaled, and both reversed
        assert run.site.ledger.balance(1) == 10000 - sum(truth["sold"]), run.site.ledger.balance(1)
        assert run.check() == [], run.check()
    world(t, uplink=True)
