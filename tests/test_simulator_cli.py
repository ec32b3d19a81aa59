"""`python -m simulator run FILE --json`: the command itself, as a user runs it.

One till of the real firmware (a `micropython` process on the virtual board) plays a
small scenario file with a purchase, a refusal, a balance tap, a card removal and a
power cut followed by a boot, and a reboot. stdout must be one JSON line per tap with terminal,
card, amount, decision, reason and tap-to-decision time; the summary goes to stderr;
the exit status says whether the invariants held. A bad scenario exits 2 with one line.
"""
import json
import subprocess
import sys

from runtimes import ROOT, cpython_env

SCENARIO = {
    "name": "cli", "start": 1764068400, "uplink": False,
    "terminals": [{"id": "till1", "place": "school", "kind": "till"}],
    "accounts": [{"account": 1, "balance": 10000}, {"account": 2, "balance": 10000}],
    "cards": [{"uid": "04A1B2C3", "number": "884263sae", "account": 1, "status": "active"},
              {"uid": "04A1B2C4", "number": "728F9661", "account": 2, "status": "blocked"}],
    "events": [
        {"at": 0.5, "terminal": "till1", "pay": 4500, "item": "1x Sandwich"},
        {"at": 0.6, "terminal": "till1", "tap": "884263sae", "hold": 0.3},
        {"at": 1.5, "terminal": "till1", "pay": 2500, "item": "1x Pasta"},
        {"at": 1.6, "terminal": "till1", "tap": "728F9661", "hold": 0.3},
        {"at": 2.5, "terminal": "till1", "tap": "884263sae", "hold": 0.3},
        {"at": 3.2, "terminal": "till1", "remove": True},
        {"at": 3.5, "terminal": "till1", "power_cut": True},
        {"at": 4.0, "terminal": "till1", "boot": True},
        {"at": 4.5, "terminal": "till1", "pay": 1000, "item": "1x Frugt"},
        {"at": 4.6, "terminal": "till1", "tap": "884263sae", "hold": 0.3},
        {"at": 5.5, "terminal": "till1", "reboot": True},
        {"at": 6.0, "terminal": "till1", "pay": 500, "item": "1x Te"},
        {"at": 6.1, "terminal": "till1", "tap": "884263sae", "hold": 0.3},
    ],
}


def simulator(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "simulator"] + list(args), cwd=ROOT, env=cpython_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_run_json_prints_one_line_per_tap_and_the_summary(tmp_path):
    path = tmp_path / "cli.json"
    path.write_text(json.dumps(SCENARIO))
    p = simulator("run", str(path), "--json")
    assert p.returncode == 0, p.stderr
    taps = [json.loads(line) for line in p.stdout.splitlines()]
    for t in taps:
        assert {"terminal", "card", "amount", "decision", "reason", "tap_to_decision_ms"} <= set(t), t
    got = [(t["terminal"], t["card"], t["amount"], t["decision"], t["reason"]) for t in taps]
    assert got == [("till1", "884263sae", 4500, "approved", "approved"),
                   ("till1", "728F9661", 2500, "refused", "blocked"),
                   ("till1", "884263sae", 0, "balance", "approved"),
                   ("till1", "884263sae", 1000, "approved", "approved"),
                   ("till1", "884263sae", 500, "approved", "approved")], p.stdout
    assert taps[0]["balance_after"] == 5500 and taps[2]["balance_after"] == 5500
    assert taps[3]["seq"] == 2 and taps[3]["balance_after"] == 4500  # after the power cut, counted once
    assert taps[4]["seq"] == 3 and taps[4]["balance_after"] == 4000  # after the reboot too
    assert all(0 < t["tap_to_decision_ms"] < 2000 for t in taps if t["decision"] != "balance")
    assert "invariants: all hold" in p.stderr and "power cuts 2" in p.stderr and "boots 3" in p.stderr, p.stderr


def test_a_bad_scenario_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.json"
    bad = dict(SCENARIO, terminals=[{"id": "till1", "place": "canteen", "kind": "till"}])
    path.write_text(json.dumps(bad))
    p = simulator("run", str(path), "--json")
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scenario:"), p.stderr
