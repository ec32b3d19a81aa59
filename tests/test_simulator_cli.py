"""`python -m simulator run FILE`: the command itself, as a user runs it.

One till of the real firmware (a `micropython` process on the virtual board) plays a
small scenario file with a purchase, a refusal, a balance tap, a card removal, a power
cut with a tap while the till is off, a boot, and a reboot. With --json, stdout must be
one JSON line per tap (terminal_off included) with the scenario time, terminal, card,
POS ref, item, amount, decision, top-up flag and tap-to-decision time; the summary goes
to stderr; the exit status says whether the invariants held.

A small site run (uplink on: broker, backend, a broker outage, an automatic top-up)
without --json must show progress and a summary with the texts the students saw, keep
its site folder with report.html, print commands that work on it, and leave a ledger
whose every row is on the scenario's clock, so that no statement shows a negative
balance. The report opens in a real headless Chromium with every image decoded.

A bad scenario exits 2 with one line that names the line and key.
"""
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys

import pytest

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
        {"at": 3.7, "terminal": "till1", "tap": "728F9661", "hold": 0.2},
        {"at": 4.0, "terminal": "till1", "boot": True},
        {"at": 4.5, "terminal": "till1", "pay": 1000, "item": "1x Frugt"},
        {"at": 4.6, "terminal": "till1", "tap": "884263sae", "hold": 0.3},
        {"at": 5.5, "terminal": "till1", "reboot": True},
        {"at": 6.0, "terminal": "till1", "pay": 500, "item": "1x Te"},
        {"at": 6.1, "terminal": "till1", "tap": "884263sae", "hold": 0.3},
    ],
}

# A site run: two terminals, the uplink on, a broker outage, a top-up, a power cut.
SITE = {
    "name": "site", "start": 1764068400, "site": "skole-test",
    "terminals": [{"id": "till1", "kind": "till"}, {"id": "vend1", "kind": "vending"}],
    "accounts": [{"account": 1, "balance": 10000}, {"account": 2, "balance": 10000},
                 {"account": 3, "balance": 3000, "topup_kr": 200}, {"account": 4, "balance": 500},
                 {"account": 5, "balance": 500, "topup_kr": 200}],
    "cards": [{"uid": "04A1B2C3", "number": "884263sae", "account": 1},
              {"uid": "04A1B2C4", "number": "728F9661", "account": 2, "status": "blocked"},
              {"uid": "04A1B2C5", "number": "K3", "account": 3},
              {"uid": "04A1B2C6", "number": "P4", "account": 4},
              {"uid": "04A1B2C7", "number": "T5", "account": 5}],
    "unknown_uids": ["DEADBEEF"],
    "events": [
        {"at": 0.5, "terminal": "till1", "pay": 4500, "item": "1x Sandwich"},
        {"at": 0.6, "terminal": "till1", "tap": "884263sae"},
        {"at": 1.2, "terminal": "till1", "pay": 2500, "item": "1x Pasta"},
        {"at": 1.3, "terminal": "till1", "tap": "728F9661"},
        {"at": 1.8, "terminal": "till1", "pay": 2500, "item": "1x Pasta"},
        {"at": 1.9, "terminal": "till1", "tap": "K3"},
        {"at": 2.0, "broker": "down"},
        {"at": 2.4, "terminal": "till1", "pay": 2500, "item": "1x Pasta"},
        {"at": 2.5, "terminal": "till1", "tap": "884263sae"},
        {"at": 3.0, "terminal": "till1", "power_cut": True},
        {"at": 3.3, "terminal": "till1", "tap": "K3"},
        {"at": 3.6, "terminal": "till1", "boot": True},
        {"at": 4.0, "broker": "up"},
        {"at": 4.5, "terminal": "till1", "pay": 2500, "item": "1x Pasta"},
        {"at": 4.6, "terminal": "till1", "tap": "T5"},  # refused, journaled for its top-up trigger
        {"at": 0.7, "terminal": "vend1", "pay": 1200, "item": "1x Vand"},
        {"at": 0.8, "terminal": "vend1", "tap": "DEADBEEF"},
        {"at": 1.5, "terminal": "vend1", "pay": 1200, "item": "1x Vand"},
        {"at": 1.6, "terminal": "vend1", "tap": "884263sae"},
        {"at": 4.5, "terminal": "vend1", "pay": 1200, "item": "1x Kakao"},
        {"at": 4.6, "terminal": "vend1", "tap": "P4"},
        {"at": 6.0, "terminal": "vend1", "pay": 1200, "item": "1x Kakao"},
        {"at": 6.1, "terminal": "vend1", "tap": "884263sae"},
    ],
}


