"""CRC-32 as every on-flash format here keeps it: one helper for sealing and checking.

    seal(buf, at)       write the CRC-32 of buf[:at] into buf[at:at + 4]
    sealed_ok(buf, at)  True if buf[at:at + 4] holds the CRC-32 of buf[:at]

CRC-32 is `binascii.crc32` (IEEE, as zlib), stored little-endian right after the
bytes it covers; `at` defaults to len(buf) - 4 (the CRC closes the buffer). Used by
the purchase records and the journal (docs/formats.md, "Purchase journal") and the
card table's pages, header, commit records and deltas ("Card table").

The check runs the CRC over the bytes and their stored CRC: for an intact buffer that
is always RESIDUE, and for no other stored value. Comparing it is a comparison of
small ints, so checking a whole buffer (the common case: a page, a record, a header
read into a buffer of its own size) allocates nothing on a 32-bit port; a shorter
`at + 4` costs one memoryview slice.
"""
import struct
from binascii import crc32

from cpos.compat import const

RESIDUE = const(0x2144DF1C)  # crc32(data + crc32(data) as <I), whatever the data


def seal(buf, at=-1):
    """Write the CRC-32 of buf[:at] little-endian at buf[at:at + 4] (`buf` writable)."""
    if at < 0:
        at = len(buf) - 4
    struct.pack_into("<I", buf, at, crc32(memoryview(buf)[:at]))


def sealed_ok(buf, at=-1):
    """True if buf[at:at + 4] is the CRC-32 of buf[:at] (default: the last 4 bytes)."""
    if at < 0 or at + 4 == len(buf):
        return crc32(buf) == RESIDUE
    return crc32(memoryview(buf)[:at + 4]) == RESIDUE
