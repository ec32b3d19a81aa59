"""Downlink: how fast a block made in the portal takes effect at every online terminal.

Real mosquitto on loopback (per-terminal users and ACL), the reference backend as its own
process (SQLite; it looks for new changes every 50 ms, its default), and three stand-in
sync terminals (cpos.net.sync + cpos.net.mqtt, tests/device/standin_sync.py) on the MicroPython
unix port under the WROOM heap cap. A trial blocks the card in the ledger (as the portal
does, from another process) and times, per terminal, until a lookup of that card on the
terminal says blocked (the stand-in reports its state every 5 ms); then re-activates it.
Then the same with one terminal offline: its first tap after the link returns.

`--catch-up` (also run last by a plain run): a terminal offline for a school day at
CPOS_CATCHUP_CARDS (10,000) cards, the kept messages gone: what the backend sends it, a
catch-up from the ledger's changes or a snapshot, in bytes and messages, for days of several
sizes (no broker: the backend's answer to the terminal's sync request is measured in-process).
"""
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import ROOT, percentile, table  # noqa: E402

sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "device"), os.path.join(ROOT, "lib"), ROOT]
from cpos import reasons  # noqa: E402
from cpos.rules import ACTIVE, BLOCKED  # noqa: E402
from backend import Ledger  # noqa: E402
from simulator.broker import Broker  # noqa: E402
from support.downlink_world import Link, Standin, seed, start_backend  # noqa: E402
from support.uplink_world import stop  # noqa: E402

TRIALS = int(os.environ.get("CPOS_DOWNLINK_TRIALS", "100"))
TERMINALS = (1, 2, 3)
POLL_MS = 50
RECONNECTS = 10


def _until_all(terms, status):
    for t in terms:
        t.wait(lambda s: s["status"] == status, timeout=10)
    return [t.at for t in terms]


def online(d, b):
    db = os.path.join(d, "ledger.db")
    led = Ledger(db)
    seed(led, b.site, TERMINALS)
    be = start_backend(b, db, poll_ms=POLL_MS)
    terms = [Standin("micropython", d, b, n) for n in TERMINALS]
    try:
        for t in terms:
            t.wait(lambda s: s["synced"], timeout=60)
        lat = dict((n, []) for n in TERMINALS)
        for _ in range(TRIALS):
            led.set_card_status("884263sae", "blocked")
            t0 = time.monotonic()
            for n, at in zip(TERMINALS, _until_all(terms, BLOCKED)):
                lat[n].append((at - t0) * 1000)
            led.set_card_status("884263sae", "active")
            _until_all(terms, ACTIVE)
            time.sleep(0.01)
        return lat
    finally:
        for t in terms:
            t.stop()
        stop(be)
        led.close()


def offline(d, b):
    db = os.path.join(d, "ledger.db")
    led = Ledger(db)
    seed(led, b.site, (1,))
    be = start_backend(b, db, poll_ms=POLL_MS)
    link = Link(b)
    t = Standin("micropython", d, b, 1, port=link.port)
    rows = []
    try:
        t.wait(lambda s: s["synced"], timeout=60)
        for i in range(RECONNECTS):
            link.cut()
            t.wait(lambda s: not s["connected"])
            status = "blocked" if i % 2 == 0 else "active"
            led.set_card_status("884263sae", status)
            time.sleep(0.2)  # the backend sends it into the void
            link.restore()
            t0 = time.monotonic()
            t.wait(lambda s: s["connected"], timeout=30)
            reason, waited = t.tap(100)
            want = reasons.name(reasons.BLOCKED if status == "blocked" else reasons.APPROVED)
            rows.append(((time.monotonic() - t0) * 1000, waited, reason == want))
            t.wait(lambda s: s["synced"], timeout=10)
        return rows
    finally:
        t.stop()
        link.close()
        stop(be)
        led.close()


