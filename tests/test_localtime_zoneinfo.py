"""cpos.localtime against CPython's zoneinfo, every hour of 2020-2032, on both runtimes.

CPython's zoneinfo (with the system tz database) is the reference. The MicroPython
side is asked, a week at a time, for its view of each hour and compared row by row.
"""
import datetime
import zoneinfo

import pytest

from cpos import localtime as lt

CPH = zoneinfo.ZoneInfo("Europe/Copenhagen")
START = int(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
END = int(datetime.datetime(2033, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
HOURS = (END - START) // 3600
WEEK = 168


def reference(t):
    local = datetime.datetime.fromtimestamp(t, CPH)
    iso = local.isocalendar()
    day = (local.date() - datetime.date(1970, 1, 1)).days
    offset = int(local.utcoffset().total_seconds())
    return [offset, day, iso[0] * 100 + iso[1], local.year * 100 + local.month,
            local.strftime("%Y-%m-%d %H:%M:%S")]


def test_both_dst_switches_are_inside_the_sweep():
    offsets = {reference(START + h * 3600)[0] for h in range(0, HOURS, 24)}
    assert offsets == {3600, 7200}


def test_cpython_matches_zoneinfo_every_hour():
    from localtime_probe import hours

    for h0 in range(0, HOURS, WEEK):
        t0 = START + h0 * 3600
        n = min(WEEK, HOURS - h0)
        got = hours(t0, n)
        want = [reference(t0 + i * 3600) for i in range(n)]
        assert got == want, "week starting %d" % t0


@pytest.mark.parametrize("year", range(2020, 2033))
def test_micropython_matches_zoneinfo_every_hour(mp_worker, year):
    t = int(datetime.datetime(year, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
    end = int(datetime.datetime(year + 1, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
    while t < end:
        n = min(WEEK, (end - t) // 3600)
        got = mp_worker.call("localtime_probe", "hours", t, n)
        want = [reference(t + i * 3600) for i in range(n)]
        assert got == want, "week starting %d" % t
        t += n * 3600


def test_minutes_around_switches_match(mp_worker):
    for year in (2024, 2025, 2026, 2031):
        for month in (3, 10):
            last = max(d for d in range(25, 32)
                       if datetime.date(year, month, d).weekday() == 6)
            switch = int(datetime.datetime(year, month, last, 1, tzinfo=datetime.timezone.utc).timestamp())
            for t in range(switch - 7200, switch + 7200, 60):
                want = reference(t)
                assert lt.utc_offset(t) == want[0], t
                assert lt.format_local(t) == want[4], t
            got = mp_worker.call("localtime_probe", "offsets", switch - 7200, 240, 60)
            assert got == [reference(switch - 7200 + i * 60)[0] for i in range(240)]
