"""Device-side probe for the zoneinfo sweep: cpos.localtime's view of a run of instants."""
from cpos import localtime as lt


def hours(t0, n):
    out = []
    for i in range(n):
        t = t0 + i * 3600
        day = lt.local_day(t)
        out.append([lt.utc_offset(t), day, lt.iso_week_key(day), lt.month_key(day), lt.format_local(t)])
    return out


def offsets(t0, n, step):
    return [lt.utc_offset(t0 + i * step) for i in range(n)]
