"""A file that behaves as a raw flash partition: esp32.Partition's block interface.

Owns nothing but the mapping from block-device calls to file reads and writes, so
the journal keeps its log in a file on the unix port (and on CPython) exactly as it
does in a partition on the ESP32 (`esp32.Partition.find(...)`). NOR semantics are
kept: a program only clears bits (the file's bytes are ANDed with the data), an
erase sets a block to 0xFF. A new file is created erased. Runs on both runtimes.
Every write is flushed to the OS before the call returns, which survives the process
dying (the unix port's "power cut"); `sync=True` also fsyncs where the runtime can.

  readblocks(block, buf, offset=0)
  writeblocks(block, buf)          erase, then program
  writeblocks(block, buf, offset)  program only
  ioctl(BLOCK_COUNT), ioctl(BLOCK_SIZE), ioctl(BLOCK_ERASE, block) (cpos.blockdev); others return 0.
"""
from cpos.blockdev import BLOCK_COUNT, BLOCK_ERASE, BLOCK_SIZE
from cpos.compat import const

BLOCK = const(4096)
_PIECE = const(64)  # one journal record: the common program


_BLANKS = {}


def _blank(block):
    b = _BLANKS.get(block)
    if b is None:
        b = _BLANKS[block] = b"\xff" * block
    return b


class BlockFile:
    def __init__(self, path, size=None, block=BLOCK, readonly=False, sync=False):
        """Open `path`; with `size` (bytes, whole blocks) create or extend it erased."""
        self.block = block
        self.readonly = readonly
        self.sync = sync
        # Made once, while the heap is fresh, and shared by every device of the same
        # block size: a flash operation must not need a 4 KB allocation on a fragmented
        # heap (found by the firmware under the WROOM cap).
        self._blank = _blank(block)
        self._scratch = bytearray(_PIECE)
        self._piece = memoryview(self._scratch)
        self.erases = 0  # block erases done (benchmarks: which appends erased)
        try:
            self.f = open(path, "rb" if readonly else "r+b")
        except OSError:
            if readonly or size is None:
                raise
            self.f = open(path, "w+b")
        self.f.seek(0, 2)
        have = self.f.tell()
        if size is not None and have < size:
            if readonly:
                raise ValueError("file smaller than the partition size")
            if size % block:
                raise ValueError("size must be whole blocks")
            blank = memoryview(self._blank)  # a slice of bytes would copy 4 KB each time
            while have < size:
                self.f.write(blank[:min(block, size - have)])
                have = min(size, have + block)
            self.f.flush()
        self.size = size if size is not None else have - have % block

    def close(self):
        self.f.close()

    def readblocks(self, block, buf, offset=0):
        start = block * self.block + offset
        if start < 0 or start + len(buf) > self.size:
            raise ValueError("read outside the partition")
        self.f.seek(start)
        n = self.f.readinto(buf)
        if n != len(buf):
            raise OSError("short read")

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            for i in range((len(buf) + self.block - 1) // self.block):
                self.ioctl(BLOCK_ERASE, block + i)
            offset = 0
        start = block * self.block + offset
        if start < 0 or start + len(buf) > self.size:
            raise ValueError("program outside the partition")
        self._writable()
        # NOR: the new bytes are the old ones AND the data, a piece at a time.
        done = 0
        while done < len(buf):
            n = min(_PIECE, len(buf) - done)
            piece = self._piece[:n]
            self.f.seek(start + done)
            self.f.readinto(piece)
            for i in range(n):
                piece[i] &= buf[done + i]
            self.f.seek(start + done)
            self.f.write(piece)
            done += n
        self._flush()

    def ioctl(self, op, arg=0):
        if op == BLOCK_COUNT:
            return self.size // self.block
        if op == BLOCK_SIZE:
            return self.block
        if op == BLOCK_ERASE:
            if arg < 0 or arg >= self.size // self.block:
                raise ValueError("erase outside the partition")
            self._writable()
            self.f.seek(arg * self.block)
            self.f.write(self._blank)
            self._flush()
            self.erases += 1
            return 0
        return 0

    def _flush(self):
        self.f.flush()
        if self.sync:
            try:
                import os
                os.fsync(self.f.fileno())
            except (AttributeError, ImportError):  # MicroPython: no fsync
                pass

    def _writable(self):
        if self.readonly:
            raise OSError("read-only block file")
