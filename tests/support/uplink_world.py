"""Processes of the uplink fault tests: the backend (`python -m backend`) and the
stand-in terminal (tests/device/standin_terminal.py on MicroPython or CPython), plus the
exactly-once check shared by every fault test."""
import json
import os
import subprocess
import sys
import time

from runtimes import ROOT, DEVICE_TESTS, cpython_env, micropython_cmd, micropython_env

if DEVICE_TESTS not in sys.path:
    sys.path.insert(0, DEVICE_TESTS)
from fake_journal import FileJournal, make_record  # noqa: E402

STANDIN = os.path.join(DEVICE_TESTS, "standin_terminal.py")


def start_backend(broker, db, crash_after_apply=0, client_id="cpos-backend"):
    """The backend on ledger `db`, which knows make_record's accounts and cards; its record
    checks take make_record's times (2025) as recent enough (--max-record-age-days)."""
    from support.seeded import seed
    from backend import Ledger

    seed(Ledger(db)).close()
    cmd = [sys.executable, "-m", "backend", "--db", db, "--port", str(broker.port),
           "--password-file", broker.secret_file("backend.password", broker.users["backend"]), "--client-id", client_id,
           "--max-record-age-days", "36500"]
    if crash_after_apply:
        cmd += ["--crash-after-apply", str(crash_after_apply)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=cpython_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "backend up", p.stderr.read()
    return p


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def prefill(jdir, n, terminal=1, gaps=()):
    """Journal n records (seq 1..n), skipping the seqs in `gaps` as a crash would."""
    j = FileJournal(jdir)
    while j.next_seq <= n:
        if j.next_seq in gaps:
            j.skip()
        else:
            j.append(make_record(j.next_seq, terminal))
    j.close()


def start_terminal(runtime, jdir, broker, terminal=1, batch=50, ack_timeout_ms=2000, taps=0, tap_ms=5,
                   deadline_ms=60000):
    tid = "t%04d" % terminal
    args = [jdir, broker.host, str(broker.port), broker.site, str(terminal), broker.users[tid], str(batch),
            str(ack_timeout_ms), str(taps), str(tap_ms), str(deadline_ms)]
    if runtime == "micropython":
        cmd, env = micropython_cmd(STANDIN, *args), micropython_env()
    else:
        cmd, env = [sys.executable, STANDIN] + args, cpython_env()
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_progress(proc, pred, timeout=60):
    """Read PROGRESS lines until pred(acked, next_seq, batches); return that tuple."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("terminal ended early: %s" % proc.stderr.read()[-3000:])
        if line.startswith("PROGRESS "):
            v = tuple(int(x) for x in line.split()[1:])
            if pred(*v):
                return v
    raise AssertionError("progress condition not reached")


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    res = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and res, "terminal exit %s:\n%s\n%s" % (proc.returncode, out[-1500:], err[-3000:])
    return json.loads(res[-1][7:])


def journal_records(jdir, n, terminal=1, gaps=()):
    return [make_record(s, terminal) for s in range(1, n + 1) if s not in gaps]


def assert_exactly_once(db, jdir, n, terminal=1, gaps=()):
    """The ledger holds every approved purchase of the journal once, every record was received
    once, the watermark covers all, and the terminal's journal has drained."""
    from backend import Ledger

    led = Ledger(db)
    try:
        recs = journal_records(jdir, n, terminal, gaps)
        assert led.received_seqs(terminal) == [r["seq"] for r in recs]
        assert led.purchase_seqs(terminal) == [r["seq"] for r in recs if r["reason"] == 0]
        rows = led.db.execute("SELECT terminal, seq, count(*) FROM ledger WHERE terminal IS NOT NULL "
                              "GROUP BY terminal, seq HAVING count(*) > 1").fetchall()
        assert rows == []
        assert led.watermark(terminal) == n
        trig = [t[1] for t in led.topup_triggers(terminal)]
        assert trig == [r["seq"] for r in recs if r["topup"]]
        spent = {}
        for r in recs:
            if r["reason"] == 0:
                spent[r["account"]] = spent.get(r["account"], 0) + r["amount"]
        for acc, total in spent.items():
            assert led.balance(acc) == -total, (acc, led.balance(acc), total)
        assert led.refused(terminal) == ([], {})  # every record passed the backend's checks
    finally:
        led.close()
    j = FileJournal(jdir)
    try:
        assert j.acked == n and j.oldest_unacked() is None, (j.acked, j.oldest_unacked())
    finally:
        j.close()
