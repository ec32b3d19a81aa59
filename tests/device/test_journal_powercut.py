"""Power cuts at flash operations, on both runtimes (the subset that runs on MicroPython).

Small workloads are cut at every program and erase in each mode; the long ones at
every 7th operation. CPython also runs all of them at every operation, and random
workloads with several cuts each (tests/test_journal_powercut.py).
"""
from journal_check import sweep, run, WORKLOADS


def test_every_cut_small_workloads():
    runs = 0
    for name in ("chatty", "full", "reserve", "reboots"):
        runs += sweep(name)
    assert runs > 500


def test_every_7th_cut_long_workloads():
    assert sweep("laps", stride=7) + sweep("geometry", stride=7, start=3) > 300


def test_workloads_wrap_the_ring_and_fill_it():
    for name in WORKLOADS:
        s = run(name)
        nsec = WORKLOADS[name][0]
        assert s["ops"] > 40
        if name in ("laps", "geometry", "chatty"):
            assert s["erases"] >= 3 * nsec, (name, s)  # several laps
        if name in ("full", "reserve"):
            assert s["refused"] > 0, (name, s)  # reaches the full journal
