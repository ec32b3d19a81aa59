"""Backend under one terminal's flood: the other terminals' batch-acknowledgement latency.

Real mosquitto on loopback, the reference backend as its own process with a site key (the
downlink on). Terminal t0002 sends one-record batches one after another and times each
acknowledgement; meanwhile t0001, with its own valid credentials, floods its own topics with
sync requests asking for a snapshot and with health reports. Compared: no flood; the flood with
the backend's per-terminal budgets (backend.trust.RateLimit, the default); the flood with no
budget (the naive backend, `--no-rate-limits`). Target: p99 with the flood within 2x of p99
without. Backend-only (CPython on the server), so no ESP32 estimate applies.
"""
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import ROOT, table  # noqa: E402

sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "device"), os.path.join(ROOT, "lib"), ROOT]
from cpos.net import messages  # noqa: E402
from cpos.net.mqtt import MQTTClient  # noqa: E402
from fake_journal import make_record  # noqa: E402
from backend import Ledger  # noqa: E402
from simulator.broker import Broker  # noqa: E402
from support import downlink_world  # noqa: E402
from support.seeded import seed  # noqa: E402
from support.uplink_world import stop  # noqa: E402

BATCHES = 200
CARDS = 2000  # a snapshot costs the backend real work


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def _flooder(broker, stop_flag, counts):
    async def go():
        c = MQTTClient("t0001", broker.host, broker.port, "t0001", broker.users["t0001"], keepalive=10)
        task = asyncio.create_task(c.run())
        await c.wait_connected(5000)
        up = messages.topic(broker.site, "t0001", messages.SYNC_UP)
        health = messages.topic(broker.site, "t0001", messages.HEALTH)
        report = b'{"v":1,"t":1764000000,"table_version":1}'
        n = 0
        while not stop_flag.is_set():
            n += 1
            await c.publish(up, messages.encode_sync(0, 0, True, n), qos=0)
            await c.publish(health, report, qos=0)
            counts[0] += 2
            if n % 20 == 0:
                await asyncio.sleep(0.001)
        await c.stop()
        task.cancel()

    asyncio.run(go())


def run(flood, limits=True, one=False):
    d = tempfile.mkdtemp(prefix="bench-flood-")
    try:
        b = Broker(os.path.join(d, "broker")).start()
        db = os.path.join(d, "ledger.db")
        led = seed(Ledger(db))
        downlink_world.seed(led, b.site, terminals=(1, 2))
        for i in range(CARDS):
            led.add_card("%08x" % (0x10000000 + i), "bulk%d" % i, 1000 + i % 5)
        led.close()
        cmd_extra = ([] if limits else ["--no-rate-limits"]) + (["--one-connection"] if one else [])
        be = _start(b, db, cmd_extra)
        stop_flag, counts = threading.Event(), [0]
        th = None
        try:
            if flood:
                th = threading.Thread(target=_flooder, args=(b, stop_flag, counts), daemon=True)
                th.start()
                time.sleep(1.0)
            lat = asyncio.run(_batches(b))
        finally:  # a timeout must not leave the backend and broker running
            stop_flag.set()
            if th:
                th.join(30)
            stop(be)
            b.stop()
        return lat, counts[0]
    finally:
        if os.environ.get("KEEP"):
            print("kept", d)
        else:
            shutil.rmtree(d, ignore_errors=True)


def _start(broker, db, extra):
    import subprocess

    from runtimes import cpython_env

    cmd = [sys.executable, "-m", "backend", "--db", db, "--port", str(broker.port),
           "--password-file", broker.secret_file("backend.password", broker.users["backend"]),
           "--site-key-file", "%s=%s" % (broker.site, broker.secret_file("site_key", downlink_world.KEY.hex())),
           "--max-record-age-days", "36500"] + extra
    p = subprocess.Popen(cmd, cwd=ROOT, env=cpython_env(), stdout=subprocess.PIPE, stderr=open(os.path.join(os.path.dirname(db), "be.log"), "w"),
                         text=True)
    assert p.stdout.readline().strip() == "backend up"
    return p


async def _batches(broker):
    acks = asyncio.Queue()
    c = MQTTClient("t0002", broker.host, broker.port, "t0002", broker.users["t0002"], keepalive=10)
    from cpos.net import signing

    key = signing.Key(signing.derive(downlink_world.KEY, signing.DOWN, "t0002", 0))  # t0002's own keys
    up = signing.Key(signing.derive(downlink_world.KEY, signing.UP, "t0002", 0))
    t_ack = messages.topic(broker.site, "t0002", messages.ACK)
    c.subscribe(t_ack, 1, lambda t, p, r: acks.put_nowait(
        messages.decode_ack(signing.open_json(key, t_ack.encode(), p))))
    task = asyncio.create_task(c.run())
    await c.wait_connected(5000)
    await asyncio.sleep(0.3)
    topic = messages.topic(broker.site, "t0002", messages.BATCH)
    lat = []
    for seq in range(1, BATCHES + 1):
        rec = dict(make_record(seq, terminal=2), kind=0)
        t0 = time.perf_counter()
        await c.publish(topic, signing.seal_json(up, topic.encode(), messages.encode_batch(seq, seq, [rec])), qos=1)
        while True:
            w = await asyncio.wait_for(acks.get(), 30)
            if w >= seq:
                break
        lat.append((time.perf_counter() - t0) * 1000)
    await c.stop()
    task.cancel()
    return lat


def main():
    rows = []
    base = None
    for name, flood, limits, one in (("no flood", False, True, False),
                                     ("flood, per-terminal budgets, second connection (shipped)", True, True, False),
                                     ("flood, no budgets, second connection", True, False, False),
                                     ("flood, no budgets, one connection (naive: the old backend)", True, False, True)):
        try:
            lat, sent = run(flood, limits, one)
        except (asyncio.TimeoutError, TimeoutError):
            rows.append((name, "-", "-", "no ack within 30 s", "-"))
            continue
        p50, p99 = _pct(lat, 50), _pct(lat, 99)
        base = base or p99
        rows.append((name, sent, "%.1f" % p50, "%.1f" % p99, "%.1fx" % (p99 / base)))
    print("## Backend under one terminal's flood\n")
    print("%d one-record batches from t0002, each waiting for its ack; t0001 floods sync requests (asking for a "
          "snapshot of %d cards) and health reports on its own topics with its own credentials. "
          "Target: p99 with the flood within 2x of p99 without.\n" % (BATCHES, CARDS + 2))
    print(table(("case", "flood messages sent", "ack p50 ms", "ack p99 ms", "p99 vs no flood"), rows))


if __name__ == "__main__":
    main()
