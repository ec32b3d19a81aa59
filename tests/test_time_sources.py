"""The time sources against the simulated world: cpos.sntp on both runtimes against the
simulator's SNTP server (honest, lying, silent), a terminal with a battery RTC across
power cuts with no network (and after its coin cell is out), and what `cpos status`
prints of the sources' offsets and ages.
"""
import asyncio
import subprocess
import sys
import time

import pytest

from host_tools import cli
from runtimes import LIB, micropython_path
from simulator.sntp_server import SNTPServer

PROBE = """
import asyncio, sys
from cpos import sntp
addr = sntp.resolve("127.0.0.1", %d)
async def go():
    try:
        t, rtt = await sntp.query(addr, 400)
        print("TIME", t, rtt)
    except sntp.SNTPError as e:
        print("ERR", e)
asyncio.run(go())
"""


def probe(runtime, port):
    exe = micropython_path() if runtime == "micropython" else sys.executable
    env = {"MICROPYPATH": ".frozen:" + LIB, "PYTHONPATH": LIB, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([exe, "-c", PROBE % port], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_sntp_client_reads_the_server_and_tells_a_silent_one(runtime):
    world = [1764068400.25]
    srv = SNTPServer(lambda: world[0]).start()
    try:
        got = probe(runtime, srv.port)
        assert got[0] == "TIME" and int(got[1]) == 1764068400, got  # + half the round trip, rounded down
        srv.skew = 3600  # a lying server is still read; the timekeeper judges it
        assert int(probe(runtime, srv.port)[1]) == 1764072000
        srv.up = False
        assert probe(runtime, srv.port)[:2] == ["ERR", "no"], "a silent server is an error, not a time"
        assert srv.ignored >= 1
    finally:
        srv.stop()


def test_a_forged_answer_that_does_not_echo_the_request_is_ignored():
    srv = SNTPServer(lambda: 1764068400.0)
    req = bytearray(48)
    req[0] = 0x23
    req[40:48] = b"ABCDEFGH"
    ans = srv.answer(bytes(req))
    from cpos import sntp

    assert sntp.parse(ans, b"ABCDEFGH") == (1764068400, 0)
    with pytest.raises(sntp.SNTPError):
        sntp.parse(ans, b"12345678")  # a spoofer who did not see our request
    srv.stop()


def test_status_prints_each_sources_offset_and_age(capsys):
    h = {"reader_ok": True, "reader_errors": 0, "time_known": True, "time_source": "backend",
         "time_floor": 1764068400, "time_floor_from": "backend",
         "time_sources": {"backend": {"offset": 0, "age": 12, "accepted": 3, "refused": 0},
                          "sntp": {"offset": 86400, "age": 40, "accepted": 0, "refused": 2}}}
    cli._print_health(repr(h))
    out = capsys.readouterr().out
    assert "time      set by backend; floor 1764068400 (backend)" in out
    assert "backend offset +0 s, last answer 12 s before the report, 3 accepted, 0 refused" in out
    assert "sntp    offset +86400 s, last answer 40 s before the report, 0 accepted, 2 refused" in out
    h.update(time_known=False, time_source=None)
    cli._print_health(repr(h))
    assert "time      UNKNOWN: stamping with the floor" in capsys.readouterr().out


def test_a_battery_rtc_keeps_the_time_across_a_power_cut_without_network_until_its_cell_is_out(tmp_path):
    """The DS3231 on a coin cell gives the time after a power cut with no SNTP and no backend;
    once the cell was out (`rtc_lost`), the next power cut leaves the time unknown."""
    from simulator import scenario as scen
    from support.site_run import booted

    cards = [{"uid": "04000002", "number": "lim", "account": 2}]
    accounts = [{"account": 2, "balance": 100000, "limits": {"school": {"day": 3000}}}]

    def buy(at, amount):
        return [{"at": at, "terminal": "till1", "pay": amount, "item": "1x Test"},
                {"at": at + 0.1, "terminal": "till1", "tap": "lim", "hold": 0.2}]

    events = buy(0.5, 1000) + [
        {"at": 1.5, "broker": "down"}, {"at": 1.6, "ntp_down": True},
        {"at": 2.0, "terminal": "till1", "power_cut": True}, {"at": 2.5, "terminal": "till1", "boot": True},
    ] + buy(6.0, 1000) + [
        {"at": 7.0, "terminal": "till1", "rtc_lost": True},
        {"at": 7.5, "terminal": "till1", "power_cut": True}, {"at": 8.0, "terminal": "till1", "boot": True},
    ] + buy(11.5, 1000)
    sc = scen.Scenario({"name": "rtc", "start": 1764068400, "site": "skole-nord",
                        "terminals": [{"id": "till1", "rtc": True}], "accounts": accounts, "cards": cards,
                        "events": events})

    async def go():
        async with booted(sc, str(tmp_path)) as r:
            for _ in range(300):  # until a source has set the time
                if any("time: set by" in x for x in r.terminals["till1"].log_lines):
                    break
                await asyncio.sleep(0.1)
            await r.play()
            assert [t.reason for t in r.taps] == ["approved", "approved", "clock_not_set"], r.summary()[0]
            log = "\n".join(r.terminals["till1"].log_lines)
            boots = log.split("the board's clock did not survive this start")
            assert len(boots) == 4  # three starts, each after a power-on
            assert "time: set by rtc" in boots[2]  # no network: the coin cell kept the time
            assert "time: rtc unavailable: oscillator stopped" in boots[3]
            await r.settle(timeout=60)
            text, problems = r.summary()
            assert problems == [], text

    asyncio.run(go())


def test_time_events_in_a_scenario_are_strict():
    from simulator import scenario as scen

    def load(events, rtc=False):
        return scen.Scenario({"name": "t", "start": 1764068400, "uplink": False,
                              "terminals": [{"id": "till1", "rtc": rtc}], "events": events})

    sc = load([{"at": 1, "ntp_down": True}, {"at": 2, "clock_skew": -30}, {"at": 3, "advance": 86400},
               {"at": 4, "terminal": "till1", "rtc_lost": True}, {"at": 5, "terminal": "till1", "clock_skew": 5}],
              rtc=True)
    assert [(e["kind"], e.get("state", e.get("seconds"))) for e in sc.events] == [
        ("ntp_down", True), ("clock_skew", -30), ("advance", 86400), ("rtc_lost", None), ("clock_skew", 5)]
    for bad, why in (([{"at": 1, "advance": -5}], "'advance' must be a positive number"),
                     ([{"at": 1, "clock_skew": 1.5}], "'clock_skew' must be whole seconds"),
                     ([{"at": 1, "ntp_down": False}], "'ntp_down' must be true"),
                     ([{"at": 1, "ntp_down": True, "advance": 3}], "a time event is"),
                     ([{"at": 1, "terminal": "till1", "rtc_lost": True}], "it has no battery RTC"),
                     ([{"at": 1, "terminal": "till1", "clock_skew": 3}], "it has none")):
        with pytest.raises(scen.ScenarioError, match=why):
            load(bad)
