"""The MDB vend log (cpos.mdb.vendlog) on NOR flash with power cuts, on both runtimes.

- notes survive restarts and wrap round the sectors;
- a power cut before, inside or after every program and erase of a long run leaves
  `settled` at the last note that completed or the one being written (never beyond,
  never behind), and the log keeps working after the restart;
- a torn program or erase is never written over (the NOR model counts such writes).
"""
from cpos.mdb.vendlog import BASELINE, VendLog
from simulator.norflash import CUT_AFTER, CUT_BEFORE, CUT_INSIDE, NorFlash, PowerCut

SECTOR = 256  # 32 entries a sector: a short run wraps the log several times
NOTES = 80


def test_notes_survive_restarts_and_wrap():
    f = NorFlash(3 * SECTOR, sector=SECTOR)
    log = VendLog(f)
    assert log.recover() == -1
    log.note(5, BASELINE)
    for s in range(6, 6 + NOTES):
        log.note(s)
    log.note(10)  # older than settled: nothing written
    assert log.writes == NOTES + 1
    again = VendLog(f)
    assert again.recover() == 5 + NOTES
    again.note(6 + NOTES)
    assert VendLog(f).recover() == 6 + NOTES
    assert f.erases >= 2 and f.torn_overwrites == 0


def test_a_power_cut_at_every_flash_operation():
    f = NorFlash(2 * SECTOR, sector=SECTOR)
    runs = 0
    for mode in (CUT_BEFORE, CUT_INSIDE, CUT_AFTER):
        k = 0
        while True:
            f.wipe(seed=k + 7)
            log = VendLog(f)
            log.recover()
            f.arm(k, mode)
            done = 0
            try:
                for s in range(1, NOTES + 1):
                    log.note(s)
                    done = s
            except PowerCut:
                pass
            else:
                break  # the run ended before operation k: every operation was cut once
            f.reboot()
            log = VendLog(f)
            got = log.recover()
            assert got in (done, done + 1) or (got == -1 and done == 0), (mode, k, done, got)
            complete = f.programs  # one program per note: the notes that reached flash whole
            if mode != CUT_INSIDE:
                assert got == (complete if complete else -1), (mode, k, complete, got)
            for s in range(max(got, 0) + 1, max(got, 0) + 40):  # it goes on working, wrapping again
                log.note(s)
            assert VendLog(f).recover() == max(got, 0) + 39
            assert f.torn_overwrites == 0, (mode, k)
            runs += 1
            k += 1
    assert runs > 3 * NOTES, runs


def test_a_decayed_bit_in_the_erased_space_is_stepped_over():
    """A bit of the next free slot that reads 0 (decay, or a disturbed erase): the note
    goes to the slot after it instead of being programmed over it."""
    f = NorFlash(2 * SECTOR, sector=SECTOR)
    log = VendLog(f)
    log.recover()
    for s in (1, 2, 3):
        log.note(s)
    at = log._sec * SECTOR + log._slot * 8
    f.mem[at + 5] &= 0xFE  # the mark byte A5 would read A4
    log.note(4)
    assert VendLog(f).recover() == 4
