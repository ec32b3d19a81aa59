"""The offline-exposure policy (cpos.offline), on both runtimes."""
from cpos.offline import OfflinePolicy
from checks import raises

T = 1764072000
MIN = 60


def test_fresh_view_allows_the_available_balance():
    p = OfflinePolicy(10 * MIN, 3000)
    assert p.limit(12000, 0, T, T) == 12000
    assert p.limit(12000, 9000, T + 10 * MIN, T) == 12000  # exactly threshold old: still fresh
    assert p.limit(-500, 0, T, T) == 0
    assert not p.stale(T + 10 * MIN, T)


def test_stale_view_caps_the_card_at_the_allowance():
    p = OfflinePolicy(10 * MIN, 3000)
    late = T + 10 * MIN + 1
    assert p.stale(late, T)
    assert p.limit(12000, 0, late, T) == 3000
    assert p.limit(12000, 1200, late, T) == 1800
    assert p.limit(12000, 3000, late, T) == 0
    assert p.limit(12000, 4500, late, T) == 0  # spent more before it went stale: nothing more
    assert p.limit(1000, 0, late, T) == 1000  # the balance still binds below the allowance
    assert p.limit(-1, 0, late, T) == 0


def test_never_synced_is_stale_and_threshold_zero_is_always_capped():
    p = OfflinePolicy(10 * MIN, 2500)
    assert p.stale(T, 0)
    assert p.limit(9000, 500, T, 0) == 2000
    z = OfflinePolicy(0, 2500)
    assert not z.stale(T, T)
    assert z.stale(T + 1, T)
    assert z.limit(9000, 500, T + 1, T) == 2000


def test_bad_settings_refused():
    raises(ValueError, OfflinePolicy, -1, 100)
    raises(ValueError, OfflinePolicy, 60, -1)
    raises(ValueError, OfflinePolicy, 60.0, 100)
    raises(ValueError, OfflinePolicy, 60, 1.5)
    raises(ValueError, OfflinePolicy, 60, True)


def _many(p, n):
    got = 0
    for i in range(n):
        got += p.limit(12000, i, T + 601 + i, T)
    return got


def test_limit_allocates_nothing():
    p = OfflinePolicy(10 * MIN, 3000)
    import sys

    if sys.implementation.name != "micropython":  # no heap lock to check with; same arithmetic
        assert _many(p, 100) == sum(3000 - i for i in range(100))
        return
    import micropython

    micropython.heap_lock()
    try:
        got = _many(p, 100)
    finally:
        micropython.heap_unlock()
    assert got == sum(3000 - i for i in range(100))
