"""PN532 frame codec: building host frames and finding chip frames in a byte stream.

Owns the byte format of the PN532 host link (user manual UM0701-02 section 6.2):
normal frames `00 00 FF LEN LCS TFI data DCS 00`, extended frames
`00 00 FF FF FF LENM LENL LCS TFI data DCS 00`, the ACK `00 00 FF 00 FF 00`, the NACK
`00 00 FF FF 00 00` and the application-level error frame `00 00 FF 01 FF 7F 81 00`.
Nothing here does I/O or knows a command.

`FrameReader` takes bytes as they arrive (any chunking), and `next()` returns one
event at a time: ACK, NACK, ERROR_FRAME or FRAME (payload at `reader.data()`), or NONE
when no complete frame is there yet. It never raises on input: garbage, broken
checksums and truncated frames are skipped (counted in `reader.dropped` and
`reader.bad_frames`) and it resynchronises on the next valid frame, even one that
follows a false start code whose claimed length has not arrived. The one error it
signals is BAD_FRAME, for a frame whose length was right but whose data checksum was
not (the driver answers that with a NACK, which makes the chip send it again); only
its start code is dropped, and the bytes it claimed are searched again.

Errors of this package (documented; nothing else leaves the driver):
`PN532Error` > `FrameError`, `PN532Timeout`, `ChipError` (with `.code`).
"""
from cpos.compat import const

TFI_HOST = const(0xD4)  # host -> chip
TFI_CHIP = const(0xD5)  # chip -> host
TFI_ERROR = const(0x7F)  # application-level error frame

ACK_FRAME = b"\x00\x00\xff\x00\xff\x00"
NACK_FRAME = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"

# Events returned by FrameReader.next()
NONE = const(0)
ACK = const(1)
NACK = const(2)
FRAME = const(3)
ERROR_FRAME_EVT = const(4)
BAD_FRAME = const(5)

MAX_DATA = const(265)  # TFI + data of the longest extended frame the PN532 sends
_CAP = const(288)  # reader buffer: a whole extended frame and a little slack


class PN532Error(Exception):
    """Base of every error the PN532 driver raises."""


class FrameError(PN532Error):
    """A frame could not be built or was malformed (length, checksum, identifier)."""


class PN532Timeout(PN532Error):
    """The chip did not answer (ACK or response) in time."""


class ChipError(PN532Error):
    """The chip answered with an error: error frame (code -1) or a status byte."""

    def __init__(self, code, msg="chip error"):
        super().__init__("%s 0x%02x" % (msg, code & 0xFF) if code >= 0 else msg)
        self.code = code


def frame_size(ndata):
    """Bytes on the wire for a frame carrying `ndata` bytes of TFI+data."""
    return ndata + (10 if ndata > 255 else 7)


def encode_into(buf, tfi, cmd, params=b""):
    """Write a frame carrying TFI, CMD and PARAMS into `buf`; return its length.

    Uses a normal frame up to 255 bytes of TFI+data, an extended frame above.
    Raises FrameError when it does not fit the buffer or the PN532's limit.
    """
    n = 2 + len(params)
    if n > MAX_DATA:
        raise FrameError("frame too long")
    size = frame_size(n)
    if size > len(buf):
        raise FrameError("buffer too small")
    buf[0] = 0
    buf[1] = 0
    buf[2] = 0xFF
    if n <= 255:
        buf[3] = n
        buf[4] = (-n) & 0xFF
        i = 5
    else:
        buf[3] = 0xFF
        buf[4] = 0xFF
        buf[5] = n >> 8
        buf[6] = n & 0xFF
        buf[7] = (-(n >> 8) - (n & 0xFF)) & 0xFF
        i = 8
    buf[i] = tfi
    buf[i + 1] = cmd
    s = tfi + cmd
    j = i + 2
    for b in params:
        buf[j] = b
        s += b
        j += 1
    buf[j] = (-s) & 0xFF
    buf[j + 1] = 0
    return j + 2


def encode(tfi, cmd, params=b""):
    """Return a new frame (bytes) carrying TFI, CMD and PARAMS."""
    buf = bytearray(frame_size(2 + len(params)))
    encode_into(buf, tfi, cmd, params)
    return bytes(buf)


def decode(frame):
    """Decode one complete frame given alone; return (tfi, data-bytes).

    ACK and NACK decode to (None, b"ACK"/b"NACK"), the error frame raises ChipError.
    Anything else malformed raises FrameError (never anything else).
    """
    r = FrameReader()
    if r.feed(frame) != len(frame):
        raise FrameError("frame longer than any PN532 frame")
    ev = r.next(True)
    if ev == ACK:
        return None, b"ACK"
    if ev == NACK:
        return None, b"NACK"
    if ev == ERROR_FRAME_EVT:
        raise ChipError(-1, "error frame")
    if ev != FRAME:
        raise FrameError("no valid frame")
    return r.tfi, bytes(r.data())


