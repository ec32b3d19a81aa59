"""MQTT client scenarios against a live mosquitto, run by tests/test_mqtt_client.py on both runtimes.

Usage: mqtt_scenarios.py SCENARIO HOST PORT SITE TERMINAL_PW BACKEND_PW
Prints progress lines and a last line `RESULT <json>`. Nothing here is mocked: both
clients are cpos.net.mqtt over real sockets to the broker the test started.
"""
import asyncio
import json
import sys

from cpos import log
from cpos.compat import ticks_ms, ticks_diff
from cpos.net.mqtt import MQTTClient, sleep_ms as nap
from loop_gap import LoopGap


def say(*a):
    print(*a)
    try:
        sys.stdout.flush()
    except AttributeError:
        pass


async def roundtrip(host, port, site, tpw, bpw):
    got_backend = []
    got_terminal = []
    up = "cpos/v1/%s/t0001/up/" % site
    down = "cpos/v1/%s/t0001/down/ack" % site
    will = ("cpos/v1/%s/t0001/up/status" % site, b'{"v":1,"online":false}', 1, True)
    be = MQTTClient("backend-probe", host, port, "backend", bpw, keepalive=10)
    be.subscribe("cpos/v1/+/+/up/#", 1, lambda t, p, r: got_backend.append([t, p.decode(), r]))
    te = MQTTClient("t0001", host, port, "t0001", tpw, keepalive=10, will=will)
    te.subscribe(down, 1, lambda t, p, r: got_terminal.append([t, p.decode(), r]))
    tasks = [asyncio.create_task(be.run()), asyncio.create_task(te.run())]
    assert await be.wait_connected(5000)
    assert await te.wait_connected(5000)
    await nap(200)
    res = {}
    res["own"] = await te.publish(up + "batch", b"own-1", qos=1)
    res["qos0"] = await te.publish(up + "health", b"h0", qos=0)
    # Into another terminal's topic: mosquitto acks QoS 1 (3.1.1 has no negative PUBACK) but drops it.
    res["foreign"] = await te.publish("cpos/v1/%s/t0002/up/batch" % site, b"forged", qos=1)
    # Onto its own downlink (it may only read there): dropped too.
    await te.publish(down, b"self-ack", qos=1)
    big = b"0123456789abcdef" * 640
    res["big"] = await te.publish(up + "batch", big, qos=1)
    res["ack"] = await be.publish(down, b'{"v":1,"w":7}', qos=1, retain=True)
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < 3000 and (len(got_backend) < 3 or not got_terminal):
        await nap(20)
    await nap(300)
    res["backend_got"] = [[g[0], g[1] if len(g[1]) < 100 else len(g[1]), g[2]] for g in got_backend]
    res["terminal_got"] = got_terminal
    # A second terminal connection sees the retained ack at once on subscribe.
    seen = []
    te2 = MQTTClient("t0001-b", host, port, "t0001", tpw, keepalive=10)
    te2.subscribe(down, 1, lambda t, p, r: seen.append([p.decode(), r]))
    tasks.append(asyncio.create_task(te2.run()))
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < 3000 and not seen:
        await nap(20)
    res["retained"] = seen
    # The will: drop the first terminal's socket without DISCONNECT; the broker publishes it.
    te.abort()
    tasks[1].cancel()
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < 5000 and not any(g[0].endswith("/status") for g in got_backend):
        await nap(20)
    res["will"] = [g for g in got_backend if g[0].endswith("/status")]
    await te2.stop()
    await be.stop()
    for t in tasks:
        t.cancel()
    return res


async def bad_password(host, port, site, tpw, bpw):
    lines = []
    c = MQTTClient("t0001", host, port, "t0001", "wrong", keepalive=10, backoff_min_ms=50, backoff_max_ms=100,
                   log=log.Log(lines.append))
    task = asyncio.create_task(c.run())
    ok = await c.wait_connected(1500)
    for _ in range(100):  # a loaded machine may take longer than that for the refusal
        if ok or c.last_error is not None:
            break
        await asyncio.sleep(0.1)
    err = str(c.last_error)
    await c.stop()
    task.cancel()
    return {"connected": ok, "error": err, "log": lines[:3]}


async def outage(host, port, site, tpw, bpw):
    """Publish every 100 ms through a broker restart the test performs; a 'tap' task naps
    10 ms again and again (tests/device/loop_gap.py): the loop's longest hold by this
    process, and the naps taken while the client was disconnected, show that reconnecting
    never blocked the loop."""
    c = MQTTClient("t0001", host, port, "t0001", tpw, keepalive=2, backoff_min_ms=100, backoff_max_ms=800)
    task = asyncio.create_task(c.run())
    gap = LoopGap(10)
    down = [0]

    def count():
        if not c.connected:
            down[0] += 1

    tap_task = asyncio.create_task(gap.run(count))
    assert await c.wait_connected(5000)
    say("READY")
    ok_before = failed = ok_after = 0
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < 30000:
        ok = await c.publish("cpos/v1/%s/t0001/up/health" % site, b"x", qos=1, timeout_ms=1000)
        if ok and c.generation == 1:
            ok_before += 1
        elif ok:
            ok_after += 1
            if ok_after >= 5:
                break
        else:
            failed += 1
        await nap(100)
    gap.stop = True
    await c.stop()
    task.cancel()
    await nap(20)
    tap_task.cancel()
    return {"before": ok_before, "failed": failed, "after": ok_after, "generation": c.generation,
            "loop_held_ms": gap.worst_ms, "corrected": gap.corrected, "ticks": gap.ticks,
            "ticks_while_down": down[0]}


def main(argv):
    name = argv[1]
    host, port, site, tpw, bpw = argv[2], int(argv[3]), argv[4], argv[5], argv[6]
    fn = {"roundtrip": roundtrip, "bad_password": bad_password, "outage": outage}[name]
    res = asyncio.run(fn(host, port, site, tpw, bpw))
    say("RESULT " + json.dumps(res))


main(sys.argv)
