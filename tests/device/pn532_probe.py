"""Device-side helpers the CPython tests call through the MicroPython worker."""
from cpos.reader import frame as F


def scan(hexdata, chunk):
    """Feed hex bytes to a FrameReader `chunk` bytes at a time (lookahead once the
    input is over); return [[event, payload hex], ...]."""
    data = bytes.fromhex(hexdata)
    r = F.FrameReader()
    out = []
    step = chunk if chunk > 0 else max(1, len(data))
    i = 0
    while True:
        last = i >= len(data)
        if not last:
            r.feed(data[i:i + step])
            i += step
        while True:
            ev = r.next(last)
            if not ev:
                break
            out.append([ev, bytes(r.data()).hex() if ev == F.FRAME else ""])
        if last:
            return out
