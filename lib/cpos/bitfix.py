"""One-bit repair of CRC-sealed flash records (journal headers and purchase records).

Owns one question: is this slot, whose checksum fails, exactly one bit away from a valid
record? A single decayed bit (charge loss or a read disturb years after the program) turns
a good record into one that fails its CRC-32; flipping each bit in turn and checking again
finds it. CRC-32 over at most 64 bytes has a Hamming distance of at least 4, so at most one
single-bit flip can make a damaged record valid: the repair is unambiguous, and anything
two or more bits away (a torn program, random bits of a torn erase) stays unrepaired.

Costs one scratch-free pass: the buffer is repaired in place and restored if nothing
fits (at most 8 x len(buf) validity checks; only run on slots that already failed).
Runs on MicroPython and CPython.
"""


def fix_one_bit(buf, valid, length=None):
    """Find the one bit of buf[0:length] whose flip makes `valid(buf)` true.

    On success the flip stays in `buf` and the bit's index (byte * 8 + bit) is
    returned; otherwise `buf` is left as it was and -1 is returned."""
    n = len(buf) if length is None else length
    for i in range(n):
        b = buf[i]
        m = 1
        while m < 256:
            buf[i] = b ^ m
            if valid(buf):
                return i * 8 + _log2(m)
            m <<= 1
        buf[i] = b
    return -1


def _log2(m):
    k = 0
    while m > 1:
        m >>= 1
        k += 1
    return k