def simulator(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "simulator"] + list(args), cwd=ROOT, env=cpython_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_run_json_prints_one_line_per_tap_and_the_summary(tmp_path):
    path = tmp_path / "cli.json"
    path.write_text(json.dumps(SCENARIO))
    p = simulator("run", str(path), "--json", "--site-dir", str(tmp_path / "site"))
    assert p.returncode == 0, p.stderr
    taps = [json.loads(line) for line in p.stdout.splitlines()]
    for t in taps:
        assert {"at", "t", "terminal", "card", "ref", "item", "amount", "decision", "reason", "topup",
                "tap_to_decision_ms"} <= set(t), t
    got = [(t["terminal"], t["card"], t["ref"], t["item"], t["amount"], t["decision"], t["reason"]) for t in taps]
    assert got == [("till1", "884263sae", "r1", "1x Sandwich", 4500, "approved", "approved"),
                   ("till1", "728F9661", "r2", "1x Pasta", 2500, "refused", "blocked"),
                   ("till1", "884263sae", None, None, 0, "balance", "approved"),
                   ("till1", "728F9661", None, None, 0, "terminal_off", None),
                   ("till1", "884263sae", "r3", "1x Frugt", 1000, "approved", "approved"),
                   ("till1", "884263sae", "r4", "1x Te", 500, "approved", "approved")], p.stdout
    assert taps[0]["balance_after"] == 5500 and taps[2]["balance_after"] == 5500
    assert taps[4]["seq"] == 2 and taps[4]["balance_after"] == 4500  # after the power cut, counted once
    assert taps[5]["seq"] == 3 and taps[5]["balance_after"] == 4000  # after the reboot too
    assert taps[1]["text_da"] == "Kortet er spærret" and taps[1]["text_en"] == "Card is blocked"
    assert [t["topup"] for t in taps] == [False, False, None, None, False, False]
    # The scenario's time: `at` as in the file (a tap never before its event), `t` its clock.
    assert [t["at"] >= at for t, at in zip(taps, (0.6, 1.6, 2.5, 3.7, 4.6, 6.1))] == [True] * 6
    assert [t["at"] for t in taps] == sorted(t["at"] for t in taps)
    assert all(SCENARIO["start"] <= t["t"] for t in taps) and [t["t"] for t in taps] == sorted(t["t"] for t in taps)
    # each decided tap has its time measured (wall-clock: a figure for the report, not bounded here)
    assert all(t["tap_to_decision_ms"] > 0 for t in taps if t["decision"] in ("approved", "refused"))
    assert "invariants: all hold" in p.stderr and "power cuts 2" in p.stderr and "boots 3" in p.stderr, p.stderr
    # the same lines are kept in the site folder
    kept = (tmp_path / "site" / "taps.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in kept] == taps


@pytest.fixture(scope="module")
def site_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("siterun")
    path = d / "site.json"
    path.write_text(json.dumps(SITE))
    site_dir = d / "demo-site"
    p = simulator("run", str(path), "--site-dir", str(site_dir))
    return p, site_dir


def test_a_site_run_shows_progress_and_a_summary_people_can_read(site_run):
    p, site_dir = site_run
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    # progress as plain lines (stdout is a pipe here): events and status lines as they happen
    assert re.search(r"\+\s*\d+\.\d s  site: broker down", out), out
    assert re.search(r"\+\s*\d+\.\d s  till1: power cut", out), out
    assert re.search(r"till1 \d+/6 taps: \d+ approved, \d+ refused.*vend1 \d/4 taps", out), out
    assert out.index("power cut") < out.index("invariants:")
    # refusals with the texts the students saw, a site total, the journal explained
    assert re.search(r"1  Kortet er spærret\s+Card is blocked\s+\(blocked: till1 1\)", out), out
    assert re.search(r"2  Ikke nok penge på kortet\s+Not enough money on card\s+\(insufficient_funds: till1 1, vend1 1\)",
                     out), out
    assert "site: 5 approved, revenue 119.00 kr; 4 refused; other: terminal off 1" in out, out
    assert re.search(r"journal records 6 = 5 approvals the tills heard \+ 0 approved but not heard .* \+ 1 refusals journaled", out), out
    assert "automatic top-up: 2 triggers from the tills (done 2); 2 charged" in out, out
    assert re.search(r"site events: broker down at \+\d+\.\d s, broker up at \+\d+\.\d s", out), out
    assert "invariants: all hold" in out
    assert (site_dir / "summary.txt").read_text().strip() in out
    assert len((site_dir / "taps.jsonl").read_text().splitlines()) == 10


def test_the_site_folder_stays_and_the_printed_commands_work_on_it(site_run):
    p, site_dir = site_run
    for f in ("site/ledger.db", "till1/console.log", "till1/journal.bin", "vend1/console.log", "report.html"):
        assert (site_dir / f).exists(), f
    commands = [ln.strip() for ln in p.stdout.splitlines() if ln.startswith("  ") and (
        " -m backend " in ln or "cpos rescue" in ln)]
    assert len(commands) == 4, p.stdout
    outputs = []
    for cmd in commands:
        r = subprocess.run(shlex.split(cmd), cwd=ROOT, env=cpython_env(), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        outputs.append(r.stdout)
    statement = outputs[0]
    assert statement.startswith("Kontoudtog\nKantinekort K3"), statement
    assert "Automatisk optankning" in statement and "Opening balance" in statement
    assert "no conflicts" in outputs[2]
    assert "0 new in the ledger" in outputs[3], outputs[3]


def test_every_ledger_row_is_on_the_scenario_clock_and_no_statement_goes_negative(site_run):
    p, site_dir = site_run
    assert p.returncode == 0
    taps = [json.loads(x) for x in (site_dir / "taps.jsonl").read_text().splitlines()]
    last = max(t["t"] for t in taps)
    db = sqlite3.connect(str(site_dir / "site" / "ledger.db"))
    rows = db.execute("SELECT t, type, text FROM ledger ORDER BY t, id").fetchall()
    db.close()
    from backend.ledger import Ledger

    led = Ledger(str(site_dir / "site" / "ledger.db"))
    try:
        for c in SITE["cards"]:
            lines = led.statement(c["number"])
            assert lines and all(ln["balance"] >= 0 for ln in lines), (c["number"], lines)
            assert lines[-1]["text"] == "Opening balance"  # newest first: the opening balance is the oldest
    finally:
        led.close()
    opening = [t for t, ty, text in rows if text == "Opening balance"]
    assert opening and set(opening) == {SITE["start"]}
    # the run takes well under an hour of scenario time; the host's clock would be years off
    assert all(SITE["start"] <= t <= last + 3600 for t, _, _ in rows), rows


def _chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name) or (os.path.exists("/usr/bin/" + name) and "/usr/bin/" + name)
        if path:
            return path
    pytest.fail("chromium is missing: `make browser` (scripts/ensure-chromium.sh) installs Debian's package")


CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var p = document.createElement("p");
  p.id = "render-check";
  p.textContent = "images " + imgs.length + " decoded " + ok.length + " widths " +
    imgs.map(function (i) { return i.naturalWidth; }).join(",");
  document.body.appendChild(p);
});
</script></body>"""


def test_the_report_renders_with_its_images_in_a_real_browser(site_run, tmp_path):
    p, site_dir = site_run
    page = (site_dir / "report.html").read_text(encoding="utf-8")
    # one file: every image inside it, nothing fetched from anywhere
    assert not re.search(r"""(src|href)=["'](?!data:image/png;base64,)""", page), "external reference"
    titles = re.findall(r"<h2>([^<]+)</h2>", page)
    for want in ("Tap to decision", "Throughput", "Refusals by reason", "Balance of account 3 (card K3)", "Timeline"):
        assert want in titles, titles
    probe = tmp_path / "report.html"
    probe.write_text(page.replace("</body>", CHECK, 1), encoding="utf-8")
    r = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                        "--user-data-dir=%s" % (tmp_path / "profile"), "--virtual-time-budget=5000",
                        "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<p id="render-check">images (\d+) decoded (\d+) widths ([\d,]*)</p>', r.stdout)
    assert m, (r.stdout[-2000:], r.stderr[-2000:])
    n, decoded, widths = int(m.group(1)), int(m.group(2)), m.group(3)
    assert n == 5 and decoded == n, m.group(0)
    assert all(int(w) > 200 for w in widths.split(",")), widths