def world(fn):
    d = tempfile.mkdtemp(prefix="bench-downlink-")
    try:
        b = Broker(os.path.join(d, "broker"), terminals=TERMINALS).start()
        try:
            return fn(d, b)
        finally:
            b.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    print("## Downlink: a block reaching online terminals\n")
    print("%d trials: the card is blocked in the ledger by another process, the backend (polling its "
          "changes every %d ms) sends each terminal a signed delta, %d terminals on the MicroPython unix "
          "port (heap cap) apply it. Time from the ledger commit until each terminal's lookup says "
          "blocked, as seen by this process (the terminal reports every 5 ms). The issue asks for "
          "under 1 s.\n" % (TRIALS, POLL_MS, len(TERMINALS)))
    lat = world(online)
    rows = []
    every = []
    for n in TERMINALS:
        v = lat[n]
        every += v
        rows.append(["t%04d" % n, len(v), "%.0f" % percentile(v, 50), "%.0f" % percentile(v, 90), "%.0f" % max(v)])
    rows.append(["all", len(every), "%.0f" % percentile(every, 50), "%.0f" % percentile(every, 90),
                 "%.0f" % max(every)])
    print(table(["terminal", "trials", "median ms", "p90 ms", "worst ms"], rows))
    print("\nEvery-terminal figure per trial (the block is in effect everywhere): median %.0f ms, worst %.0f ms.\n"
          % (percentile([max(lat[n][i] for n in TERMINALS) for i in range(TRIALS)], 50),
             max(max(lat[n]) for n in TERMINALS)))
    print("### An offline terminal at reconnect\n")
    print("%d times: the terminal's link is cut, the card is blocked (or re-activated), the link "
          "returns and the card is tapped as soon as the terminal is connected. The tap waits "
          "(`Sync.settled`, at most 500 ms after the connect) for the backend's answer to the "
          "terminal's sync request.\n" % RECONNECTS)
    rows = world(offline)
    ok = sum(1 for r in rows if r[2])
    print(table(["taps", "decided on the new state", "median ms restore to decision", "worst ms",
                 "median tap wait ms", "worst tap wait ms"],
                [[len(rows), ok, "%.0f" % percentile([r[0] for r in rows], 50), "%.0f" % max(r[0] for r in rows),
                  "%.0f" % percentile([r[1] for r in rows], 50), "%.0f" % max(r[1] for r in rows)]]))
    print("\nRestore-to-decision includes the client's reconnect backoff (50-500 ms in the stand-in).")


CATCHUP_CARDS = int(os.environ.get("CPOS_CATCHUP_CARDS", "10000"))  # 100,000 takes minutes here
CATCHUP_DAYS = (2, 10, 30, 60)  # % of the cards' pupils who bought something that day


def _school_ledger(path, cards):
    """A municipality: `cards` accounts with one card each (7-byte UIDs), every account allowed
    at school, a third with a day limit (their window totals go down too)."""
    led = Ledger(path, synchronous="OFF", clock=lambda: T_DAY)
    with led._tx():
        led.db.executemany("INSERT INTO accounts (id, name, balance) VALUES (?, ?, 50000)",
                           ((a, "A%d" % a) for a in range(1, cards + 1)))
        led.db.executemany("INSERT INTO cards (uid, number, account) VALUES (?, ?, ?)",
                           (("04%012x" % (a * 2654435761 % (1 << 48)), "c%d" % a, a) for a in range(1, cards + 1)))
        led.db.executemany("INSERT INTO places (account, place) VALUES (?, 0)", ((a,) for a in range(1, cards + 1)))
        led.db.executemany("INSERT INTO limits (account, place, window, amount) VALUES (?, 0, 0, 100000)",
                           ((a,) for a in range(3, cards + 1, 3)))
    led.add_terminal(1, "skole-nord", 0, 0)
    led.add_terminal(2, "skole-nord", 0, 0)
    return led


T_DAY = 1764072000


def _a_school_day(led, buyers, seed):
    """`buyers` accounts buy twice each at terminal 2 (batches of 40), one in ten also gets a
    top-up: the changes a terminal offline all day misses."""
    import random
    from cpos.net import messages
    rng = random.Random(seed)
    n = led.db.execute("SELECT count(*) FROM accounts").fetchone()[0]
    who = rng.sample(range(1, n + 1), buyers)
    recs = []
    seq = led.db.execute("SELECT coalesce(max(seq), 0) FROM uplink WHERE terminal = 2").fetchone()[0]
    for a in who + who:
        seq += 1
        uid = led.db.execute("SELECT uid FROM cards WHERE account = ?", (a,)).fetchone()[0]
        recs.append({"seq": seq, "t": T_DAY, "uid": uid, "account": a, "amount": 1500 + rng.randrange(2000),
                     "place": 0, "kind": 0, "terminal": 2, "item": "1x Toast", "balance_after": 0, "reason": 0,
                     "topup": False})
    for i in range(0, len(recs), 40):  # a batch message holds at most 100 records and 8 KB
        part = recs[i:i + 40]
        led.apply_batch("skole-nord", "t0002", messages.encode_batch(part[0]["seq"], part[-1]["seq"], part))
    for a in who[::10]:
        led.deposit(a, 20000)


