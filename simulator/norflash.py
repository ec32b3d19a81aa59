"""A NOR-flash model with power cuts, torn operations and bit decay, offering
esp32.Partition's block interface.

Runs on CPython and on the MicroPython unix port (device-side tests use it too).
Everything random comes from a seeded xorshift32, so a run is the same on both runtimes.

Physics modelled:
- 4096-byte erase sectors (the partition's block size); erase sets every bit to 1.
- Program can only clear bits: new = old AND data.
- A power cut can land before, inside or after any program or erase (`arm`). After a cut
  every operation raises PowerCut until `reboot()`; the bytes stay, as flash does.
- Inside a program (a torn program): a fraction `tear` of the bits the program should
  clear (1 -> 0) have cleared, each bit independently; the rest still read 1.
  `tear=None` draws a fraction for the cut from the seed (anywhere in 0..100 %).
- Inside an erase (a torn erase): `tear=None` leaves random bits (every bit of the sector
  0 or 1 at random: an interrupted erase is neither old nor erased, and it may even show
  zeros where there were ones); a number leaves that fraction of the sector's 0 bits set.
- Decay (`decay(seed)`): one bit flips in an older, non-blank sector (not the one written
  last), as charge loss or a read disturb does after years. `flip(addr, mask)` flips
  chosen bits, for tests that aim at one field.

Model errors (raise ModelError: a bug in the code under test, never physics). Which NOR
semantics are allowed, decided here for every user of the model:
- Allowed: programming bits 1 -> 0, also in bytes programmed before (NOR parts take
  several programs per page without an erase: commit bits and tombstones rely on it), and
  programming 0xFF over anything (a 1 bit in program data means "leave this bit alone").
- Error: a data byte other than 0xFF that would not read back as written because a bit
  the data wants 1 is already 0 (asking for 0 -> 1 without an erase): the writer lost
  track of what is on flash, or forgot the erase.
- Error when `once=True` (structures that promise each byte is programmed once between
  erases, like the purchase journal): any data byte other than 0xFF over a byte that is
  not 0xFF, even if the result would read back right.
- Counted, not raised (`torn_overwrites`): a program that touches bytes left by a torn
  program or a torn erase of the same sector, before that sector's next erase. Such bytes
  may read 1 and still not hold a charge: a program over them is unreliable on a real part.

Interface (as `esp32.Partition`):
  readblocks(block, buf, offset=0)
  writeblocks(block, buf)            erase the block(s), then program
  writeblocks(block, buf, offset)    program only, no erase
  ioctl(BLOCK_COUNT, 0), ioctl(BLOCK_SIZE, 0), ioctl(BLOCK_ERASE, block) (cpos.blockdev);
  INIT, DEINIT and SYNC return 0.

Test control, small on purpose:
  NorFlash(size, sector=4096, seed=1, once=False)
  arm(n, mode=CUT_INSIDE, tear=None)  cut power at the n-th program/erase from now
  reboot()                            power back
  decay(seed, sector=None, span=None) flip one bit; returns (address, bit mask)
  flip(addr, mask)                    flip exactly these bits
  wipe(seed)                          factory-fresh again, same buffer
Figures: `ops`, `programs`, `erases`, `bytes_programmed`, `erase_counts` (per sector),
`torn_overwrites`, `last_tear` (fraction used by the last torn operation, or None for
random bits), `last_sector` (sector of the last program or erase).
"""
from cpos.blockdev import BLOCK_COUNT, BLOCK_ERASE, BLOCK_SIZE

SECTOR = 4096

CUT_BEFORE = 0
CUT_INSIDE = 1
CUT_AFTER = 2

# The torn-program fractions every power-cut sweep tries (issue 13: 3 %, 50 %, 97 %),
# and None: a fraction drawn from the seed for programs, random bits for erases.
TEARS = (0.03, 0.5, 0.97, None)


class PowerCut(Exception):
    """The power went: nothing after this point happened."""


class ModelError(Exception):
    """The code under test asked the flash for something NOR cannot do (see the module doc)."""


class Xorshift32:
    """xorshift32: the same sequence on both runtimes (the model's randomness, and the test
    data of tests/device/cardtable_model.py)."""

    def __init__(self, seed):
        self.x = (seed & 0xFFFFFFFF) or 1

    def next(self):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x

    def below(self, n):
        return self.next() % n


def _bits_done(rng, mask, p16):
    """The bits of `mask` that got done, each with probability p16 / 65536."""
    out = 0
    b = 1
    while b < 256:
        if mask & b and (rng.next() & 0xFFFF) < p16:
            out |= b
        b <<= 1
    return out


