"""The NOR-flash model (simulator/norflash.py) obeys NOR physics, on both runtimes."""
from simulator.norflash import NorFlash, PowerCut, CUT_BEFORE, CUT_INSIDE, CUT_AFTER


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
    f.writeblocks(0, b"\xf0", 0)
    b = bytearray(1)
    f.readblocks(0, b, 0)
    assert b[0] == 0x00
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
