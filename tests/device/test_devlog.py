"""The on-flash log (cpos.devlog): which lines it keeps, its stamps, its size bound."""
import os

from cpos import devlog

_PATH = (os.getenv("CPOS_TMP") or "/tmp") + "/cpos_test_devlog.txt"


def _fresh():
    for p in (_PATH, _PATH + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass


def test_keeps_boots_warnings_errors_and_health_only():
    _fresh()
    seen = []
    clock = [1000]
    sink = devlog.FileSink(seen.append, _PATH, lambda: clock[0])
    for line in ("I POS: connected", "W journal full: purchase refused", "I health {'pending': 3}",
                 "E app failed: boom", "D noise"):
        clock[0] += 5
        sink(line)
    assert len(seen) == 5  # every line still reaches the board's console
    assert devlog.read(_PATH) == [(1000, "I boot"), (1010, "W journal full: purchase refused"),
                                  (1015, "I health {'pending': 3}"), (1020, "E app failed: boom")]


def test_file_stays_under_its_limit_keeping_the_newest_lines():
    _fresh()
    sink = devlog.FileSink(lambda line: None, _PATH, lambda: 7, limit=600)
    for i in range(200):
        sink("W warning number %d" % i)
    assert os.stat(_PATH)[6] <= 600
    lines = devlog.read(_PATH)
    assert lines[-1] == (7, "W warning number 199")
    numbers = [int(l.split()[-1]) for _, l in lines]
    assert numbers == list(range(numbers[0], 200))  # a contiguous newest run, nothing torn


def test_unwritable_log_never_stops_the_terminal():
    seen = []
    sink = devlog.FileSink(seen.append, (os.getenv("CPOS_TMP") or "/tmp") + "/no/such/dir/log", lambda: 1)
    sink("E still reported")
    assert seen == ["E still reported"]
    assert devlog.read("/no/such/file") == []
