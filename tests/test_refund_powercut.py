"""A power cut at every flash operation of workloads with reversals leaves no reversal or
exactly one per purchase, and the terminal's answers and pending amounts agree with flash
(harness and checks: tests/device/refund_check.py; CPython sweep, MicroPython differential)."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import refund_check as rc
from runtimes import Worker
from simulator.norflash import CUT_AFTER, CUT_BEFORE, CUT_INSIDE

MODE_NAMES = {CUT_BEFORE: "before", CUT_INSIDE: "inside", CUT_AFTER: "after"}


@pytest.mark.parametrize("mode", rc.MODES, ids=[MODE_NAMES[m] for m in rc.MODES])
@pytest.mark.parametrize("name", sorted(rc.WORKLOADS))
def test_cut_at_every_operation(name, mode):
    clean = rc.run(name)
    assert clean["reversals"] >= 4 and clean["reboots"] == 0  # the workload does reverse things
    if name == "laps":
        assert clean["gone"] > 0  # the ring wrapped: old purchases answer purchase_not_found
    assert rc.sweep(name, modes=(mode,)) == clean["ops"]


STEP = st.one_of(
    st.tuples(st.just("a"), st.integers(1, 3), st.integers(1, 5000)),
    st.just(("f",)),
    st.tuples(st.just("r"), st.integers(-3, 8)),
    st.tuples(st.just("k"), st.integers(0, 6)),
    st.just(("p",)),
    st.just(("b",)),
)
WORKLOAD = st.tuples(st.integers(3, 5), st.sampled_from([128, 256, 512]), st.lists(STEP, min_size=1, max_size=40))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WORKLOAD, st.integers(0, 80), st.sampled_from(rc.MODES), st.integers(1, 2 ** 31))
def test_random_workloads_with_a_cut(workload, cut_at, mode, seed):
    rc.run(workload, cut_at, mode, seed)


@pytest.fixture(scope="module")
def refund_worker():
    w = Worker("micropython")
    yield w
    w.close()


@pytest.mark.parametrize("name", sorted(rc.WORKLOADS))
def test_micropython_agrees_with_cpython(refund_worker, name):
    """Each workload with a cut inside every 7th operation, on MicroPython: checked there too,
    with the same outcome as here."""
    n = rc.total_ops(name)
    for op in range(0, n, 7):
        here = rc.run(name, op, CUT_INSIDE, op + 1)
        there = refund_worker.call("refund_check", "run", name, op, CUT_INSIDE, op + 1)
        assert there == here, (name, op)
