"""cpos.net.mqtt against a real mosquitto (simulator/broker.py), on MicroPython and CPython.

The scenarios live in tests/device/mqtt_scenarios.py and run as a subprocess of either
runtime (the MicroPython one under the WROOM heap cap); this file starts the broker,
drives outages and checks what the scenario saw.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from runtimes import ROOT, cpython_env, micropython_cmd, micropython_env

RUNTIMES = ("micropython", "cpython")
SCRIPT = os.path.join(ROOT, "tests", "device", "mqtt_scenarios.py")


def start(runtime, scenario, broker):
    args = [scenario, broker.host, str(broker.port), broker.site, broker.users["t0001"], broker.users["backend"]]
    if runtime == "micropython":
        cmd, env = micropython_cmd(SCRIPT, *args), micropython_env()
    else:
        cmd, env = [sys.executable, SCRIPT] + args, cpython_env()
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    last = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert last, out + err
    return json.loads(last[-1][7:])


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_roundtrip_acl_retained_and_will(runtime, broker):
    r = result(start(runtime, "roundtrip", broker))
    assert r["own"] and r["qos0"] and r["big"] and r["ack"]
    got = [(t, p) for t, p, _ in r["backend_got"]]
    site = broker.site
    assert ("cpos/v1/%s/t0001/up/batch" % site, "own-1") in got
    assert ("cpos/v1/%s/t0001/up/health" % site, "h0") in got
    assert ("cpos/v1/%s/t0001/up/batch" % site, 10240) in got  # 10 KB payload intact in length
    # The broker refused the forged publish into t0002's topic, and the self-written ack.
    assert not any("forged" == p or "/t0002/" in t for t, p in got)
    assert all(p != "self-ack" for _, p, _ in r["terminal_got"])
    assert [p for _, p, _ in r["terminal_got"]] == ['{"v":1,"w":7}']
    assert r["retained"] == [['{"v":1,"w":7}', True]]
    # Dropping the link without DISCONNECT makes the broker publish the last will.
    assert [w[1] for w in r["will"]] == ['{"v":1,"online":false}']


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_wrong_password_is_refused(runtime, broker):
    r = result(start(runtime, "bad_password", broker))
    assert r["connected"] is False
    assert "not authorized" in r["error"] or "bad user name" in r["error"]
    # A credential the broker refuses is a security event, not a flaky link.
    assert r["log"] and r["log"][0] == "S mqtt: RefusedError: " + r["error"], r["log"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_reconnects_after_broker_restart_without_blocking(runtime, broker):
    proc = start(runtime, "outage", broker)
    line = proc.stdout.readline()
    assert line.strip() == "READY", line + proc.stderr.read()
    time.sleep(0.5)
    broker.stop()
    time.sleep(2.0)  # the scenario keeps publishing (and failing) meanwhile
    broker.start()
    r = result(proc)
    assert r["before"] >= 1
    assert r["failed"] >= 1, r  # publishes during the outage report failure, not hang
    assert r["after"] >= 5 and r["generation"] >= 2, r
    # The 10 ms 'tap' task kept running through the outage and the reconnects: it napped while
    # the client was down, and the process never held the loop for long (the time it waited
    # for a core on a busy machine taken out: tests/device/loop_gap.py).
    assert r["ticks_while_down"] >= 1, r
    assert r["corrected"] and r["loop_held_ms"] < 500, r
