"""TLS on the site's broker link, with the real firmware on MicroPython (issue 14 point 1).

The simulator's site runs mosquitto with the site's configuration (backend/broker_conf.py):
a TLS listener whose certificate chains to a CA made for the site (host_tools/site_pki.py)
and which takes each terminal's client certificate as its login. The tills run the real
firmware on the MicroPython unix port under the WROOM heap cap; their config holds the
CA, their own certificate and key (DER, hex) and no password. What is shown:
- purchases reach the ledger over TLS exactly once, journals drain;
- the broker saw the terminals log in by certificate on the TLS port (its log);
- a terminal given a CA that did not sign the broker's certificate refuses the broker
  (nothing uploaded, the refusal in its log), and so does one dialling a name the
  certificate does not carry.
"""
import asyncio
import re

from simulator import scenario as scen
from support.site_run import booted

START = 1764068400


def fleet(n_terminals, taps_each, every=0.3):
    accounts = [{"account": a, "balance": 500000} for a in range(1, 6)]
    cards = [{"uid": "0410%04X" % a, "number": "card%d" % a, "account": a} for a in range(1, 6)]
    terminals = [{"id": "till%d" % i, "kind": "till"} for i in range(1, n_terminals + 1)]
    rush = [{"terminal": t["id"], "count": taps_each, "from": 1.0, "every": every, "hold": 0.06,
             "amounts": [500, 1250], "items": ["1x Frokost"], "seed": i} for i, t in enumerate(terminals)]
    return scen.Scenario({"name": "tls", "start": START, "site": "skole-nord", "terminals": terminals,
                          "accounts": accounts, "cards": cards, "events": [], "rush": rush})


def fast(spec):
    return {"removal_window_ms": 100, "mqtt": {"batch": 10, "ack_timeout_ms": 3000}}


def test_real_firmware_uploads_over_tls_with_its_client_certificate(tmp_path):
    sc = fleet(2, 12)

    async def go():
        async with booted(sc, str(tmp_path), fast, tls=True) as r:
            await r.play()
            await r.settle(timeout=90)
            text, problems = r.summary()
            assert problems == [] and r.drained is True, text
            approved = [t for t in r.taps if t.decision == "approved"]
            assert len(approved) == 24, text
            booked = sum(len(r.site.ledger.purchase_seqs(t.spec["no"])) for t in r.terminals.values())
            assert booked == len(approved), text
            for tid, term in r.terminals.items():
                cfg = term.config if hasattr(term, "config") else None
                recs = r.journal_records(tid)
                assert r.site.ledger.watermark(term.spec["no"]) == recs[-1]["seq"]
            log = open(r.site.broker.log).read()
            port = r.site.broker.tls_port
            for tid in ("t0001", "t0002"):
                # logged in by certificate (u'<common name>') on the TLS port, client id = login
                assert re.search(r"New connection from 127\.0\.0\.1:\d+ on port %d\." % port, log)
                assert "as %s (p2, c1, k5, u'%s')" % (tid, tid) in log, log[-3000:]

    asyncio.run(go())


# --- the client's own checks, on both runtimes -----------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from runtimes import DEVICE_TESTS, ROOT, build_mpy, cpython_env, micropython_cmd, micropython_env  # noqa: E402

PROBE = os.path.join(DEVICE_TESTS, "tls_probe.py")
RUNTIMES = ("micropython", "cpython")


def probe(runtime, broker, tls, tmp_path, name="localhost", port=None, during=None):
    path = tmp_path / "tls.json"
    path.write_text(json.dumps(tls))
    args = [broker.host, str(port or broker.tls_port), name, str(path)]
    if runtime == "micropython":
        build_mpy()  # the device modules as a device gets them, compiled from this tree
        cmd, env = micropython_cmd(PROBE, *args), micropython_env()
    else:
        cmd, env = [sys.executable, PROBE] + args, cpython_env()
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if during is not None:
        line = p.stdout.readline()
        if line.strip() == "READY":
            during()
    out, err = p.communicate(timeout=60)
    res = [l for l in out.splitlines() if l.startswith("RESULT ")]
    assert p.returncode == 0 and res, out + err
    return json.loads(res[-1][7:])


@pytest.fixture
def tls_broker(tmp_path):
    from simulator.broker import Broker

    b = Broker(str(tmp_path / "broker"), tls=True).start()
    yield b
    b.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_terminal_verifies_the_broker_and_logs_in_by_certificate(runtime, tls_broker, tmp_path):
    from host_tools import site_pki

    good = tls_broker.terminal_tls("t0001")
    r = probe(runtime, tls_broker, good, tmp_path)
    assert r["up"] is True, r
    assert "as t0001 (p2, c1, k10, u't0001')" in open(tls_broker.log).read()
    # A broker whose certificate another CA signed (a rogue access point's broker): refused.
    other = tmp_path / "other"
    other.mkdir()
    site_pki.make_ca(str(other), "elsewhere")
    r = probe(runtime, tls_broker, dict(good, ca=site_pki.der(site_pki.ca_pem(str(other))).hex()), tmp_path)
    assert r["up"] is False and r["generation"] == 0, r
    assert r["log"] and all(l.startswith("I mqtt: ") for l in r["log"]), r
    # The right CA, but a name the broker's certificate does not carry.
    r = probe(runtime, tls_broker, good, tmp_path, name="evil.example")
    assert r["up"] is False, r
    # No client certificate: the broker refuses the handshake (require_certificate).
    r = probe(runtime, tls_broker, {"ca": good["ca"]}, tmp_path)
    assert r["up"] is False, r


def test_tls_heap_cost_on_the_unix_port(tls_broker, tmp_path):
    """The figures docs/heap.md quotes: heap held by the TLS context and by a connected TLS link."""
    r = probe("micropython", tls_broker, tls_broker.terminal_tls("t0001"), tmp_path)
    assert r["up"] is True
    print("TLS heap: context %d B, connected link %d B" % (r["ctx_bytes"], r["link_bytes"]))
    assert 0 < r["ctx_bytes"] < 16384 and r["link_bytes"] < 65536, r
