"""`python -m backend`: portal actions from the command line (one-line errors, exit
status, nothing changed on refusal), and the service started by `serve` answering a
terminal's automatic top-up trigger end to end through the real broker."""
import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from cpos.net import messages
from cpos.net.mqtt import MQTTClient
from fake_journal import make_record
from runtimes import ROOT, cpython_env
from backend import Ledger
from backend.__main__ import main
from support.seeded import FAKE_NOW
from backend.payments import PaymentProvider

_NOW = int(time.time()) - 3600  # records of the `serve` tests: made within the backend's window of its clock
from support.uplink_world import stop


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


@pytest.fixture
def db(tmp_path, capsys):
    path = str(tmp_path / "l.db")
    assert cli(capsys, "add-account", "--ledger", path, "--name", "Test Barn 1") == (0, "account 1", "")
    assert cli(capsys, "add-account", "--ledger", path, "--name", "Test Barn 2") == (0, "account 2", "")
    assert cli(capsys, "issue-card", "--ledger", path, "--account", "1", "--uid", "04A1B2C3", "--number", "884263sae")[0] == 0
    return path


def test_actions(db, capsys):
    assert cli(capsys, "top-up", "--ledger", db, "--account", "1", "--kr", "100") == (0, "balance 100.00 kr.", "")
    assert cli(capsys, "transfer", "--ledger", db, "--from", "1", "--to", "2", "--amount", "20", "--message", "Test") == (
        0, "balance 80.00 kr. (account 1), 20.00 kr. (account 2)", "")
    assert cli(capsys, "enrol", "--ledger", db, "--account", "1", "--kr", "200", "--payment-ref", "visa-1")[0] == 0
    assert cli(capsys, "payout", "--ledger", db, "--account", "1", "--amount", "10.50", "--reg", "1234",
               "--konto", "1234567891") == (0, "balance 69.50 kr.", "")
    assert cli(capsys, "set-limit", "--ledger", db, "--account", "1", "--place", "club", "--window", "day",
               "--amount", "20") == (0, "limit club day: 20.00 kr.", "")
    assert cli(capsys, "set-places", "--ledger", db, "--account", "1", "school")[0] == 0
    assert cli(capsys, "block", "--ledger", db, "--card", "884263sae") == (0, "card 884263sae blocked", "")
    assert cli(capsys, "activate", "--ledger", db, "--card", "884263sae") == (0, "card 884263sae active", "")
    assert cli(capsys, "order-card", "--ledger", db, "--card", "884263sae", "--new-uid", "04a1b2c4",
               "--new-number", "728F9661") == (0, "card 884263sae replaced by 728F9661", "")
    code, out, _ = cli(capsys, "account", "--ledger", db, "--account", "1")
    assert code == 0 and out.splitlines() == [
        "account 1 Test Barn 1: balance 69.50 kr., active",
        "card 884263sae (uid 04a1b2c3): replaced",
        "card 728F9661 (uid 04a1b2c4): active",
        "places: school",
        "limit club day: 20.00 kr.",
        "automatic top-up: 200 kr. from visa-1, cancelled",  # the payout cancelled it
    ]
    code, out, _ = cli(capsys, "statement", "--ledger", db, "--card", "728F9661")
    assert code == 0
    assert [ln.split()[2] for ln in out.splitlines()[3:]] == ["Hævet", "Hævet", "Indsat"]  # newest first
    assert "1x Udbetaling til 1234-1234567891" in out and "1x Overførsel til Test Barn 2: Test" in out


@pytest.mark.parametrize("argv,message", [
    (["top-up", "--account", "1", "--kr", "0"], "error: a top-up must be whole Danish kroner"),
    (["top-up", "--account", "9", "--kr", "5"], "error: no account 9"),
    (["payout", "--account", "1", "--amount", "5", "--reg", "12", "--konto", "1"], "error: reg. number must be 4"),
    (["payout", "--account", "1", "--amount", "5", "--reg", "1234", "--konto", "1"], "error: payout of 5.00 kr. "
                                                                                     "exceeds the balance"),
    (["transfer", "--from", "1", "--to", "2", "--amount", "1", "--message", ""], "error: a transfer needs a message"),
    (["activate", "--card", "884263sae"], "error: card 884263sae is already active"),
    (["block", "--card", "884263SAE"], "error: no card with number '884263SAE'"),
    (["cancel-enrol", "--account", "1"], "error: account 1 is not enrolled"),
    (["statement", "--card", "x"], "error: no card with number 'x'"),
])
def test_refusals_are_one_line_and_change_nothing(db, capsys, argv, message):
    before = open(db, "rb").read()
    code, out, err = cli(capsys, argv[0], "--ledger", db, *argv[1:])
    assert code == 2 and out == "" and err.startswith(message) and "\n" not in err
    assert open(db, "rb").read() == before


