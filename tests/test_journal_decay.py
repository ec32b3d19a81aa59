"""The purchase journal under bit decay (issue 13, point 5).

One bit flips, years after it was programmed, in a sector header or a record. Before the
recovery that does not trust one header alone, a flip in an older sector's header cut the
ring there (150 pending purchases -> 24 found, the watermark moved past the rest), and a
flip in the newest header rolled the sequence counter back. Here: every bit of every
header, and records, in journals with and without acknowledgements."""
import pytest

from cpos import purchase
from cpos.journal import Journal, SLOT
from simulator.norflash import NorFlash
import journal_check as jc

HDR_BYTES = 20


def pending_seqs(j):
    buf = bytearray(SLOT)
    out, s = [], 0
    while True:
        r = j.read(s, buf)
        if r is None:
            return out
        assert purchase.decode(buf) == jc.expected(r, jc.fields(r - 1)), r
        out.append(r)
        s = r + 1


def reopen(f):
    j = Journal(f)
    j.recover()
    return j


def test_reproduction_a_flip_in_an_older_header_keeps_all_150_pending():
    """The issue's reproduction: 150 pending purchases, one bit of sector 1's header flipped."""
    f, _ = jc.journal_with(150)
    f.flip(1 * 4096 + 5, 0x01)  # sector id's low byte... of the middle sector
    j = reopen(f)
    assert pending_seqs(j) == list(range(1, 151))  # was 24: sectors 0 and 1 fell out of the ring
    assert j.watermark == 0  # was 126: moved past records never uploaded
    assert j.next_seq == 151


def test_reproduction_a_flip_in_the_newest_header_does_not_roll_the_sequence_back():
    f, _ = jc.journal_with(150)
    f.flip(2 * 4096 + 9, 0x10)  # first seq of the newest sector (the head)
    j = reopen(f)
    assert j.next_seq == 151  # was 127: seqs 127..150 would have been handed out again
    assert pending_seqs(j) == list(range(1, 151))
    seq = j.append(*jc.fields(150))
    assert seq == 151
    assert pending_seqs(reopen(f)) == list(range(1, 152))


