"""Copenhagen time and window keys (cpos.localtime) at known instants, on both runtimes.

The sweep against CPython's zoneinfo over every hour of many years is in
tests/test_localtime_zoneinfo.py; these are the hand-checked anchors.
"""
from cpos import localtime as lt

# 2025-03-30 01:00:00 UTC: clocks go 02:00 CET -> 03:00 CEST.
SPRING_2025 = 1743296400
# 2025-10-26 01:00:00 UTC: clocks go 03:00 CEST -> 02:00 CET.
AUTUMN_2025 = 1761440400


def test_civil_round_trip():
    assert lt.days_from_civil(1970, 1, 1) == 0
    assert lt.civil_from_days(0) == (1970, 1, 1)
    assert lt.days_from_civil(2000, 3, 1) == 11017
    assert lt.civil_from_days(lt.days_from_civil(2024, 2, 29)) == (2024, 2, 29)
    for z in range(-1000, 40000, 37):
        y, m, d = lt.civil_from_days(z)
        assert lt.days_from_civil(y, m, d) == z


def test_weekday():
    assert lt.weekday(0) == 3  # Thursday
    assert lt.weekday(lt.days_from_civil(2026, 11, 25)) == 2  # Wednesday


def test_spring_switch():
    assert lt.utc_offset(SPRING_2025 - 1) == 3600
    assert lt.utc_offset(SPRING_2025) == 7200
    assert lt.format_local(SPRING_2025 - 1) == "2025-03-30 01:59:59"
    assert lt.format_local(SPRING_2025) == "2025-03-30 03:00:00"


def test_autumn_switch():
    assert lt.utc_offset(AUTUMN_2025 - 1) == 7200
    assert lt.utc_offset(AUTUMN_2025) == 3600
    assert lt.format_local(AUTUMN_2025 - 1) == "2025-10-26 02:59:59"
    assert lt.format_local(AUTUMN_2025) == "2025-10-26 02:00:00"


def test_local_midnight_is_day_boundary():
    # 2025-06-01 22:00 UTC is 2025-06-02 00:00 CEST.
    t = 1748815200
    assert lt.local_day(t - 1) + 1 == lt.local_day(t)
    assert lt.civil_from_days(lt.local_day(t)) == (2025, 6, 2)
    # In winter local midnight is 23:00 UTC: 2025-12-31 23:00 UTC is 2026-01-01.
    t = 1767222000
    assert lt.civil_from_days(lt.local_day(t)) == (2026, 1, 1)
    assert lt.window_key(t, lt.WINDOW_MONTH) == 202601
    assert lt.window_key(t - 1, lt.WINDOW_MONTH) == 202512


def test_iso_weeks():
    # 2026-01-01 is a Thursday: ISO week 2026-W01. 2027-01-01 is a Friday: 2026-W53.
    assert lt.iso_week_key(lt.days_from_civil(2026, 1, 1)) == 202601
    assert lt.iso_week_key(lt.days_from_civil(2025, 12, 29)) == 202601
    assert lt.iso_week_key(lt.days_from_civil(2025, 12, 28)) == 202552
    assert lt.iso_week_key(lt.days_from_civil(2027, 1, 1)) == 202653
    assert lt.iso_week_key(lt.days_from_civil(2027, 1, 4)) == 202701


def test_week_starts_monday_local():
    # Sunday 2026-11-29 23:30 CET = 22:30 UTC; Monday 00:00 CET = 23:00 UTC.
    monday_utc = lt.days_from_civil(2026, 11, 29) * 86400 + 23 * 3600
    assert lt.window_key(monday_utc - 1, lt.WINDOW_WEEK) == 202648
    assert lt.window_key(monday_utc, lt.WINDOW_WEEK) == 202649