class NorFlash:
    def __init__(self, size, sector=SECTOR, seed=1, once=False):
        if size % sector:
            raise ValueError("size must be a whole number of sectors")
        self.sector = sector
        self.once = once
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
        self._rng = Xorshift32(seed or 1)
        self.cut_at = None  # cut when the op counter reaches this number
        self.cut_mode = CUT_INSIDE
        self.cut_tear = None
        self.last_tear = None
        self.last_sector = -1
        self.ops = 0  # program and erase operations so far
        self.dead = False

    @property
    def _seed(self):
        """The random state (cardtable_model's save/restore keeps it)."""
        return self._rng.x

    # -- power-cut control -------------------------------------------------
    def arm(self, op_index, mode=CUT_INSIDE, tear=None):
        """Cut power at operation number `op_index` (counting from the current `ops`).

        `tear` (for CUT_INSIDE): the fraction 0..1 of the operation's bit changes that
        happened; None: drawn from the seed (programs), random bits (erases)."""
        if tear is not None and not 0 <= tear <= 1:
            raise ValueError("tear is a fraction 0..1")
        self.cut_at = self.ops + op_index
        self.cut_mode = mode
        self.cut_tear = tear

    def reboot(self):
        self.dead = False
        self.cut_at = None

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

    # -- decay ---------------------------------------------------------------
    def flip(self, addr, mask):
        """Flip the bits `mask` of the byte at `addr` (decay aimed by a test)."""
        if addr < 0 or addr >= len(self.mem) or not 0 < mask < 256:
            raise ValueError("flip outside the partition")
        self.mem[addr] ^= mask

    def decay(self, seed, sector=None, span=None):
        """Flip one bit of a non-blank byte in an older sector; returns (address, mask).

        The sector is `sector`, or one picked by `seed` among the sectors that hold a
        non-0xFF byte, the sector written last excluded. `span` = (start, end) offsets
        inside the sector limits where (e.g. a header: (0, 20)). The bit is picked by
        `seed` among the bytes there that are not 0xFF; it may flip either way.
        Raises ValueError if there is nothing to decay."""
        rng = Xorshift32(seed * 2654435761 + 1)
        s0, s1 = span if span is not None else (0, self.sector)
        if sector is None:
            cands = []
            for s in range(len(self.erase_counts)):
                if s != self.last_sector and self._dirty_count(s, s0, s1):
                    cands.append(s)
            if not cands:
                raise ValueError("no older non-blank sector to decay")
            sector = cands[rng.below(len(cands))]
        n = self._dirty_count(sector, s0, s1)
        if not n:
            raise ValueError("nothing programmed there to decay")
        k = rng.below(n)
        base = sector * self.sector
        for a in range(base + s0, base + s1):
            if self.mem[a] != 0xFF:
                if k == 0:
                    mask = 1 << rng.below(8)
                    self.mem[a] ^= mask
                    return a, mask
                k -= 1
        raise AssertionError("unreachable")

    def _dirty_count(self, s, s0, s1):
        base = s * self.sector
        m = self.mem
        n = 0
        for a in range(base + s0, base + s1):
            if m[a] != 0xFF:
                n += 1
        return n

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
    def _tear16(self):
        """This cut's tear fraction in 1/65536 units, recorded in `last_tear`."""
        t = self.cut_tear
        if t is None:
            p = self._rng.below(65537)
            self.last_tear = p / 65536
            return p
        self.last_tear = t
        return int(t * 65536 + 0.5)

    def program(self, addr, data):
        end = addr + len(data)
        if addr < 0 or end > len(self.mem):
            raise ValueError("program outside the partition")
        mem = self.mem
        for i in range(len(data)):
            d = data[i]
            if d != 0xFF:
                o = mem[addr + i]
                if o & d != d:
                    raise ModelError("program asks for 0 -> 1 at 0x%x (0x%02x over 0x%02x) without an erase"
                                     % (addr + i, d, o))
                if self.once and o != 0xFF:
                    raise ModelError("byte 0x%x programmed twice without an erase" % (addr + i))
        for s, e in self._torn:
            if addr < e and s < end:
                self.torn_overwrites += 1
                break
        cut = self._begin()
        if cut == CUT_BEFORE:
            raise PowerCut("before program")
        self.last_sector = addr // self.sector
        if cut == CUT_INSIDE:
            p16 = self._tear16()
            rng = self._rng
            for i in range(len(data)):
                o = mem[addr + i]
                todo = o & ~data[i] & 0xFF  # bits this program clears
                if todo:
                    mem[addr + i] = o & ~_bits_done(rng, todo, p16)
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
        self.last_sector = block
        if cut == CUT_INSIDE:
            rng = self._rng
            if self.cut_tear is None:
                self.last_tear = None
                for i in range(start, end):
                    mem[i] = rng.next() & 0xFF  # neither old nor erased: random bits
            else:
                p16 = self._tear16()
                for i in range(start, end):
                    o = mem[i]
                    if o != 0xFF:
                        mem[i] = o | _bits_done(rng, ~o & 0xFF, p16)
            self._torn = [t for t in self._torn if t[1] <= start or t[0] >= end]
            self._torn.append((start, end))
            raise PowerCut("inside erase")
        mem[start:end] = self._blank
        self._torn = [t for t in self._torn if t[1] <= start or t[0] >= end]
        self.erases += 1
        self.erase_counts[block] += 1
        if cut == CUT_AFTER:
            raise PowerCut("after erase")