def test_a_bad_scenario_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.json"
    bad = dict(SCENARIO, terminals=[{"id": "till1", "place": "canteen", "kind": "till"}])
    path.write_text(json.dumps(bad))
    p = simulator("run", str(path), "--json", "--site-dir", str(tmp_path / "site"))
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scenario:"), p.stderr


def test_a_typo_names_its_line_and_key_with_a_suggestion(tmp_path):
    text = json.dumps(SCENARIO, indent=1).replace('"limits"', '"limit"')
    text = text.replace('"balance": 10000\n  },\n  {\n   "account": 2',
                        '"balance": 10000,\n   "limit": {"school": {"day": 10}}\n  },\n  {\n   "account": 2')
    path = tmp_path / "typo.json"
    path.write_text(text)
    line = text.splitlines().index(' "accounts": [') + 2  # the account object's first line
    p = simulator("run", str(path), "--site-dir", str(tmp_path / "site"))
    assert p.returncode == 2 and p.stdout == "", p.stdout
    assert p.stderr.strip() == (
        "scenario: %s: line %d: accounts[0]: unknown key 'limit' (did you mean 'limits'?); "
        "known keys: account, balance, places, limits, topup_kr" % (path, line)), p.stderr


def test_a_site_folder_with_other_files_is_refused(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(SCENARIO))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    p = simulator("run", str(path), "--site-dir", str(tmp_path / "mine"))
    assert p.returncode == 2 and "not empty" in p.stderr, p.stderr
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
