"""The purchase journal (cpos.journal, cpos.purchase, cpos.blockfile), on both runtimes.

Targeted cases here; the power-cut sweeps are in test_journal_powercut.py (device
subset) and tests/test_journal_powercut.py (exhaustive, hypothesis).
"""
import os

from cpos import purchase, reasons
from cpos.blockfile import BlockFile
from cpos.journal import Journal, JournalFull, SLOT
from simulator.norflash import NorFlash, PowerCut, CUT_INSIDE, CUT_AFTER
from journal_check import fields, expected
from checks import raises

UID = b"\x04\xa1\xb2\xc3"


def fresh(nsec=3, sector=512, seed=1):
    f = NorFlash(nsec * sector, sector=sector, seed=seed)
    j = Journal(f)
    j.recover()
    return f, j


def buy(j, i):
    return j.append(*fields(i))


def unacked(j):
    buf = bytearray(SLOT)
    out = []
    s = 0
    while True:
        r = j.read(s, buf)
        if r is None:
            return out
        out.append(purchase.decode(buf))
        s = r + 1


def test_record_codec_roundtrip_and_limits():
    buf = bytearray(purchase.SIZE)
    for i in range(12):
        f = fields(i)
        purchase.encode_into(buf, 1000 + i, *f)
        assert purchase.is_valid(buf)
        assert purchase.decode(buf) == expected(1000 + i, f)
    # truncation keeps whole UTF-8 characters
    assert purchase.fit_item("\u00e6" * 20) == ("\u00e6" * 11).encode()
    assert purchase.fit_item("a" + "\u00f8" * 20) == ("a" + "\u00f8" * 10).encode()
    assert purchase.fit_item("kort") == b"kort"
    # every single-bit flip is caught by the checksum
    purchase.encode_into(buf, 7, *fields(3))
    for byte in range(purchase.SIZE):
        for bit in range(8):
            buf[byte] ^= 1 << bit
            assert not purchase.is_valid(buf), (byte, bit)
            buf[byte] ^= 1 << bit
    assert purchase.is_valid(buf)
    assert not purchase.is_valid(b"\xff" * 64)
    raises(ValueError, purchase.decode, b"\xff" * 64)
    base = list(fields(0))
    for idx, bad in ((1, b"\x01\x02\x03"), (3, -1), (3, 10 ** 10), (4, 2), (5, 3), (8, 2 ** 31),
                     (9, 256), (0, -5), (2, 2 ** 32)):
        f = list(base)
        f[idx] = bad
        raises(ValueError, purchase.encode_into, buf, 1, *f)


def test_json_form_has_the_agreed_names():
    buf = bytearray(purchase.SIZE)
    purchase.encode_into(buf, 5, 1700000000, UID, 77, 2500, 1, 0, 12, "1x Toast", -300,
                         reasons.INSUFFICIENT_FUNDS, True)
    o = purchase.to_json_obj(purchase.decode(buf))
    assert o == {"seq": 5, "t": 1700000000, "uid": "04a1b2c3", "account": 77, "amount": 2500,
                 "place": 1, "kind": 0, "terminal": 12, "item": "1x Toast", "balance_after": -300,
                 "reason": reasons.INSUFFICIENT_FUNDS, "topup": True}
    assert sorted(o) == sorted(purchase.FIELDS)


def test_append_is_one_program_and_read_ack_recover():
    f, j = fresh()
    assert j.next_seq == 1 and j.oldest_unacked() is None and j.fill() == (0, 14)
    ops = f.ops
    assert buy(j, 0) == 1
    assert f.ops - ops == 3  # first append of a sector: erase, header, record
    ops = f.ops
    assert buy(j, 1) == 2
    assert f.ops - ops == 1 and f.programs == 3  # the common case: one program
    for i in range(2, 10):
        assert buy(j, i) == i + 1
    assert [r["seq"] for r in unacked(j)] == list(range(1, 11))
    assert j.ack(4) is True
    assert j.ack(4) is False and j.ack(2) is False  # idempotent
    raises(ValueError, j.ack, 11)  # beyond the last appended
    raises(ValueError, j.ack, -1)
    assert j.oldest_unacked() == 5 and j.pending() == 6
    buf = bytearray(SLOT)
    assert j.read(0, buf) == 5 and j.read(7, buf) == 7 and j.read(11, buf) is None
    assert j.read(1, buf, True) == 1  # acknowledged records stay readable until erased
    assert purchase.decode(buf) == expected(1, fields(0))
    j2 = Journal(f)  # a reboot: the state comes from flash alone
    assert j2.recover() == 11
    assert (j2.watermark, j2.pending(), j2.oldest_unacked()) == (j.watermark, j.pending(), j.oldest_unacked())
    assert j2.fill() == (j.fill()[0] + 1, j.fill()[1])  # a boot skips the slot a cut may have torn unseen
    assert unacked(j2) == unacked(j)
    assert buy(j2, 10) == 11


