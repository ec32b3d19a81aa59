"""The NOR-flash model (simulator/norflash.py) obeys NOR physics, on both runtimes."""
from simulator.norflash import NorFlash, PowerCut, ModelError, CUT_BEFORE, CUT_INSIDE, CUT_AFTER, TEARS


def cut(fn):
    try:
        fn()
    except PowerCut:
        return True
    raise AssertionError("no power cut")


def test_interface_like_esp32_partition():
    f = NorFlash(8 * 4096)
    assert f.ioctl(4, 0) == 8 and f.ioctl(5, 0) == 4096
    buf = bytearray(16)
    f.readblocks(2, buf, 100)
    assert buf == b"\xff" * 16
    f.writeblocks(2, b"hello", 100)
    f.readblocks(2, buf, 100)
    assert bytes(buf[:5]) == b"hello" and buf[5] == 0xFF
    assert f.erase_counts[2] == 0
    f.writeblocks(3, b"x" * 10)  # no offset: erase then write
    assert f.erase_counts[3] == 1
    f.ioctl(6, 2)
    f.readblocks(2, buf, 100)
    assert buf == b"\xff" * 16


def test_program_only_clears_bits():
    f = NorFlash(4096)
    f.writeblocks(0, b"\x0f", 0)
    f.writeblocks(0, b"\x0e", 0)  # clearing one more bit of a programmed byte: legal NOR
    f.writeblocks(0, b"\xff", 0)  # 0xFF leaves the byte alone
    b = bytearray(1)
    f.readblocks(0, b, 0)
    assert b[0] == 0x0E
    f.ioctl(6, 0)
    f.readblocks(0, b, 0)
    assert b[0] == 0xFF


def test_cut_before_changes_nothing():
    f = NorFlash(4096)
    f.arm(0, CUT_BEFORE)
    cut(lambda: f.writeblocks(0, b"\x00" * 8, 0))
    assert f.mem[:8] == b"\xff" * 8
    cut(lambda: f.readblocks(0, bytearray(1)))  # dead until reboot
    f.reboot()
    f.writeblocks(0, b"\x00", 0)
    assert f.mem[0] == 0


def test_cut_after_completes_the_operation():
    f = NorFlash(4096)
    f.arm(0, CUT_AFTER)
    cut(lambda: f.writeblocks(0, b"\x00" * 8, 0))
    assert f.mem[:8] == b"\x00" * 8


def test_cut_inside_program_is_partial_and_tracked():
    f = NorFlash(4096, seed=7)
    f.arm(0, CUT_INSIDE)
    cut(lambda: f.writeblocks(0, b"\x00" * 64, 0))
    torn = f.mem[:64]
    assert torn != b"\x00" * 64 and torn != b"\xff" * 64
    f.reboot()
    f.writeblocks(0, b"\x00", 200)
    assert f.torn_overwrites == 0
    f.writeblocks(0, b"\x00", 10)  # on top of torn bytes
    assert f.torn_overwrites == 1
    f.ioctl(6, 0)
    f.writeblocks(0, b"\x00", 10)  # erased since: fine
    assert f.torn_overwrites == 1


def test_cut_inside_erase_leaves_sector_neither_old_nor_erased():
    f = NorFlash(2 * 4096, seed=3)
    f.writeblocks(0, b"\x00" * 4096, 0)
    f.arm(0, CUT_INSIDE)
    cut(lambda: f.ioctl(6, 0))
    f.reboot()
    s = bytes(f.mem[:4096])
    assert s != b"\x00" * 4096 and s != b"\xff" * 4096
    assert f.erase_counts[0] == 0
    f.writeblocks(0, b"\x00", 5)
    assert f.torn_overwrites == 1


def test_operations_are_counted():
    f = NorFlash(4 * 4096)
    f.writeblocks(1, b"abc")
    f.writeblocks(1, b"def", 10)
    assert (f.ops, f.erases, f.programs, f.bytes_programmed) == (3, 1, 2, 6)
    f.arm(1)
    f.ioctl(6, 2)
    cut(lambda: f.ioctl(6, 3))
    assert f.ops == 5


def test_out_of_range_is_refused():
    f = NorFlash(4096)
    for fn in (lambda: f.readblocks(1, bytearray(1)), lambda: f.ioctl(6, 1),
               lambda: f.writeblocks(0, b"x", 4096)):
        try:
            fn()
        except ValueError:
            continue
        raise AssertionError("accepted")


def _ones(b):
    n = 0
    for x in b:
        while x:
            n += x & 1
            x >>= 1
    return n


def raises(exc, fn):
    try:
        fn()
    except exc:
        return
    raise AssertionError("%s not raised" % exc.__name__)