class FrameReader:
    """Finds frames in a byte stream; see the module docstring."""

    def __init__(self):
        self.buf = bytearray(_CAP)
        self._mv = memoryview(self.buf)
        self.n = 0  # bytes held
        self.tfi = 0
        self.start = 0  # offset of TFI+data of the last FRAME (valid until next feed/next)
        self.length = 0  # length of TFI+data of the last FRAME
        self._drop = 0  # bytes of the last event still to be dropped on the next call
        self._post = False  # the last frame's postamble (00) had not arrived yet
        self.dropped = 0  # noise bytes skipped
        self.bad_frames = 0  # frames skipped for a bad checksum or length

    def reset(self):
        """Forget everything held (e.g. before a new command)."""
        self.n = 0
        self._drop = 0
        self._post = False

    def feed(self, data, start=0, end=-1):
        """Append bytes; return how many were taken (the buffer is bounded)."""
        self._consume()
        if end < 0:
            end = len(data)
        k = end - start
        room = _CAP - self.n
        if k > room:
            # Full of something that is not a frame: the oldest bytes are noise.
            self._discard(min(self.n, k - room))
            room = _CAP - self.n
            if k > room:
                k = room
        self._mv[self.n:self.n + k] = memoryview(data)[start:start + k]
        self.n += k
        return k

    def data(self):
        """TFI-less payload of the last FRAME (or what the last BAD_FRAME claimed to
        carry, valid until the next call): command code first (a memoryview)."""
        return self._mv[self.start + 1:self.start + self.length]

    def _consume(self):
        if self._drop:
            d = self._drop
            self._drop = 0
            self._discard(d)

    def _discard(self, k):
        n = self.n
        if k >= n:
            self.n = 0
            return
        self._mv[0:n - k] = self._mv[k:n]
        self.n = n - k

    def _parse(self, i):
        """Look at a start code at buf[i:i+2]. Return (event, total bytes from i).

        event NONE with total 0 means: incomplete, wait for more bytes.
        event NONE with total -1 means: not a frame here (bad LCS or length).
        """
        b = self.buf
        n = self.n
        if i + 4 > n:
            return NONE, 0
        ln = b[i + 2]
        lcs = b[i + 3]
        if ln == 0 and lcs == 0xFF:
            return ACK, 4
        if ln == 0xFF and lcs == 0:
            return NACK, 4
        if ln == 0xFF and lcs == 0xFF:
            if i + 7 > n:
                return NONE, 0
            ln = (b[i + 4] << 8) | b[i + 5]
            if (b[i + 4] + b[i + 5] + b[i + 6]) & 0xFF or ln == 0 or ln > MAX_DATA:
                return NONE, -1
            hdr = 7
        else:
            if (ln + lcs) & 0xFF or ln == 0:
                return NONE, -1
            hdr = 4
        total = hdr + ln + 1
        if i + total > n:
            return NONE, 0
        s = 0
        j = i + hdr
        for k in range(j, j + ln + 1):
            s += b[k]
        self.tfi = b[j]
        self.start = j
        self.length = ln
        if s & 0xFF:
            return BAD_FRAME, total  # tfi/start/length say what it claimed to be
        if ln == 1 and b[j] == TFI_ERROR:
            return ERROR_FRAME_EVT, total
        if b[j] != TFI_CHIP and b[j] != TFI_HOST:
            return NONE, -1  # checksums agree by chance: not a PN532 frame
        return FRAME, total

    def next(self, lookahead=False):
        """Return the next event (see module docstring); NONE if none is complete yet.

        A start code whose claimed length has not arrived yet holds the scan, since
        its bytes may still be on their way. With `lookahead` (call it when the line
        has gone quiet) a complete valid frame after such a false start is found too.
        """
        self._consume()
        if self._post and self.n:
            self._post = False
            if self.buf[0] == 0:
                self._discard(1)
        b = self.buf
        n = self.n
        i = 0
        pending = -1  # first plausible start code still waiting for bytes
        while i + 1 < n:
            if b[i] != 0 or b[i + 1] != 0xFF:
                i += 1
                continue
            ev, total = self._parse(i)
            if total == 0:
                if pending < 0:
                    pending = i
                if not lookahead:
                    break
                i += 1
                continue
            if total < 0:
                self.bad_frames += 1
                i += 1
                continue
            # a complete frame (good or with a bad data checksum) at i
            self._skip_noise(i)
            self.start -= i
            if ev == BAD_FRAME:
                # Drop only its start code: the bytes it claimed are searched again,
                # so a false start in noise cannot swallow a real frame behind it.
                self._drop = 2
                self.bad_frames += 1
                return ev
            post = self._postamble(total)
            self._post = not post
            total += post
            self._drop = total
            return ev
        # nothing complete: keep from the first plausible start, or a trailing 00
        keep = pending if pending >= 0 else (n - 1 if n and b[n - 1] == 0 else n)
        self._skip_noise(keep)
        return NONE

    def _postamble(self, total):
        return 1 if total < self.n and self.buf[total] == 0 else 0

    def _skip_noise(self, k):
        if k <= 0:
            return
        b = self.buf
        noise = 0
        for j in range(k):
            if b[j]:
                noise += 1
        self.dropped += noise
        self._discard(k)
