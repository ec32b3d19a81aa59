"""Reading request lines from a POS with a fixed bound: no allocation of the sender's size.

Owns `LineReader`: `await r.readline()` returns the next line (bytes, LF included) of at
most `lines.MAX_LINE + 2` bytes, or `TOO_LONG` for a longer one, whose bytes are read
in small pieces and thrown away up to its LF; b"" at the end of the stream. A POS (or
anything plugged into its port) that sends a megabyte without a newline therefore costs
the terminal one 64-byte read buffer and one fixed line buffer, never a MemoryError
(asyncio's own `readline()` grows a buffer until the LF comes). Runtime-neutral: only
`stream.read(n)`, which both runtimes' streams have.
"""
from cpos.compat import const
from cpos.pos import lines

TOO_LONG = object()  # readline()'s answer for a line longer than the bound
_CHUNK = const(64)


class LineReader:
    def __init__(self, stream, bound=lines.MAX_LINE + 2):
        self.stream = stream
        self.bound = bound
        self._buf = bytearray(bound)
        self._n = 0  # bytes of the current line held in _buf
        self._rest = b""  # bytes read past the last LF, not yet looked at
        self.too_long = 0  # lines refused for their length

    async def _more(self):
        if self._rest:
            b, self._rest = self._rest, b""
            return b
        return await self.stream.read(_CHUNK)

    async def readline(self):
        skipping = False
        while True:
            b = await self._more()
            if not b:
                self._n = 0
                return b""  # end of stream (a partial line without LF is dropped)
            i = b.find(b"\n")
            part = b if i < 0 else b[:i + 1]
            if i >= 0 and i + 1 < len(b):
                self._rest = b[i + 1:]
            if not skipping:
                if self._n + len(part) > self.bound:
                    skipping = True
                    self._n = 0
                else:
                    self._buf[self._n:self._n + len(part)] = part
                    self._n += len(part)
            if i >= 0:
                if skipping:
                    self.too_long += 1
                    return TOO_LONG
                out = bytes(self._buf[:self._n])
                self._n = 0
                return out