def test_full_refuses_without_writing_and_keeps_everything():
    f, j = fresh(nsec=3)
    assert j.capacity() == 14
    for i in range(14):
        buy(j, i)
    assert j.fill() == (14, 14)
    ops = f.ops
    raises(JournalFull, buy, j, 14)
    assert f.ops == ops  # nothing written
    assert j.next_seq == 15
    assert j.ack(6) is True  # the oldest sector (1..7) still holds record 7
    raises(JournalFull, buy, j, 14)
    assert j.ack(7) is True  # now it may be erased
    assert buy(j, 14) == 15
    assert [r["seq"] for r in unacked(j)] == list(range(8, 16))
    assert all(r == expected(r["seq"], fields(r["seq"] - 1)) for r in unacked(j))
    assert f.torn_overwrites == 0


def test_acks_always_fit_in_the_reserve_sector():
    f, j = fresh(nsec=3)
    for i in range(20):
        try:
            buy(j, i)
        except JournalFull:
            pass
    for w in range(1, 15):  # one record at a time while the journal is full
        assert j.ack(w) is True
        assert Journal(f).recover() and Journal(f).recover() == 15
    j2 = Journal(f)
    j2.recover()
    assert j2.watermark == 14 and j2.oldest_unacked() is None
    assert buy(j2, 20) == 15


def test_erased_but_unrecorded_ack_is_inferred():
    # Fill the reserve sector with torn ack slots, then cut an ack between the erase of
    # the oldest sector and the header that carries the new watermark.
    f, j = fresh(nsec=3)
    for i in range(14):
        buy(j, i)
    assert j.ack(1)
    for k in range(4):  # each cut tears a slot, each boot skips the next: 4 boots fill 7 slots
        f.arm(0, CUT_INSIDE, 0.5)
        raises(PowerCut, j.ack, 2 + k)
        f.reboot()
        j = Journal(f)
        j.recover()
        assert j.watermark == 1
    raises(JournalFull, j.ack, 5)  # the oldest sector would still hold 6 and 7
    f.arm(0, CUT_AFTER)  # the erase of sector 0 completes, then the power goes
    raises(PowerCut, j.ack, 9)
    f.reboot()
    j = Journal(f)
    j.recover()
    assert j.watermark == 7  # records 1..7 are gone: they were acknowledged
    assert [r["seq"] for r in unacked(j)] == list(range(8, 15))
    assert j.ack(9)  # goes into the freed sector; sector 1 (8..14) still pins the ring
    raises(JournalFull, buy, j, 14)
    assert j.ack(14) and buy(j, 14) == 15
    assert f.torn_overwrites == 0


def test_wear_spreads_over_the_ring():
    f, j = fresh(nsec=6)
    for i in range(7 * 6 * 5):
        buy(j, i)
        if i % 3 == 2:
            j.ack(j.next_seq - 2)
    counts = f.erase_counts
    assert min(counts) >= 5 and max(counts) - min(counts) <= 1, counts


def test_prepare_moves_the_erase_out_of_the_tap_path():
    f, j = fresh(nsec=4)
    for i in range(7):
        buy(j, i)
    j.ack(7)
    assert j.prepare() is True and j.prepare() is False
    erases = f.erases
    buy(j, 7)  # crosses into the prepared sector
    assert f.erases == erases
    j2 = Journal(f)  # after a reboot a blank-looking sector is erased again before use
    j2.recover()
    for i in range(8, 13):  # slot 2 is skipped after the boot: 8..12 fill slots 3..7
        buy(j2, i)
    erases = f.erases
    buy(j2, 13)
    assert f.erases == erases + 1