@pytest.mark.parametrize("acked", [0, 40, 100, 140])
@pytest.mark.parametrize("sector", [0, 1, 2])
def test_every_bit_of_every_header(sector, acked):
    """Each of the 160 bits of each header, flipped alone: nothing pending lost, the
    watermark never above what was acknowledged, the next seq never lower, the damage seen."""
    f, j0 = jc.journal_with(150, acked)
    image = bytes(f.mem)
    for bit in range(HDR_BYTES * 8):
        f.mem[:] = image
        f.flip(sector * 4096 + bit // 8, 1 << (bit % 8))
        j = reopen(f)
        assert j.next_seq == 151, bit
        assert j.watermark == acked, (bit, j.watermark)
        assert pending_seqs(j) == list(range(acked + 1, 151)), bit
        assert j.damage()["headers"] == 1, (bit, j.damage())


def test_a_decayed_ring_keeps_working_and_heals_when_the_sector_is_reused():
    """Appends and acks after the decay: the sector with the damaged header is released only
    once acknowledged, then erased and reopened, and the damage report is empty again."""
    f, _ = jc.journal_with(150, nsec=4)
    f.flip(1 * 4096 + 13, 0x80)  # the watermark field of sector 1's header
    j = reopen(f)
    assert j.damage()["headers"] == 1
    for i in range(150, 170):
        j.append(*jc.fields(i))
    j.ack(170)
    for i in range(170, 300):
        j.append(*jc.fields(i))
    j.ack(300)
    for i in range(300, 370):  # the ring comes round to sector 1 again: erased, reopened
        j.append(*jc.fields(i))
    assert f.erase_counts[1] == 2  # opened twice: the decayed header is gone
    j = reopen(f)
    assert pending_seqs(j) == list(range(301, 371))
    assert j.damage()["headers"] == 0


@pytest.mark.parametrize("seed", range(1, 41))
def test_decay_anywhere_in_an_older_sector(seed):
    """`decay(seed)`: a bit of any non-blank byte of an older sector, header or record.
    A decayed record is one bit from a valid one: repaired, counted, not skipped."""
    f, _ = jc.journal_with(150, 30)
    addr, mask = f.decay(seed)
    assert addr < 2 * 4096  # sectors 0 and 1 (2 is the newest)
    j = reopen(f)
    assert j.next_seq == 151 and j.watermark == 30
    assert pending_seqs(j) == list(range(31, 151))
    d = j.damage()
    slot = (addr % 4096) // SLOT
    if slot == 0:
        assert d["headers"] == 1
    else:
        assert d["headers"] == 0
        if 30 < (addr // 4096) * 63 + slot:  # a pending record (read back above): repaired once
            assert d["records_repaired"] >= 1, d


def test_a_flip_in_an_ack_record_never_raises_the_watermark():
    f, j = jc.journal_with(100, 0)
    j.ack(60)  # ack record in the head (sector 1)
    at = 1 * 4096 + (100 - 63 + 1) * SLOT  # the slot after the last purchase
    image = bytes(f.mem)
    for bit in range(12 * 8):
        f.mem[:] = image
        f.flip(at + bit // 8, 1 << (bit % 8))
        j = reopen(f)
        assert j.watermark in (0, 60)  # lost (re-upload; the backend dedupes) or kept, never other
        assert pending_seqs(j) == list(range(j.watermark + 1, 101))


def destroy_header(f, sector, size=4096):
    """Two bits of a header: beyond a one-bit repair, as several decayed bits would be."""
    f.flip(sector * size + 4, 0x01)
    f.flip(sector * size + 10, 0x40)


@pytest.mark.parametrize("acked", [0, 40])
@pytest.mark.parametrize("sector", [0, 1, 2])
def test_a_header_beyond_repair_is_placed_from_its_records(sector, acked):
    f, _ = jc.journal_with(150, acked)
    destroy_header(f, sector)
    j = reopen(f)
    assert j.next_seq == 151 and j.watermark == acked
    assert pending_seqs(j) == list(range(acked + 1, 151))
    assert j.damage() == {"headers": 1, "orphans": 0, "records_repaired": 0}


def test_neighbouring_headers_beyond_repair_are_placed_one_from_the_other():
    f, _ = jc.journal_with(150)
    destroy_header(f, 0)
    destroy_header(f, 1)
    j = reopen(f)
    assert pending_seqs(j) == list(range(1, 151)) and j.next_seq == 151
    assert j.damage()["headers"] == 2


def test_a_ring_with_no_readable_header_keeps_its_purchases_for_the_rescue():
    """Nothing to anchor the records to: the sectors are orphans, reported, never erased,
    and the sequence goes on above them; the rescue reads them (host_tools.rescue)."""
    from host_tools.rescue import rescue

    f, _ = jc.journal_with(100, nsec=4)  # sectors 0 and 1
    destroy_header(f, 0)
    destroy_header(f, 1)
    lines = []
    from cpos.log import Log
    j = Journal(f, log=Log(lines.append))
    assert j.recover() == 101
    assert j.damage()["orphans"] == 2
    assert sum(1 for x in lines if x.startswith("E journal: sector") and "cpos rescue" in x) == 2
    before = bytes(f.mem[:2 * 4096])
    n = 0
    while True:  # the terminal goes on in the two other sectors until they are full
        try:
            j.append(*jc.fields(100 + n))
        except Exception as e:
            assert type(e).__name__ == "JournalFull"
            break
        n += 1
        assert n < 200
    assert bytes(f.mem[:2 * 4096]) == before  # the orphans were never erased
    assert n == 63  # one sector of purchases, one kept in reserve for acks
    seqs = [r["seq"] for r, _ in rescue(bytes(f.mem))]
    assert seqs == list(range(1, 101 + n))


def test_decay_is_logged_as_an_error():
    from cpos.log import Log

    f, _ = jc.journal_with(150)
    f.flip(1 * 4096 + 5, 0x01)  # a header: repaired at recovery
    f.flip(0 * 4096 + 3 * SLOT + 20, 0x04)  # purchase 3: repaired when read
    lines = []
    j = Journal(f, log=Log(lines.append))
    j.recover()
    assert lines == ["E journal: sector 1 header failed its checksum: one bit repaired "
                     "(flash decay, or a cut while it was written)"]
    assert pending_seqs(j) == list(range(1, 151))
    assert pending_seqs(j) == list(range(1, 151))  # read twice (the uplink resends): logged once
    assert lines[1:] == ["E journal: purchase seq 3 (sector 0 slot 3) failed its checksum: one bit repaired "
                         "(flash decay)"]
    assert j.damage() == {"headers": 1, "orphans": 0, "records_repaired": 1}


def _play(name):
    """Workload `name` of the power-cut harness played without cuts on a once-mode flash:
    (flash, journal, last seq, watermark acknowledged)."""
    nsec, sector, workload = jc.WORKLOADS[name]
    f = NorFlash(nsec * sector, sector=sector, once=True)
    j = Journal(f)
    j.recover()
    last = acked = 0
    i = 0
    which = {}  # seq -> index of its fields
    for st in jc.steps(workload):
        if st[0] == "a":
            try:
                last = j.append(*jc.fields(i))
                which[last] = i
            except Exception as e:
                assert type(e).__name__ == "JournalFull"
            i += 1
        elif st[0] in "kK":
            w = max(0, last - st[1]) if st[0] == "k" else min(st[1], last)
            try:
                j.ack(w)
                acked = max(acked, w)
            except Exception as e:
                assert type(e).__name__ == "JournalFull"
        elif st[0] == "p":
            j.prepare()
        elif st[0] == "b":
            j = reopen(f)
    return f, j, last, acked, which


@pytest.mark.parametrize("name", ["laps", "geometry", "chatty", "reboots"])
def test_decay_sweep_over_the_power_cut_workloads(name):
    """The decay mode of the flash model on the harness's workloads: 60 seeds each, one bit
    of an older sector flipped, then a boot. The sequence goes on where it was, every pending
    purchase comes back with its content (repaired if it was the one hit), the watermark is
    never above what was acknowledged, and where it is lower (an ack record hit: the backend
    receives those records again and keeps each once) only real records come back."""
    f, j, last, acked, which = _play(name)
    image = bytes(f.mem)
    hit = {"header": 0, "record": 0}
    for seed in range(1, 61):
        f.mem[:] = image
        addr, _ = f.decay(seed)
        hit["header" if addr % f.sector < HDR_BYTES else "record"] += 1
        j = reopen(f)
        assert j.next_seq == last + 1, (seed, j.next_seq, last)
        assert j.watermark <= acked, (seed, j.watermark, acked)
        buf = bytearray(SLOT)
        got, s = [], 0
        while (r := j.read(s, buf)) is not None:
            assert purchase.decode(buf) == jc.expected(r, jc.fields(which[r])), (seed, r)
            got.append(r)
            s = r + 1
        assert got == list(range(j.watermark + 1, last + 1)), seed
        assert j.damage()["orphans"] == 0
    assert hit["header"] and hit["record"], hit


def test_one_bit_repair_is_exact_and_refuses_two():
    from cpos.bitfix import fix_one_bit

    good = bytearray(SLOT)
    purchase.encode_into(good, 77, *jc.fields(5))
    for bit in range(SLOT * 8):
        b = bytearray(good)
        b[bit // 8] ^= 1 << (bit % 8)
        assert fix_one_bit(b, purchase.is_valid) == bit and b == good, bit
    for a, c in ((0, 9), (40, 300), (100, 511)):
        b = bytearray(good)
        b[a // 8] ^= 1 << (a % 8)
        b[c // 8] ^= 1 << (c % 8)
        before = bytes(b)
        assert fix_one_bit(b, purchase.is_valid) == -1 and b == before
