"""A NOR-flash model with power cuts, offering esp32.Partition's block interface.

Runs on CPython and on the MicroPython unix port (device-side tests use it too).

Physics modelled:
- 4096-byte erase sectors (the partition's block size); erase sets every bit to 1.
- Program can only clear bits: new = old AND data.
- A power cut can land before, inside or after any program or erase. Inside a
  program, a pseudo-random subset of the bits that should clear has cleared; inside
  an erase, a pseudo-random subset of the sector's bits has been set (the sector is
  neither old nor erased). After a cut every operation raises PowerCut until
  `reboot()`; the bytes stay, as flash does.

Interface (as `esp32.Partition`):
  readblocks(block, buf, offset=0)
  writeblocks(block, buf)            erase the block(s), then program
  writeblocks(block, buf, offset)    program only, no erase
  ioctl(BLOCK_COUNT, 0), ioctl(BLOCK_SIZE, 0), ioctl(BLOCK_ERASE, block) (cpos.blockdev);
  INIT, DEINIT and SYNC return 0.

Checks for tests: `torn_overwrites` counts programs that touched bytes left by a torn
program or a torn erase of the same sector, before any erase of that sector.
Figures: `programs`, `erases`, `bytes_programmed`, `erase_counts` (per sector).
"""
from cpos.blockdev import BLOCK_COUNT, BLOCK_ERASE, BLOCK_SIZE

SECTOR = 4096

CUT_BEFORE = 0
CUT_INSIDE = 1
CUT_AFTER = 2


class PowerCut(Exception):
    """The power went: nothing after this point happened."""


class NorFlash:
    def __init__(self, size, sector=SECTOR, seed=1):
        if size % sector:
            raise ValueError("size must be a whole number of sectors")
        self.sector = sector
        self._blank = b"\xff" * sector
        self.mem = bytearray(size)
        self.erase_counts = [0] * (size // sector)
        self.wipe(seed)

    def wipe(self, seed=1):
        """Back to a factory-fresh (all-erased) part, without allocating a new buffer.

        Lets MicroPython tests reuse one flash buffer allocated early, before the
        heap fragments."""
        for i in range(len(self.erase_counts)):
            self.mem[i * self.sector:(i + 1) * self.sector] = self._blank
            self.erase_counts[i] = 0
        self.programs = self.erases = self.bytes_programmed = 0
        self.torn_overwrites = 0
        self._torn = []  # (start, end) byte ranges left by torn operations
        self._seed = seed or 1
        self.cut_at = None  # cut when the op counter reaches this number
        self.cut_mode = CUT_INSIDE
        self.ops = 0  # program and erase operations so far
        self.dead = False

    # -- power-cut control -------------------------------------------------
    def arm(self, op_index, mode=CUT_INSIDE):
        """Cut power at operation number `op_index` (counting from the current `ops`)."""
        self.cut_at = self.ops + op_index
        self.cut_mode = mode

    def reboot(self):
        self.dead = False
        self.cut_at = None

    def _rand(self):
        # xorshift32: the same sequence on both runtimes
        x = self._seed
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._seed = x
        return x

    def _begin(self):
        """Count an operation; returns the cut mode if power goes during it, else None."""
        if self.dead:
            raise PowerCut("flash used after a power cut without reboot()")
        op = self.ops
        self.ops += 1
        if self.cut_at is not None and op == self.cut_at:
            self.dead = True
            return self.cut_mode
        return None

    # -- the block-device interface ----------------------------------------
    def readblocks(self, block, buf, offset=0):
        if self.dead:
            raise PowerCut("flash read after a power cut without reboot()")
        start = block * self.sector + offset
        if start < 0 or start + len(buf) > len(self.mem):
            raise ValueError("read outside the partition")
        buf[:] = self.mem[start:start + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            n = (len(buf) + self.sector - 1) // self.sector
            for i in range(n):
                self.erase(block + i)
            offset = 0
        self.program(block * self.sector + offset, buf)

    def ioctl(self, op, arg=0):
        if op == BLOCK_COUNT:
            return len(self.mem) // self.sector
        if op == BLOCK_SIZE:
            return self.sector
        if op == BLOCK_ERASE:
            self.erase(arg)
            return 0
        return 0

    # -- operations ----------------------------------------------------------
    def program(self, addr, data):
        end = addr + len(data)
        if addr < 0 or end > len(self.mem):
            raise ValueError("program outside the partition")
        for s, e in self._torn:
            if addr < e and s < end:
                self.torn_overwrites += 1
                break
        cut = self._begin()
        if cut == CUT_BEFORE:
            raise PowerCut("before program")
        mem = self.mem
        if cut == CUT_INSIDE:
            for i in range(len(data)):
                r = self._rand() & 0xFF
                mem[addr + i] &= data[i] | r  # only some of the bits to clear have cleared
            self._torn.append((addr, end))
            raise PowerCut("inside program")
        for i in range(len(data)):
            mem[addr + i] &= data[i]
        self.programs += 1
        self.bytes_programmed += len(data)
        if cut == CUT_AFTER:
            raise PowerCut("after program")

    def erase(self, block):
        if block < 0 or block >= len(self.erase_counts):
            raise ValueError("erase outside the partition")
        start = block * self.sector
        end = start + self.sector
        cut = self._begin()
        if cut == CUT_BEFORE:
            raise PowerCut("before erase")
        mem = self.mem
        if cut == CUT_INSIDE:
            for i in range(start, end):
                mem[i] |= self._rand() & 0xFF  # some bits set, some not yet
            self._torn = [t for t in self._torn if t[1] <= start or t[0] >= end]
            self._torn.append((start, end))
            raise PowerCut("inside erase")
        mem[start:end] = self._blank
        self._torn = [t for t in self._torn if t[1] <= start or t[0] >= end]
        self.erases += 1
        self.erase_counts[block] += 1
        if cut == CUT_AFTER:
            raise PowerCut("after erase")
