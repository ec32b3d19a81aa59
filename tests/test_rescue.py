"""host_tools.rescue: a raw dump of the journal partition back to JSON lines."""
import json
import os
import subprocess
import sys

import pytest

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


def as_json(seq):
    return purchase.to_json_obj(jc.expected(seq, jc.fields(seq - 1)))


def test_rescue_prints_unacknowledged_purchases(tmp_path):
    f, j = jc.journal_with(150, 40)
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
    f, j = jc.journal_with(70, 0, nsec=3)
    dump = tmp_path / "flash.bin"
    dump.write_bytes(b"\x00" * 0x9000 + bytes(f.mem) + b"\xab" * 8192)
    code, recs, err = run_rescue(dump, "--offset", "0x9000", "--size", str(3 * 4096))
    assert code == 0, err
    assert recs == [as_json(s) for s in range(1, 71)]
    code, recs, err = run_rescue(dump, "--offset", "0x9000", "--size", "0x100000")
    assert code == 2 and recs == []


def test_rescue_skips_torn_records(tmp_path):
    f, j = jc.journal_with(30, 0)
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


def test_rescue_of_garbage_is_refused_saying_so(tmp_path):
    """Random bytes hold no journal ring: refused (exit 2), not "0 records" (which would pass
    for an empty journal and let the terminal be reflashed with its purchases unread)."""
    dump = tmp_path / "junk.bin"
    dump.write_bytes(os.urandom(3 * 4096))
    code, recs, err = run_rescue(dump)
    assert code == 2 and recs == [] and "not a journal" in err and "no journal sector header" in err
    assert len(err.strip().splitlines()) == 1
    # an opened journal with nothing in it is a journal: 0 records is then the truth
    f = NorFlash(3 * 4096)
    j = Journal(f)
    j.recover()
    j.append(*jc.fields(0))
    j.ack(1)
    empty = tmp_path / "acked.bin"
    empty.write_bytes(bytes(f.mem))
    code, recs, err = run_rescue(empty)
    assert code == 0 and recs == [] and "0 records" in err


def _cardtable_image():
    from simulator.cardsync import install
    from cpos.cards import layout

    f = NorFlash(16 * 4096)
    a = (100, 3, [-1] * 6, False, 0, [1, 2, 3], [0] * 6)
    install(f, layout.build_image([(b"\1\2\3\4", 7, 0)], {7: a}, 1, 0))
    return bytes(f.mem)


def _whole_flash():
    from host_tools import partitions

    f, _ = jc.journal_with(5, 0, nsec=3)
    img = bytearray(b"\xff" * 0x400000)
    img[0x1000] = 0xE9
    img[0x8000:0x8C00] = partitions.binary()
    img[0x260000:0x260000 + len(f.mem)] = f.mem
    return bytes(img)


@pytest.mark.parametrize("name,make,words", [
    ("erased", lambda: b"\xff" * 0x40000, ["all 0xFF", "erased partition"]),
    ("zeros", lambda: bytes(0x40000), ["all zeros"]),
    ("cardtable", _cardtable_image, ["a card table image", "0x2a0000"]),
    ("flash", _whole_flash, ["whole-flash dump", "journal sectors from 0x260000"]),
    ("firmware", lambda: b"\xe9" + os.urandom(0x10000), ["ESP32 firmware image"]),
    ("random", lambda: os.urandom(0x40000), ["no journal sector header (CPJ1)", "64 sectors"]),
    ("short", lambda: b"\x00" * 100, ["100 bytes", "at least two"]),
])
def test_cpos_rescue_refuses_what_is_not_a_journal_and_says_what_it_is(tmp_path, capsys, name, make, words):
    from host_tools import cli
    from backend import Ledger

    path = str(tmp_path / "ledger.sqlite")
    Ledger(path).close()
    before = open(path, "rb").read()
    dump = tmp_path / (name + ".bin")
    dump.write_bytes(make())
    code = cli.main(["rescue", "--dump", str(dump), "--site", "skole-nord", "--terminal", "7", "--ledger", path])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("cpos rescue: %s holds no journal: " % dump), err
    for w in words:
        assert w in err, err
    assert "nothing was submitted" in err and "read-flash 0x260000 0x40000" in err
    assert open(path, "rb").read() == before


def test_identify_finds_the_journal_in_each_journal(tmp_path):
    """identify() says None (a journal) for every journal the suite makes, torn ones included."""
    from host_tools.rescue import identify

    for n, acked in ((1, 0), (150, 40), (150, 150)):
        f, _ = jc.journal_with(n, acked)
        assert identify(bytes(f.mem)) is None
    torn = bytearray(jc.journal_with(30, 0)[0].mem)
    torn[4096 + 70] ^= 0xFF  # a damaged record: still a journal, the rescue skips the record
    assert identify(bytes(torn)) is None


def _terminal7_journal(n, shift=0):
    """A journal of terminal 7 with n purchases; `shift` moves every purchase in time, as a
    replaced journal whose seqs restart at 1 holds other purchases under the same seqs."""
    f = NorFlash(4 * 4096)
    j = Journal(f)
    j.recover()
    for i in range(n):
        fields = list(jc.fields(i))
        fields[0] += shift
        fields[2] = 1000 + i % 3  # the account of card UIDS[i % 3] (_rescue_ledger)
        fields[6] = 7
        j.append(*fields)
    return bytes(f.mem)


def _rescue_ledger(path):
    """A ledger knowing the cards of _terminal7_journal, its clock a day after them."""
    from backend import Ledger

    led = Ledger(path, clock=lambda: 1700000000 + 86400)
    for k in range(3):
        led.add_account("A%d" % k, account_id=1000 + k)
        led.add_card(jc.UIDS[k].hex(), "card%d" % k, 1000 + k)
    return led


def test_rescue_submits_through_apply_batch_and_keeps_conflicts(tmp_path, capsys):
    from host_tools import cli, rescue
    from backend import Ledger

    path = str(tmp_path / "ledger.sqlite")
    led = _rescue_ledger(path)
    assert rescue.submit(led, "skole-nord", 7, _terminal7_journal(12)) == (12, 12, 0, 0, 0)
    money = led.db.execute("SELECT account, amount, terminal, seq FROM ledger ORDER BY id").fetchall()
    led.close()
    # The terminal's journal was replaced; its new one reused seq 1..8 for other purchases.
    dump = tmp_path / "journal-t0007.bin"
    dump.write_bytes(_terminal7_journal(8, shift=86400))
    assert cli.main(["rescue", "--dump", str(dump), "--site", "skole-nord", "--number", "7",
                     "--ledger", path]) == 0
    out, err = capsys.readouterr()
    assert "rescued 8 records of t0007 (site skole-nord): 0 new in the ledger, 0 already there, 8 conflicting" in out
    assert "kept, not booked" in err and "conflicts --ledger %s --terminal 7" % path in err
    assert cli.main(["rescue", "--dump", str(dump), "--site", "skole-nord", "--number", "7",
                     "--ledger", path]) == 0  # again: nothing kept twice
    assert "0 new in the ledger, 8 already there, 0 conflicting" in capsys.readouterr()[0]
    led = Ledger(path)
    kept = led.conflicts(7)
    assert [c["seq"] for c in kept] == list(range(1, 9))
    assert [c["t"] - c["stored"]["t"] for c in kept] == [86400] * 8
    assert led.db.execute("SELECT account, amount, terminal, seq FROM ledger ORDER BY id").fetchall() == money
    led.close()