def catch_up_figures():
    from backend.downlink import Downlink, provisioned
    from cpos.net import messages, signing
    d = tempfile.mkdtemp(prefix="bench-catchup-")
    rows = []
    try:
        t0 = time.monotonic()
        led = _school_ledger(os.path.join(d, "ledger.db"), CATCHUP_CARDS)
        dl = Downlink(led, {"skole-nord": b"\x42" * 32}, keep=5000)
        w = led.db.execute("SELECT watermark FROM terminals WHERE number = 1").fetchone()[0]
        t1 = time.monotonic()
        img = dl.image(1, 1, w)  # what a snapshot is (and the backend's estimate from now on)
        image_s = time.monotonic() - t1
        snap_bytes, snap_msgs = len(img), (len(img) + signing.MAX_BODY - 1) // signing.MAX_BODY
        img = None
        setup_s = time.monotonic() - t0
        for i, pct in enumerate(CATCHUP_DAYS):
            buyers = CATCHUP_CARDS * pct // 100
            provisioned(led, 1, version=1 + i * 1000000)  # the terminal left this morning, at this version
            dl.db.execute("DELETE FROM dl_sent WHERE terminal = 1")
            _a_school_day(led, buyers, seed=i)
            dl.pump()
            dl.db.execute("DELETE FROM dl_sent WHERE terminal = 1")  # a day is more than the kept messages
            have = 1 + i * 1000000
            c0, s0, est = dl.catchups, dl.snapshots, dl.snapshot_bytes()
            t1 = time.monotonic()
            out = dl.on_request("skole-nord", "t0001", messages.encode_sync(have, 1, False, 7))[:-1]
            made_s = time.monotonic() - t1
            nbytes = sum(len(p) for _, p in out)
            deltas = 0
            for _, p in out:
                body = p[16:len(p) - signing.TAG]
                if p[2] == signing.DELTA:
                    deltas += 1
                elif p[2] == signing.DELTAS:
                    j = 0
                    while j < len(body):
                        deltas += 1
                        j += 1 + body[j]
            what = "catch-up" if dl.catchups > c0 else "snapshot"
            rows.append(["%d (%d %%)" % (buyers, pct), what, len(out), deltas if what == "catch-up" else "-",
                         "%d" % nbytes, "%d" % est, "%.2f" % made_s])
            assert dl.snapshots - s0 == (what == "snapshot")
        led.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("## Downlink: a terminal offline for a school day\n")
    print("%d cards (one account each, a third with a day limit); the terminal's kept messages are gone, so "
          "the backend answers its sync request with a catch-up from the ledger's changes (a JUMP, then one "
          "delta per account changed: balance, and totals for a limited account) or a snapshot when that is "
          "smaller. Each pupil who bought something bought twice at another till; one in ten also got a "
          "top-up. Bytes are whole signed messages (48 B envelope each); the snapshot estimate is the last "
          "image's bytes per card times the cards (the first image, %d B, was built before the first day). "
          "Setup %.0f s (that image: %.1f s).\n" % (CATCHUP_CARDS, snap_bytes, setup_s, image_s))
    print(table(["pupils who bought", "sent", "messages", "deltas (JUMP incl.)", "bytes sent",
                 "snapshot bytes, the backend's estimate", "backend s to answer"], rows))
    print("\nOn the terminal a snapshot is one sector erase per 4 KB chunk (%d here: ~%.0f s of erases on an "
          "ESP32 at 45 ms typical, est.) and holds the loop a chunk at a time; a catch-up is one program per "
          "delta in its account's bucket (~0.7 ms each on an ESP32, est., plus its CPU) and a bucket refresh "
          "(one erase) per ~3 KB of deltas in one bucket. Backend seconds are this machine's (x86, SQLite)."
          % (snap_msgs, snap_msgs * 0.045))


if __name__ == "__main__":
    if "--catch-up" not in sys.argv:
        main()
    catch_up_figures()
