"""The scenario's customers at a vending machine on MDB: a `pay` event then a `tap`, played
through the emulated VMC (simulator/vmc.py) and the terminal's PN532 emulator.

Owns the glue between a run (simulator/run.py: its Tap records) and the VMC: which
outcome the machine plays (the `pay` event's `outcome`), and what the run reports for the
tap, from the VMC's result and the decision the firmware reported.
"""
import asyncio
import time

from cpos import reasons
from simulator.vmc import NoAnswer
async def customer(term, tap, uid, outcome, place, remove):
    """One scenario customer at `term`'s vending machine: the choice (the scenario's `pay`
    event: price and item) then the card (`tap`). Fills the run's Tap from what the VMC
    saw and the decision the firmware reported; returns the VMC's outcome."""
    vmc = term.vmc
    n_events = len(term.events)
    units = tap.amount // _unit_ore(vmc)
    item = 1 + (sum(tap.item.encode()) % 60 if tap.item else 0)
    t0 = time.monotonic()
    try:
        out = await vmc.vend(units, item, tap=lambda: place(uid), outcome=outcome)
    except (NoAnswer, ConnectionError, OSError):
        out = "no-answer"
    finally:
        remove()
    dec = None
    for _ in range(50):
        dec = next((e for e in term.events[n_events:] if e.get("ev") == "decision"), None)
        if dec is not None or out in ("no-session", "no-answer", "timeout"):
            break
        await asyncio.sleep(0.01)
    if dec is not None:
        tap.latency_ms = (dec["_t"] - t0) * 1000
        tap.device = {k: dec[k] for k in ("lookup_us", "rules_us", "journal_us")}
        tap.topup = bool(dec.get("topup"))
    if out in ("sold", "reset") or (out in ("failed", "cancelled") and dec and dec["reason"] == "approved"):
        tap.decision, tap.reason = "approved", "approved"
        tap.seq, tap.balance_after = dec["seq"], dec["balance_after"]
    elif out == "denied" and dec is not None:
        tap.decision, tap.reason = "refused", dec["reason"]
    elif out == "no-session":  # the card opened no session: the firmware said why
        ref = next((e for e in term.events[n_events:] if e.get("ev") == "mdb" and e.get("what") == "refused"), None)
        if ref is not None:
            tap.decision, tap.reason = "refused", reasons.name(ref["a"])
        else:
            tap.decision = "no_reply"
    else:
        tap.decision = "no_reply"
    return out


def _unit_ore(vmc):
    scale, decimals = vmc.scale()
    return scale * 10 ** (2 - decimals)