def test_program_asking_for_0_to_1_is_a_model_error():
    f = NorFlash(4096)
    f.writeblocks(0, b"\x0f\x0f", 0)
    raises(ModelError, lambda: f.writeblocks(0, b"\xf0", 0))
    assert f.mem[0] == 0x0F and f.ops == 1  # refused before anything happened
    raises(ModelError, lambda: f.writeblocks(0, b"\x00\x1f", 0))  # second byte wants a bit back
    f.ioctl(6, 0)
    f.writeblocks(0, b"\xf0", 0)  # after an erase: fine
    assert f.mem[0] == 0xF0


def test_once_mode_refuses_any_second_program_of_a_byte():
    f = NorFlash(4096, once=True)
    f.writeblocks(0, b"\x0f\xff", 0)
    raises(ModelError, lambda: f.writeblocks(0, b"\x0e", 0))  # would read back right: still twice
    f.writeblocks(0, b"\xff\x00", 0)  # 0xFF over it, the blank byte beside: fine
    assert bytes(f.mem[:2]) == b"\x0f\x00"


def test_torn_program_does_the_asked_fraction_of_its_bits():
    """3 %, 50 % and 97 % of the 1 -> 0 bits done (within sampling error), nothing else."""
    n = 1024
    for tear in (0.03, 0.5, 0.97):
        f = NorFlash(4096, seed=11)
        f.writeblocks(0, b"\xf0" * n, 0)  # half the bits already 0: only the rest may change
        f.arm(0, CUT_INSIDE, tear)
        cut(lambda: f.writeblocks(0, b"\x00" * n, 0))
        done = 4 * n - _ones(f.mem[:n])
        assert abs(done - tear * 4 * n) < 0.02 * 4 * n + 8, (tear, done)
        for x in f.mem[:n]:
            assert x & 0x0F == 0 and x | 0xF0 == 0xF0  # no bit went 0 -> 1, none outside the program
        assert f.last_tear == tear and f.programs == 1  # the torn one is not counted


def test_torn_program_fraction_is_drawn_from_the_seed_when_not_given():
    seen = []
    for seed in range(1, 9):
        f = NorFlash(4096, seed=seed)
        f.arm(0, CUT_INSIDE)
        cut(lambda: f.writeblocks(0, b"\x00" * 256, 0))
        seen.append(f.last_tear)
        g = NorFlash(4096, seed=seed)
        g.arm(0, CUT_INSIDE)
        cut(lambda: g.writeblocks(0, b"\x00" * 256, 0))
        assert g.mem[:256] == f.mem[:256]  # deterministic: same seed, same bits
    assert min(seen) < 0.3 and max(seen) > 0.7, seen


def test_torn_erase_leaves_random_bits_or_the_asked_fraction():
    f = NorFlash(2 * 4096, seed=5)
    f.writeblocks(0, b"\xaa" * 4096, 0)
    f.arm(0, CUT_INSIDE)  # no fraction: random bits, zeros where there were ones too
    cut(lambda: f.ioctl(6, 0))
    f.reboot()
    s = f.mem[:4096]
    ones = _ones(s)
    assert 0.45 * 32768 < ones < 0.55 * 32768, ones
    assert any(x & 0xAA != 0xAA for x in s)  # some bit that was 1 reads 0
    assert f.erases == 0 and f.last_tear is None
    for tear in (0.03, 0.97):
        f.writeblocks(1, b"\x00" * 4096)  # erase + program: all zeros
        f.arm(0, CUT_INSIDE, tear)
        cut(lambda: f.ioctl(6, 1))
        f.reboot()
        ones = _ones(f.mem[4096:])
        assert abs(ones - tear * 32768) < 0.02 * 32768, (tear, ones)


def test_decay_flips_one_bit_in_an_older_programmed_sector():
    f = NorFlash(4 * 4096)
    f.writeblocks(1, b"\x12" * 30, 0)
    f.writeblocks(2, b"\x34" * 30, 0)  # written last: not "older"
    before = bytes(f.mem)
    for seed in range(1, 20):
        f.mem[:] = before
        addr, mask = f.decay(seed)
        assert 4096 <= addr < 4096 + 30 and _ones([mask]) == 1
        diff = [i for i in range(len(before)) if f.mem[i] != before[i]]
        assert diff == [addr] and f.mem[addr] ^ before[addr] == mask
    f.mem[:] = before
    a = f.decay(7, sector=2, span=(4, 8))
    f.mem[:] = before
    assert f.decay(7, sector=2, span=(4, 8)) == a and 2 * 4096 + 4 <= a[0] < 2 * 4096 + 8
    raises(ValueError, lambda: f.decay(1, sector=3))  # blank: nothing to decay
    g = NorFlash(2 * 4096)
    g.writeblocks(0, b"x", 0)
    raises(ValueError, lambda: g.decay(1))  # the only non-blank sector is the newest


def test_sweep_tears_cover_the_issue_fractions():
    assert 0.03 in TEARS and 0.5 in TEARS and 0.97 in TEARS and None in TEARS