def test_bad_arguments_and_missing_database_exit_non_zero_without_a_traceback(tmp_path):
    none = str(tmp_path / "none.db")
    cases = [(["top-up", "--ledger", none, "--account", "1", "--kr", "5"], "error: no ledger database %s" % none),
             (["top-up", "--ledger", none, "--account", "1", "--kr", "2.5"], "error: argument --kr: not whole kroner"),
             (["set-limit", "--ledger", none, "--account", "1", "--place", "gym", "--window", "day", "--amount", "1"],
              "error: argument --place: invalid choice")]
    for argv, message in cases:
        p = subprocess.run([sys.executable, "-m", "backend"] + argv, cwd=ROOT, env=cpython_env(),
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and "Traceback" not in p.stderr and p.stdout == ""
        assert message in p.stderr.strip().splitlines()[-1]
    assert not os.path.exists(none)


def _enrolled_world(capsys, db):
    for argv in (["add-account", "--name", "A", "--id", "1001"], ["top-up", "--account", "1001", "--kr", "10"],
                 ["issue-card", "--account", "1001", "--uid", make_record(1)["uid"], "--number", "fake1001"],
                 ["enrol", "--account", "1001", "--kr", "150", "--payment-ref", "visa-9"],
                 ["payment-card", "--ref", "visa-9", "--expiry", "2099-12", "--funds-kr", "1000"]):
        assert cli(capsys, argv[0], "--ledger", db, *argv[1:])[0] == 0


def _serve(broker, db, *extra):
    be = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--ledger", db, "--port", str(broker.port),
                           "--password-file", broker.secret_file("backend.password", broker.users["backend"])]
                          + list(extra), cwd=ROOT, env=cpython_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert be.stdout.readline().strip() == "backend up"
    return be


def _send_trigger(broker, seq, recs=None):
    """Terminal t0001 publishes one refused purchase carrying the top-up trigger (or the
    records `recs`, ending at `seq`) until acknowledged up to `seq`; returns its acks."""
    acks = []
    if recs is None:
        recs = [dict(make_record(seq, t0=_NOW), account=1001, amount=1200, reason=8, topup=True, balance_after=1000,
                     uid=make_record(1)["uid"])]

    async def terminal():
        c = MQTTClient("t0001", broker.host, broker.port, "t0001", broker.users["t0001"], keepalive=10)
        c.subscribe(messages.topic(broker.site, "t0001", messages.ACK), 1,
                    lambda t, p, r: acks.append(messages.decode_ack(p)))
        task = asyncio.create_task(c.run())
        assert await c.wait_connected(5000)
        for _ in range(5):  # resend until acknowledged, as a terminal does (the backend may not be subscribed yet)
            assert await c.publish(messages.topic(broker.site, "t0001", messages.BATCH),
                                   messages.encode_batch(recs[0]["seq"], seq, recs))
            for _ in range(50):
                if seq in acks:
                    break
                await asyncio.sleep(0.02)
            if seq in acks:
                break
        await c.stop()
        task.cancel()

    asyncio.run(asyncio.wait_for(terminal(), 30))
    return acks


