"""A block device on a file, with the interface of `esp32.Partition` (runtime-neutral).

Lets the card table (and anything else written against a partition) run on the unix
port and CPython against a plain file, or on an ESP32 against a file on its
filesystem. Erase writes 0xFF; a program writes the bytes as given (the users erase
before they program, as NOR flash requires, so AND-ing is not modelled here; the
simulator's NorFlash models it, with power cuts).
"""


class BlockFile:
    def __init__(self, path, blocks, block_size=4096):
        self.block_size = block_size
        self.blocks = blocks
        self._blank = b"\xff" * block_size
        try:
            self.f = open(path, "r+b")
        except OSError:
            self.f = open(path, "w+b")
        size = self.f.seek(0, 2)
        while size < blocks * block_size:
            self.f.write(self._blank)
            size += block_size
        self.f.flush()

    def readblocks(self, block, buf, offset=0):
        start = block * self.block_size + offset
        if block < 0 or start + len(buf) > self.blocks * self.block_size:
            raise ValueError("read outside the device")
        self.f.seek(start)
        if self.f.readinto(buf) != len(buf):
            raise OSError("short read")

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            for i in range((len(buf) + self.block_size - 1) // self.block_size):
                self.ioctl(6, block + i)
            offset = 0
        start = block * self.block_size + offset
        if block < 0 or start + len(buf) > self.blocks * self.block_size:
            raise ValueError("write outside the device")
        self.f.seek(start)
        self.f.write(buf)
        self.f.flush()

    def ioctl(self, op, arg=0):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.block_size
        if op == 6:
            if arg < 0 or arg >= self.blocks:
                raise ValueError("erase outside the device")
            self.f.seek(arg * self.block_size)
            self.f.write(self._blank)
            self.f.flush()
            return 0
        return 0

    def close(self):
        self.f.close()
