"""host_tools.rescue: a raw dump of the journal partition back to JSON lines."""
import json
import os
import subprocess
import sys

from cpos import purchase
from cpos.journal import Journal, SLOT
from simulator.norflash import NorFlash, PowerCut, CUT_INSIDE
import journal_check as jc
from runtimes import ROOT


def run_rescue(path, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "lib"), ROOT]))
    p = subprocess.run([sys.executable, "-m", "host_tools.rescue", str(path)] + list(args),
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    return p.returncode, [json.loads(line) for line in p.stdout.splitlines()], p.stderr


def journal_with(n, acked, nsec=4):
    f = NorFlash(nsec * 4096)
    j = Journal(f)
    j.recover()
    for i in range(n):
        j.append(*jc.fields(i))
    if acked:
        j.ack(acked)
    return f, j


def as_json(seq):
    return purchase.to_json_obj(jc.expected(seq, jc.fields(seq - 1)))


def test_rescue_prints_unacknowledged_purchases(tmp_path):
    f, j = journal_with(150, 40)
    dump = tmp_path / "journal.bin"
    dump.write_bytes(bytes(f.mem))
    code, recs, err = run_rescue(dump)
    assert code == 0, err
    assert recs == [as_json(s) for s in range(41, 151)]
    assert "110 records" in err and "acknowledged up to 40" in err
    code, recs, err = run_rescue(dump, "--all")
    assert [r["seq"] for r in recs] == list(range(1, 151))
    assert [r["acked"] for r in recs] == [s <= 40 for s in range(1, 151)]


def test_rescue_from_a_whole_flash_dump_with_offset(tmp_path):
    f, j = journal_with(70, 0, nsec=3)
    dump = tmp_path / "flash.bin"
    dump.write_bytes(b"\x00" * 0x9000 + bytes(f.mem) + b"\xab" * 8192)
    code, recs, err = run_rescue(dump, "--offset", "0x9000", "--size", str(3 * 4096))
    assert code == 0, err
    assert recs == [as_json(s) for s in range(1, 71)]
    code, recs, err = run_rescue(dump, "--offset", "0x9000", "--size", "0x100000")
    assert code == 2 and recs == []


def test_rescue_skips_torn_records(tmp_path):
    f, j = journal_with(30, 0)
    f.arm(0, CUT_INSIDE)
    try:
        j.append(*jc.fields(30))
    except PowerCut:
        pass
    f.reboot()
    dump = tmp_path / "torn.bin"
    dump.write_bytes(bytes(f.mem))
    code, recs, err = run_rescue(dump)
    assert code == 0, err
    assert recs == [as_json(s) for s in range(1, 31)]
    assert "1 torn" in err


def test_rescue_agrees_with_recovery_at_every_cut():
    """Whatever a cut leaves, the rescue returns what the terminal itself would upload."""
    from host_tools.rescue import rescue
    name = "laps"
    nsec, sector, workload = jc.WORKLOADS[name]
    for op in range(0, jc.total_ops(name), 3):
        f = NorFlash(nsec * sector, sector=sector, seed=op + 1)
        j = Journal(f)
        j.recover()
        f.arm(op, CUT_INSIDE)
        try:
            for st in jc.steps(workload):
                if st[0] == "a":
                    j.append(*jc.fields(j.next_seq))
                elif st[0] == "k":
                    j.ack(max(0, j.next_seq - 1 - st[1]))
        except PowerCut:
            f.reboot()
        j = Journal(f)
        j.recover()
        buf = bytearray(SLOT)
        mine, s = [], 0
        while (r := j.read(s, buf)) is not None:
            mine.append(purchase.to_json_obj(purchase.decode(buf)))
            s = r + 1
        theirs = [r for r, _ in rescue(bytes(f.mem), block=sector)]
        assert theirs == mine


def test_rescue_of_garbage_prints_nothing(tmp_path):
    dump = tmp_path / "junk.bin"
    dump.write_bytes(os.urandom(3 * 4096))
    code, recs, err = run_rescue(dump)
    assert code == 0 and recs == [] and "0 records" in err


def _terminal7_journal(n, shift=0):
    """A journal of terminal 7 with n purchases; `shift` moves every purchase in time, as a
    replaced journal whose seqs restart at 1 holds other purchases under the same seqs."""
    f = NorFlash(4 * 4096)
    j = Journal(f)
    j.recover()
    for i in range(n):
        fields = list(jc.fields(i))
        fields[0] += shift
        fields[6] = 7
        j.append(*fields)
    return bytes(f.mem)


def test_rescue_submits_through_apply_batch_and_keeps_conflicts(tmp_path, capsys):
    from host_tools import cli, rescue
    from backend import Ledger

    path = str(tmp_path / "ledger.sqlite")
    led = Ledger(path)
    assert rescue.submit(led, "skole-nord", 7, _terminal7_journal(12)) == (12, 12, 0, 0)
    money = led.db.execute("SELECT account, amount, terminal, seq FROM ledger ORDER BY id").fetchall()
    led.close()
    # The terminal's journal was replaced; its new one reused seq 1..8 for other purchases.
    dump = tmp_path / "journal-t0007.bin"
    dump.write_bytes(_terminal7_journal(8, shift=86400))
    assert cli.main(["rescue", "--dump", str(dump), "--site", "skole-nord", "--number", "7",
                     "--ledger", path]) == 0
    out, err = capsys.readouterr()
    assert "rescued 8 records of t0007 (site skole-nord): 0 new in the ledger, 0 already there, 8 conflicting" in out
    assert "kept, not booked" in err and "conflicts --db %s --terminal 7" % path in err
    assert cli.main(["rescue", "--dump", str(dump), "--site", "skole-nord", "--number", "7",
                     "--ledger", path]) == 0  # again: nothing kept twice
    assert "0 new in the ledger, 8 already there, 0 conflicting" in capsys.readouterr()[0]
    led = Ledger(path)
    kept = led.conflicts(7)
    assert [c["seq"] for c in kept] == list(range(1, 9))
    assert [c["t"] - c["stored"]["t"] for c in kept] == [86400] * 8
    assert led.db.execute("SELECT account, amount, terminal, seq FROM ledger ORDER BY id").fetchall() == money
    led.close()
