"""Copenhagen local time from UTC epoch seconds, without zoneinfo.

Owns the EU daylight-saving rule (CEST from 01:00 UTC on the last Sunday of March to
01:00 UTC on the last Sunday of October; CET otherwise), the proleptic Gregorian
calendar, and the window keys that spending limits reset on:

- day key:   days since 1970-01-01 of the local date            (e.g. 20417)
- week key:  ISO year * 100 + ISO week (weeks start on Monday)  (e.g. 202548)
- month key: year * 100 + month                                 (e.g. 202511)

Keys are small ints, cheap to compare and to store in a record. Input is integer
UTC seconds since 1970-01-01 (the ESP32 port's `time.time()` epoch since 1.22).
"""
from cpos.compat import const

CET = const(3600)
CEST = const(7200)
_DAY = const(86400)
_SWITCH_UTC = const(3600)  # both EU switches happen at 01:00 UTC

WINDOW_DAY = const(0)
WINDOW_WEEK = const(1)
WINDOW_MONTH = const(2)


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of the Gregorian date y-m-d (any year >= 1)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """(year, month, day) of the date `z` days after 1970-01-01."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return (yoe + era * 400 + (m <= 2), m, d)


def weekday(days):
    """ISO weekday index of a day number: Monday 0 ... Sunday 6 (1970-01-01 was a Thursday)."""
    return (days + 3) % 7


def _last_sunday(year, month, last_day):
    days = days_from_civil(year, month, last_day)
    return days - (weekday(days) + 1) % 7


def utc_offset(t):
    """Copenhagen's offset from UTC in seconds at UTC instant `t`: 3600 or 7200."""
    days = t // _DAY
    year = civil_from_days(days)[0]
    start = _last_sunday(year, 3, 31) * _DAY + _SWITCH_UTC
    if t < start:
        return CET
    end = _last_sunday(year, 10, 31) * _DAY + _SWITCH_UTC
    return CEST if t < end else CET


def local_seconds(t):
    """Seconds since 1970-01-01 00:00 on Copenhagen's wall clock at UTC instant `t`."""
    return t + utc_offset(t)


def local_day(t):
    """Day key: the local date at `t` as days since 1970-01-01."""
    return local_seconds(t) // _DAY


def iso_week_key(days):
    """ISO year * 100 + ISO week of the day number `days`."""
    thursday = days - weekday(days) + 3
    year = civil_from_days(thursday)[0]
    week = (thursday - days_from_civil(year, 1, 1)) // 7 + 1
    return year * 100 + week


def month_key(days):
    """Year * 100 + month of the day number `days`."""
    y, m, _ = civil_from_days(days)
    return y * 100 + m


def window_key(t, window):
    """Key of the day, week or month window (WINDOW_*) that UTC instant `t` falls in locally."""
    days = local_day(t)
    if window == WINDOW_DAY:
        return days
    if window == WINDOW_WEEK:
        return iso_week_key(days)
    return month_key(days)


def local_parts(t):
    """(year, month, day, hour, minute, second, weekday) on Copenhagen's wall clock."""
    s = local_seconds(t)
    days = s // _DAY
    rem = s - days * _DAY
    y, m, d = civil_from_days(days)
    return (y, m, d, rem // 3600, rem // 60 % 60, rem % 60, weekday(days))


def format_local(t):
    """`YYYY-MM-DD HH:MM:SS` in Copenhagen time, as on the card statement."""
    return "%04d-%02d-%02d %02d:%02d:%02d" % local_parts(t)[:6]