def _until(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not pred():
        time.sleep(0.02)
    return pred()


def _trigger_states(db):
    led = Ledger(db)
    try:
        return led.db.execute("SELECT status, reason FROM topup_triggers ORDER BY terminal, seq").fetchall()
    finally:
        led.close()


def test_serve_answers_a_top_up_trigger_end_to_end(broker, tmp_path, capsys):
    db = str(tmp_path / "l.db")
    _enrolled_world(capsys, db)
    be = _serve(broker, db)
    try:
        assert _send_trigger(broker, 1)[-1] == 1
        assert _until(lambda: _trigger_states(db)[0][0] not in ("pending", "inflight"))
        assert _trigger_states(db) == [("done", "charged 150.00 kr.")]
        led = Ledger(db)
        assert led.balance(1001) == 1000 + 15000
        assert led.changes_since(0)[-1][1:3] == ("balance", 1001)  # the new balance is there for the downlink
        led.close()
    finally:
        stop(be)
    assert os.path.exists(db + ".payments")


def test_backend_killed_after_the_charge_books_it_once_after_restart(broker, tmp_path, capsys):
    db = str(tmp_path / "l.db")
    _enrolled_world(capsys, db)
    be = _serve(broker, db, "--crash-after-charge")
    try:
        _send_trigger(broker, 1)  # its ack may or may not leave before the kill
        assert be.wait(timeout=10) == -9  # SIGKILL right after the provider took the money
    finally:
        stop(be)
    led = Ledger(db)
    assert led.db.execute("SELECT status FROM topup_attempts").fetchall() == [("inflight",)]
    assert led.balance(1001) == 1000
    led.close()
    prov = PaymentProvider(db + ".payments")
    assert [o[4] for o in prov.orders()] == ["approved"]
    be = _serve(broker, db)
    try:
        assert _until(lambda: _trigger_states(db) == [("done", "charged 150.00 kr.")])
        assert _send_trigger(broker, 2)[-1] == 2  # (the retained ack 1 comes first) a later trigger ...
        assert _until(lambda: len(_trigger_states(db)) == 2 and _trigger_states(db)[1][0] == "skipped")
    finally:
        stop(be)
    led = Ledger(db)
    assert led.balance(1001) == 1000 + 15000
    assert led.db.execute("SELECT count(*) FROM ledger WHERE text = '1x Automatisk optankning'").fetchone() == (1,)
    led.close()
    assert [o[4] for o in prov.orders()] == ["approved"] and prov.funds("visa-9") == 100000 - 15000


def _conflict_world(db):
    """t0001 sent seq 1..3; then, its journal replaced, seq 2..3 again holding other purchases."""
    led = Ledger(db, clock=lambda: FAKE_NOW)
    for s in (1, 2, 3):
        led.add_card(make_record(s)["uid"], "card%d" % s, 1)
    old = [dict(make_record(s), account=1, amount=1000, reason=0, topup=False, item="1x Toast") for s in (1, 2, 3)]
    led.apply_batch("skole-nord", "t0001", messages.encode_batch(1, 3, old))
    new = [dict(r, t=r["t"] + 86400, amount=2550, item="1x Ny journal") for r in old[1:]]
    assert led.apply_batch("skole-nord", "t0001", messages.encode_batch(2, 3, new)).conflicts == 2
    led.close()
    return old, new


def test_conflicts_are_listed_for_staff(db, capsys):
    assert cli(capsys, "conflicts", "--ledger", db) == (0, "no conflicts", "")
    old, new = _conflict_world(db)
    code, out, err = cli(capsys, "conflicts", "--ledger", db)
    lines = out.splitlines()
    assert code == 0 and err == "" and len(lines) == 7 and lines[-1] == "2 conflict(s)"
    assert lines[0].startswith("conflict 1: t0001 seq 2, received ")
    assert lines[1].startswith("  kept, not booked: ") and "account 1  card %s  25.50 kr.  approved  1x Ny journal" % (
        new[0]["uid"]) in lines[1]
    assert lines[2].startswith("  seq 2 holds: ") and "10.00 kr.  approved  1x Toast" in lines[2]
    assert lines[3].startswith("conflict 2: t0001 seq 3, ")
    code, out, _ = cli(capsys, "conflicts", "--ledger", db, "--json", "--terminal", "1")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["seq"], r["amount"], r["item"], r["stored"]["amount"]) for r in rows] == [
        (2, 2550, "1x Ny journal", 1000), (3, 2550, "1x Ny journal", 1000)]
    assert cli(capsys, "conflicts", "--ledger", db, "--terminal", "2") == (0, "no conflicts", "")
    code, out, _ = cli(capsys, "account", "--ledger", db, "--account", "1")
    assert "balance -30.00 kr." in out  # the three first purchases only: conflicts are not booked


def test_serve_keeps_logs_and_acknowledges_a_conflicting_batch(broker, tmp_path, capsys):
    db = str(tmp_path / "l.db")
    _enrolled_world(capsys, db)
    be = _serve(broker, db, "--payments", "off")
    try:
        rec = dict(make_record(1, t0=_NOW), account=1001, amount=300, reason=0, topup=False, item="1x Æble")
        assert _send_trigger(broker, 1, [rec])[-1] == 1
        other = dict(rec, t=rec["t"] - 86400, item="1x Juice")  # the same seq from a replaced journal
        new = dict(make_record(2, t0=_NOW), account=1001, amount=200, reason=0, topup=False, item="1x Te",
                   uid=rec["uid"])
        assert _send_trigger(broker, 2, [other, new])[-1] == 2  # the batch with the conflict is acknowledged
        led = Ledger(db)
        try:
            assert [c["item"] for c in led.conflicts()] == ["1x Juice"]
            assert led.balance(1001) == 1000 - 300 - 200  # the conflict is kept, not booked
        finally:
            led.close()
    finally:
        stop(be)
    err = be.stderr.read()
    assert "backend: CONFLICT: t0001 sent 1 record(s)" in err and ": 1; kept in uplink_conflicts" in err


def test_the_ledger_is_named_as_in_cpos_and_the_old_name_still_works(db, capsys):
    """One name per concept across `cpos` and `python -m backend`: --ledger for the ledger's
    file and --terminal for a terminal's number; --db stays as a hidden old spelling."""
    assert cli(capsys, "top-up", "--db", db, "--account", "1", "--kr", "5") == (0, "balance 5.00 kr.", "")
    assert cli(capsys, "top-up", "--ledger", db, "--account", "1", "--kr", "5") == (0, "balance 10.00 kr.", "")
    p = subprocess.run([sys.executable, "-m", "backend", "conflicts", "--help"], cwd=ROOT, env=cpython_env(),
                       capture_output=True, text=True, timeout=60)
    assert "--ledger" in p.stdout and "--terminal" in p.stdout and "--db" not in p.stdout
    p = subprocess.run([sys.executable, "-m", "backend", "conflicts"], cwd=ROOT, env=cpython_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "required: --ledger" in p.stderr and "Traceback" not in p.stderr
