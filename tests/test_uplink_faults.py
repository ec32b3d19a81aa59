"""Every purchase exactly once through real faults: a real mosquitto (per test, per-terminal
ACL), the reference backend as its own process, and a stand-in terminal process running
cpos.net.uplink + cpos.net.mqtt on MicroPython (and CPython) over a file-backed journal.

The broker outage lasts CPOS_OUTAGE_S seconds (3 in `make test`); the soak variant holds
the broker down for minutes (`make soak`).
"""
import os
import signal
import time

import pytest

from support.uplink_world import (assert_exactly_once, finish, prefill, start_backend, start_terminal, stop,
                                  wait_progress)

OUTAGE_S = float(os.environ.get("CPOS_OUTAGE_S", "3"))


@pytest.fixture
def world(tmp_path, broker):
    procs = []
    yield broker, str(tmp_path / "ledger.db"), str(tmp_path / "journal"), procs
    for p in procs:
        stop(p)


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_drains_with_gaps_exactly_once(runtime, world):
    broker, db, jdir, procs = world
    gaps = (5, 130, 131)
    prefill(jdir, 300, gaps=gaps)
    procs.append(start_backend(broker, db))
    term = start_terminal(runtime, jdir, broker, batch=50, taps=0)
    procs.append(term)
    r = finish(term)
    assert r["acked"] == 300 and r["records"] >= 297
    assert_exactly_once(db, jdir, 300, gaps=gaps)


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_memory_journal_drains_with_live_taps(runtime, world):
    """The engine over the in-memory fake journal: 120 prefilled records plus 80 taps."""
    broker, db, jdir, procs = world
    procs.append(start_backend(broker, db))
    term = start_terminal(runtime, "mem:120", broker, batch=16, taps=80, tap_ms=3)
    procs.append(term)
    r = finish(term)
    assert r["acked"] == 200 and r["oldest"] is None and r["batches"] >= 13
    from backend import Ledger
    from support.uplink_world import journal_records

    led = Ledger(db)
    recs = journal_records(None, 200)
    assert led.received_seqs(1) == list(range(1, 201))
    assert led.purchase_seqs(1) == [x["seq"] for x in recs if x["reason"] == 0]
    assert led.watermark(1) == 200
    led.close()


def _outage(runtime, world, outage_s, taps):
    broker, db, jdir, procs = world
    procs.append(start_backend(broker, db))
    tap_ms = max(1, int(outage_s * 1000 * 0.7 / taps))  # most taps fall inside the outage
    term = start_terminal(runtime, jdir, broker, batch=50, ack_timeout_ms=2000, taps=taps, tap_ms=tap_ms,
                          deadline_ms=int(outage_s * 1000) + 90000)
    procs.append(term)
    wait_progress(term, lambda acked, nxt, b: acked > 0)
    broker.stop()
    down_at = time.time()
    stuck = wait_progress(term, lambda acked, nxt, b: time.time() - down_at >= outage_s, timeout=outage_s + 30)
    broker.start()
    r = finish(term, timeout=120)
    assert stuck[1] - 1 > stuck[0], "taps must have been journaled while the broker was down"
    assert r["next_seq"] == taps + 1
    assert r["connects"] >= 2
    # The tap task never waited on the network: such a wait is an ack timeout (2 s) or a connect
    # timeout (5 s). The lag is what the process itself held the loop, the time it waited for a
    # core on a busy machine taken out (tests/device/loop_gap.py).
    assert r["lag_corrected"] and r["max_tap_lag_ms"] < 1500, r
    assert_exactly_once(db, jdir, taps)


@pytest.mark.parametrize("runtime", ["micropython"])
def test_broker_down_while_1000_taps(runtime, world):
    _outage(runtime, world, OUTAGE_S, 1000)


@pytest.mark.soak
@pytest.mark.parametrize("runtime", ["micropython"])
def test_broker_down_for_minutes_while_1000_taps(runtime, world):
    _outage(runtime, world, float(os.environ.get("CPOS_SOAK_OUTAGE_S", "180")), 1000)


@pytest.mark.parametrize("runtime", ["micropython"])
def test_terminal_sigkill_mid_upload(runtime, world):
    broker, db, jdir, procs = world
    n = 3000
    prefill(jdir, n)
    procs.append(start_backend(broker, db))
    term = start_terminal(runtime, jdir, broker, batch=20, taps=0)
    procs.append(term)
    acked, _, _ = wait_progress(term, lambda acked, nxt, b: acked >= 200)
    term.send_signal(signal.SIGKILL)
    term.wait()
    assert acked < n, "killed too late to be mid-upload"
    from backend import Ledger

    led = Ledger(db)
    partial = len(led.received_seqs(1))
    led.close()
    assert 0 < partial < n
    term = start_terminal(runtime, jdir, broker, batch=20, taps=0)
    procs.append(term)
    r = finish(term)
    assert r["acked"] == n
    assert_exactly_once(db, jdir, n)


@pytest.mark.parametrize("recovery", ["broker_redelivers", "terminal_resends"])
def test_backend_killed_between_apply_and_ack(recovery, world):
    """SIGKILL right after the 3rd batch's commit, before its ack. Restarted with the same MQTT
    session the broker redelivers the unacknowledged batch; with a fresh session (as after a
    broker restart) nothing is redelivered and the terminal's ack timeout resends it."""
    broker, db, jdir, procs = world
    n = 500
    prefill(jdir, n)
    be = start_backend(broker, db, crash_after_apply=3)
    procs.append(be)
    term = start_terminal("micropython", jdir, broker, batch=50, ack_timeout_ms=1000, taps=0)
    procs.append(term)
    assert be.wait(timeout=30) == -signal.SIGKILL
    from backend import Ledger

    led = Ledger(db)
    applied_w = led.watermark(1)
    led.close()
    assert applied_w >= 150  # three batches committed ...
    acked, _, _ = wait_progress(term, lambda acked, nxt, b: True)
    assert acked < applied_w  # ... and the last one never acknowledged
    if recovery == "terminal_resends":
        # A fresh session: the broker restarted (no persistence). A new client id no longer
        # makes one: the broker binds the client id to the login (docs/broker.md).
        broker.restart()
    procs.append(start_backend(broker, db))
    r = finish(term)
    assert r["acked"] == n
    if recovery == "terminal_resends":
        # The terminal sent the batch again: on its ack timeout, or on the new connection the
        # broker's restart gave it (which of the two comes first is the machine's timing).
        assert r["resends"] >= 1 or r["connects"] >= 2, r
    assert_exactly_once(db, jdir, n)
