"""The on-flash log (cpos.devlog): which lines it keeps, its stamps, its size bound, and the
rate limit that keeps a flood of forged messages from wearing the flash."""
import os

from cardtable_model import FLASH
from cpos import devlog, log
from cpos.cards import delta as carddelta
from cpos.cards.table import CardTable
from cpos.net import signing
from cpos.net.sync import Sync
from downlink_fakes import KEY, SITE, TOPIC, UID, FakeClient

_PATH = (os.getenv("CPOS_TMP") or "/tmp") + "/cpos_test_devlog.txt"


def _fresh():
    for p in (_PATH, _PATH + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass


def test_keeps_boots_warnings_security_events_errors_and_health_only():
    _fresh()
    seen = []
    clock = [1000]
    sink = devlog.FileSink(seen.append, _PATH, lambda: clock[0])
    for line in ("I POS: connected", "W journal full: purchase refused", "I health {'pending': 3}",
                 "S sync: refused message: bad tag", "E app failed: boom", "D noise"):
        clock[0] += 5
        sink(line)
    assert len(seen) == 6  # every line still reaches the board's console
    assert devlog.read(_PATH) == [(1000, "I boot"), (1010, "W journal full: purchase refused"),
                                  (1015, "I health {'pending': 3}"), (1020, "S sync: refused message: bad tag"),
                                  (1025, "E app failed: boom")]


def test_file_stays_under_its_limit_keeping_the_newest_lines():
    _fresh()
    sink = devlog.FileSink(lambda line: None, _PATH, lambda: 7, limit=600, burst=200)  # no rate limit here
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


def _sync_logging_to(lg):
    FLASH.wipe(1)
    c = FakeClient()
    s = Sync(CardTable(FLASH), c, SITE, "t0001", KEY, log=lg)
    return s, c


def test_a_flood_of_forged_messages_keeps_only_the_buckets_worth_then_says_how_many_were_not_kept():
    _fresh()
    t0 = 1764072000
    clock = [t0]
    console = [0]

    def count(line):
        console[0] += 1

    lg = log.Log(devlog.FileSink(count, _PATH, lambda: clock[0]))  # defaults: burst 20, one more per 30 s
    s, c = _sync_logging_to(lg)
    forged = signing.encode(signing.Key(b"z" * 32), TOPIC, signing.DELTA, 1,
                            carddelta.encode(1, 0, carddelta.UNBLOCK, uid=UID))
    for i in range(10000):  # 100 forged messages a second for 100 s, each refused by the real engine
        if i % 100 == 0:
            clock[0] += 1
        c.handler(TOPIC, forged, False)
    assert s.rejected == 10000 and s.why == {"bad tag": 10000}
    assert console[0] == 10000  # the console still shows every one
    kept = devlog.read(_PATH)
    assert kept[0] == (t0, "I boot")
    refused = [line for _, line in kept if line.startswith("S ")]
    notes = [int(line.split()[2]) for _, line in kept if line.startswith("W log: ")]
    # The burst, then one line per 30 s refill; each refill line follows a count of those dropped.
    assert len(refused) == 20 + 100 // 30, len(refused)
    assert refused == ["S sync: refused message: bad tag"] * len(refused), refused[:3]
    assert len(notes) == 100 // 30 and len(kept) == 1 + len(refused) + len(notes), kept
    assert os.stat(_PATH)[6] < 2000, os.stat(_PATH)[6]
    # Once the bucket has a token again, warnings and errors are kept as before, after one
    # line that says how many were not kept since the last.
    clock[0] += 30
    lg.warn("journal full: purchase refused")
    clock[0] += 30
    lg.error("reader: no answer")
    tail = devlog.read(_PATH)[-3:]
    assert tail[1:] == [(t0 + 130, "W journal full: purchase refused"), (t0 + 160, "E reader: no answer")], tail
    assert tail[0][0] == t0 + 130 and tail[0][1].startswith("W log: "), tail
    last = int(tail[0][1].split()[2])
    assert tail[0][1] == "W log: %d lines not kept (rate limit)" % last
    assert sum(notes) + last == 10000 - len(refused), (notes, last)


def test_the_count_of_lines_not_kept_rides_on_the_next_health_line_even_with_the_bucket_empty():
    _fresh()
    clock = [500]
    seen = []
    sink = devlog.FileSink(seen.append, _PATH, lambda: clock[0], burst=2, every=30)
    for i in range(5):
        sink("S forged %d" % i)
    clock[0] = 400  # the clock set back (NTP): no refill, no crash
    sink("E still metered")
    sink("I health {'pending': 0}")
    sink("I health {'pending': 0}")
    assert len(seen) == 8
    assert devlog.read(_PATH) == [(500, "I boot"), (500, "S forged 0"), (500, "S forged 1"),
                                  (400, "W log: 4 lines not kept (rate limit)"), (400, "I health {'pending': 0}"),
                                  (400, "I health {'pending': 0}")]
    clock[0] = 430
    sink("E kept again")
    assert devlog.read(_PATH)[-1] == (430, "E kept again")


def test_once_the_app_has_its_trusted_time_lines_are_stamped_with_it_and_marked_while_it_is_unknown():
    from cpos import timekeeper as tk

    _fresh()
    board = [946684800]  # an ESP32's clock after a power-on: 2000-01-01
    sink = devlog.FileSink(lambda line: None, _PATH, lambda: board[0])
    keeper = tk.TimeKeeper(lambda: board[0], log.Log(lambda line: None))
    keeper.raise_floor(1764068400, "journal")  # the newest journal record's time
    sink.use_clock(keeper)
    board[0] += 2
    sink("W reader: no answer")  # the time is unknown: stamped with the floor, marked
    assert keeper.offer(tk.BACKEND, 1764068500)
    board[0] += 3
    sink("E app failed: boom")
    assert devlog.read(_PATH, marks=True) == [(946684800, "I boot", True), (1764068402, "W reader: no answer", False),
                                              (1764068503, "E app failed: boom", True)]
    assert devlog.read(_PATH)[1] == (1764068402, "W reader: no answer")  # the plain form: (t, line)
