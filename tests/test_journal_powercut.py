"""Exhaustive and random power-cut tests of the purchase journal (CPython; MicroPython
differential through the worker). The harness and its checks: tests/device/journal_check.py."""
import os

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import journal_check as jc
from runtimes import Worker
from simulator.norflash import CUT_BEFORE, CUT_INSIDE, CUT_AFTER, TEARS

MODE_NAMES = {CUT_BEFORE: "before", CUT_INSIDE: "inside", CUT_AFTER: "after"}


@pytest.mark.parametrize("mode", jc.MODES, ids=[MODE_NAMES[m] for m in jc.MODES])
@pytest.mark.parametrize("name", sorted(jc.WORKLOADS))
def test_cut_at_every_operation(name, mode):
    """Every program and erase of the workload, one cut each, checked after recovery and at
    the end. Cuts inside a program or erase tear it by 3 %, 50 %, 97 % or at random, in turn
    (the soak tries every fraction at every operation)."""
    runs = jc.sweep(name, modes=(mode,))
    assert runs == jc.total_ops(name)


@pytest.mark.parametrize("tear", TEARS, ids=[str(t) for t in TEARS])
def test_every_tear_fraction_at_every_operation_of_the_chatty_workload(tear):
    """One workload (acks between purchases, sectors crossing often) torn by each fraction
    at every program and erase: the fractions are not only sampled in turn."""
    assert jc.sweep("chatty", modes=(CUT_INSIDE,), tears=(tear,)) == jc.total_ops("chatty")


# Bigger rings, more laps, other random bits for the torn writes: `make soak`.
SOAK = {
    "soak-geometry": (4, 4096, [("a", 100), ("k", 40), ("a", 90), ("p",), ("k", 5), ("a", 80), ("k", 0)] * 4),
    "soak-small": (5, 256, [("a", 3), ("k", 1), ("a", 2), ("K", 10 ** 6), ("a", 7), ("p",), ("k", 4)] * 30),
}


@pytest.mark.soak
@pytest.mark.parametrize("name", sorted(SOAK))
@pytest.mark.parametrize("salt", [0, 1000, 2000])
def test_soak_cut_at_every_operation(name, salt):
    w = SOAK[name]
    n = jc.run(w)["ops"]
    for op in range(n):
        for m in jc.MODES:
            for t in (TEARS if m == CUT_INSIDE else (None,)):
                jc.run(w, op, m, seed=op + 1 + salt, tear=t)


@pytest.mark.soak
@pytest.mark.parametrize("name", sorted(jc.WORKLOADS))
def test_soak_every_tear_fraction_at_every_operation(name):
    assert jc.sweep(name, modes=(CUT_INSIDE,), tears=TEARS, salt=5000) == len(TEARS) * jc.total_ops(name)


STEP = st.one_of(
    st.tuples(st.just("a"), st.integers(1, 12)),
    st.tuples(st.just("k"), st.integers(0, 10)),
    st.tuples(st.just("K"), st.integers(0, 200)),
    st.just(("p",)),
    st.just(("b",)),
)
WORKLOAD = st.tuples(st.integers(3, 5), st.sampled_from([128, 256, 512, 4096]),
                     st.lists(STEP, min_size=1, max_size=30))
CUTS = st.lists(st.tuples(st.integers(0, 120), st.sampled_from(jc.MODES), st.sampled_from(TEARS)), max_size=5)


@settings(max_examples=int(os.environ.get("CPOS_HYPOTHESIS_EXAMPLES", "1000")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(WORKLOAD, CUTS, st.integers(1, 2 ** 31))
def test_random_workloads_with_random_cuts(workload, cuts, seed):
    jc.run(workload, cuts=cuts, seed=seed)


@pytest.fixture(scope="module")
def journal_worker():
    """A MicroPython worker of its own (under the heap cap): the flash models it builds
    must not crowd the shared worker's heap."""
    w = Worker("micropython")
    yield w
    w.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(WORKLOAD, CUTS, st.integers(1, 2 ** 31))
def test_micropython_agrees_with_cpython(journal_worker, workload, cuts, seed):
    """The same random workload and cuts on MicroPython: checked there, and the same outcome."""
    here = jc.run(workload, cuts=cuts, seed=seed)
    there = journal_worker.call("journal_check", "run", [workload[0], workload[1], [list(s) for s in workload[2]]],
                           None, jc.CUT_INSIDE, seed, [list(c) for c in cuts])
    assert there == here
