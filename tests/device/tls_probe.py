"""Connect cpos.net.mqtt over TLS with cpos.net.tls to a broker once, on either runtime.

    tls_probe.py HOST PORT SERVER_NAME CONFIG_JSON_FILE [MAX_PACKET]

CONFIG_JSON_FILE holds the config's `mqtt.tls` dict. Prints `RESULT {...}`: whether the
link came up, the error the client logged, the heap the TLS context and the connected
link hold (MicroPython: gc.mem_free before and after), and, when the broker sends one,
what the client did with an oversized message (refused_packets, link kept).
"""
import asyncio
import gc
import json
import sys

from cpos import log as logmod
from cpos.compat import sleep_ms
from cpos.net import tls
from cpos.net.mqtt import MQTTClient


async def main(host, port, name, path, max_packet):
    with open(path) as f:
        conf = json.load(f)
    lines = []
    gc.collect()
    free0 = gc.mem_free() if hasattr(gc, "mem_free") else 0
    ctx = tls.context(conf)
    gc.collect()
    free1 = gc.mem_free() if hasattr(gc, "mem_free") else 0
    got = []
    c = MQTTClient(conf.get("cn", "t0001"), host, port, None, None, keepalive=10, ssl=ctx, server_hostname=name,
                   backoff_min_ms=100, backoff_max_ms=200, log=logmod.Log(lines.append), max_packet=max_packet)
    c.subscribe("cpos/v1/skole-nord/t0001/down/#", 1, lambda t, p, r: got.append(len(p)))
    task = asyncio.create_task(c.run())
    up = await c.wait_connected(8000)
    gc.collect()
    free2 = gc.mem_free() if hasattr(gc, "mem_free") else 0
    if up:
        print("READY")
        if hasattr(sys.stdout, "flush"):
            sys.stdout.flush()
        for _ in range(60):  # the test may send messages now
            await sleep_ms(50)
            if c.refused_packets and got:
                break
    res = {"up": up, "still_up": c.connected, "generation": c.generation, "log": lines[-3:],
           "ctx_bytes": free0 - free1, "link_bytes": free1 - free2, "refused": c.refused_packets, "got": got}
    await c.stop()
    task.cancel()
    print("RESULT " + json.dumps(res))


a = sys.argv[1:]
asyncio.run(main(a[0], int(a[1]), a[2], a[3], int(a[4]) if len(a) > 4 else 4400))