def test_garbage_partition_recovers_to_an_empty_journal():
    f = NorFlash(4 * 512, sector=512)
    x = 12345
    for i in range(len(f.mem)):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        f.mem[i] = x >> 16 & 0xFF
    j = Journal(f)
    assert j.recover() == 1 and j.pending() == 0 and unacked(j) == []
    assert buy(j, 0) == 1 and [r["seq"] for r in unacked(j)] == [1]
    j = Journal(f)
    assert j.recover() == 2


def test_refuses_use_before_recover_and_bad_geometry():
    f = NorFlash(3 * 512, sector=512)
    j = Journal(f)
    raises(RuntimeError, buy, j, 0)
    raises(ValueError, Journal, NorFlash(512, sector=512))
    raises(ValueError, Journal, NorFlash(2 * 512, sector=512))  # could deadlock: see the test below
    raises(ValueError, Journal, NorFlash(3 * 96, sector=96))  # not a multiple of the 64-byte slot


def test_two_sectors_would_deadlock_full():
    """Why MIN_SECTORS is 3: with two sectors, once the head is full and every purchase in
    it acknowledged, nothing can open the other sector; the journal refuses every purchase."""
    f = NorFlash(2 * 512, sector=512)

    class TwoSectors(Journal):
        MIN_SECTORS = 2

    j = TwoSectors(f)
    j.recover()
    for i in range(7):
        buy(j, i)  # sector 0 full
    assert j.ack(7) is True  # opens sector 1 (the header carries the watermark)
    for i in range(7, 13):
        buy(j, i)
    assert j.ack(13) is True  # the ack takes sector 1's last slot: full, nothing pending
    assert j.pending() == 0
    raises(JournalFull, buy, j, 13)  # opening sector 0 would take the last free sector
    assert j.ack(13) is False  # and no ack has anything to record that could move on
    raises(JournalFull, buy, j, 13)
    raises(JournalFull, buy, j, 13)


def test_decayed_headers_and_records_lose_nothing():
    """On both runtimes: one bit of a header (repaired), two bits of the newest header
    (placed from its records: no seq rollback), one bit of a record (repaired when read)."""
    f, j = fresh(nsec=5)
    for i in range(20):  # sectors 0, 1 full (7 each), sector 2 holds 15..20
        buy(j, i)
    f.flip(512 + 6, 0x02)  # sector 1's header, one bit
    f.flip(2 * 512 + 4, 0x01)  # the newest header, two bits
    f.flip(2 * 512 + 9, 0x80)
    f.flip(3 * SLOT + 30, 0x10)  # purchase 3
    j = Journal(f)
    assert j.recover() == 21
    got = unacked(j)
    assert [r["seq"] for r in got] == list(range(1, 21))
    assert all(r == expected(r["seq"], fields(r["seq"] - 1)) for r in got)
    assert j.damage() == {"headers": 2, "orphans": 0, "records_repaired": 1}
    assert buy(j, 20) == 21


class BlankPartition:
    """An erased 1 MB partition that costs no RAM (a NorFlash would not fit the heap cap)."""

    def readblocks(self, block, buf, offset=0):
        for i in range(len(buf)):
            buf[i] = 0xFF

    def ioctl(self, op, arg=0):
        return {4: 256, 5: 4096}.get(op, 0)


def test_capacity_of_a_1mb_partition():
    j = Journal(BlankPartition())
    j.recover()
    assert j.slots == 63 and j.capacity() == 255 * 63 == 16065
    assert j.fill() == (0, 16065)


def test_journal_runs_unchanged_on_a_block_file():
    path = (os.getenv("CPOS_TMP") or "/tmp") + "/cpos_test_journal.bin"
    try:
        os.remove(path)
    except OSError:
        pass
    dev = BlockFile(path, size=4 * 4096)
    assert dev.ioctl(4, 0) == 4 and dev.ioctl(5, 0) == 4096
    j = Journal(dev)
    j.recover()
    for i in range(70):
        buy(j, i)
    j.ack(30)
    dev.close()
    dev = BlockFile(path)
    j = Journal(dev)
    assert j.recover() == 71 and j.watermark == 30
    assert unacked(j) == [expected(s, fields(s - 1)) for s in range(31, 71)]
    # NOR semantics: a program only clears bits
    b = bytearray(2)
    dev.writeblocks(3, b"\x0f\xf0", 100)
    dev.writeblocks(3, b"\xf3\x3f", 100)
    dev.readblocks(3, b, 100)
    assert b == b"\x03\x30"
    dev.close()
    os.remove(path)
