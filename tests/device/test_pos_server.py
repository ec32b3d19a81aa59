"""The POS server (cpos.pos.server) and its links (cpos.pos.link), on both runtimes.

Without the app: the reply to `LAST` is a stand-in, and no card is tapped (a tap's
side, and LAST's content, are tests/device/test_app_last.py). What is shown here:
- one request at a time: PAY at a till, VEND at a vending machine, busy, cancel,
  and a connection that drops closes the request it opened;
- a request no card took within 60 s is answered EXPIRED and closed, not before;
- over a listening link (TCP) the server runs until cancelled and then closes it; over
  a serial line it returns when the line's one session ends; no link, no POS;
- `make_link` builds a link from the config's `pos` section, None for "none".
"""
import asyncio

from cpos import log, rules
from cpos.compat import ticks_ms
from cpos.pos import link as poslink
from cpos.pos import server as posserver

from pos_fakes import Script, Writer


def server(kind=rules.TILL):
    return posserver.Server(kind, "t9", lambda: "LAST - 0\n", log.Log(lambda line: None))


def test_one_request_at_a_time_and_a_dropped_connection_closes_its_own():
    srv = server()
    w = Writer()
    asyncio.run(srv.session(Script([
        b"PING\n", b"VEND r0 100 x\n", b"PAY r1 4500 1x Sandwich\n", b"PAY r2 100 x\n", b"CANCEL r2\n",
        b"LAST\n", b"CANCEL r1\n", b"PAY r3 100\n", b"NOPE\n"]), w))
    assert w.lines == ["PONG t9", "ERR r0 wrong-kind", "WAIT r1", "ERR r2 busy", "ERR r2 not-open",
                       "LAST - 0", "CANCELLED r1", "WAIT r3", "ERR - unknown-request"], w.lines
    assert not srv.request.open  # r3 went with its connection
    other = Writer()
    srv.request.set("r4", 100, "", other)  # opened over another connection ...
    asyncio.run(srv.session(Script([b"PING\n"]), Writer()))
    assert srv.request.open and srv.request.writer is other  # ... which this one's end leaves open


def test_a_vending_terminal_takes_vend():
    srv = server("vending")
    w = Writer()
    asyncio.run(srv.session(Script([b"PAY r1 100 x\n", b"VEND r2 1500 1x Vand\n"]), w))
    assert w.lines == ["ERR r1 wrong-kind", "WAIT r2"], w.lines


def test_a_request_no_card_took_for_60_s_expires():
    srv = server()
    w = Writer()
    req = srv.request
    req.set("r1", 100, "", w)

    async def expire():
        srv.expire()
        await asyncio.sleep(0)

    req.since = ticks_ms() - 59000
    asyncio.run(expire())
    assert req.open and w.lines == []
    req.since = ticks_ms() - 61000
    asyncio.run(expire())
    assert not req.open and w.lines == ["EXPIRED r1"], w.lines


class Listener:
    """A TCP link's part: serve hands back a server to close."""

    closed = False
    session = None

    async def serve(self, session, log):
        self.session = session
        return self

    def close(self):
        self.closed = True


class Line:
    """A serial line's part: serve runs its one session to the end."""

    def __init__(self, items):
        self.writer = Writer()
        self.items = items

    async def serve(self, session, log):
        await session(Script(self.items), self.writer)


def test_run_serves_a_listener_until_cancelled_and_a_line_until_it_ends():
    srv = server()
    listener = Listener()

    async def listen():
        task = asyncio.create_task(srv.run(listener))
        await asyncio.sleep(0.02)
        assert not listener.closed and listener.session is not None
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(listen())
    assert listener.closed
    line = Line([b"PING\n"])
    asyncio.run(srv.run(line))  # returns: the line's session ended
    assert line.writer.lines == ["PONG t9"]


class SlowScript:
    """A serial line whose POS sends its lines, then stays connected without a word."""

    def __init__(self, items, quiet_ms):
        self.items = list(items)
        self.quiet_ms = quiet_ms

    async def read(self, n=-1):  # the server reads with a fixed bound (cpos.pos.bounded)
        return await self.readline()

    async def readline(self):
        if self.items:
            return self.items.pop(0)
        await asyncio.sleep(self.quiet_ms / 1000)
        return b""


class QuietLine(Line):
    def __init__(self, items, quiet_ms):
        Line.__init__(self, items)
        self.quiet_ms = quiet_ms

    async def serve(self, session, log):
        await session(SlowScript(self.items, self.quiet_ms), self.writer)


def test_a_request_on_a_serial_line_expires_too():
    """Expiry runs beside a serial line's session, as it does beside a TCP server."""
    srv = server()
    srv.expire_every_ms = 5
    line = QuietLine([b"PAY r1 100 Kaffe\n"], 200)

    async def go():
        task = asyncio.create_task(srv.run(line))
        await asyncio.sleep(0.02)
        assert srv.request.open, line.writer.lines
        srv.request.since = ticks_ms() - 61000  # as if a minute went by without a card
        await task

    asyncio.run(go())
    assert line.writer.lines == ["WAIT r1", "EXPIRED r1"], line.writer.lines


def test_make_link_builds_what_the_pos_section_says():
    assert poslink.make_link({"link": "none"}) is None
    tcp = poslink.make_link({"link": "tcp", "host": "127.0.0.1", "port": 7101})
    assert isinstance(tcp, poslink.TcpServer) and (tcp.host, tcp.port) == ("127.0.0.1", 7101)
    try:
        poslink.make_link({"link": "carrier-pigeon"})
    except ValueError:
        pass
    else:
        raise AssertionError("an unknown link was built")


class Trickle:
    """A POS stream that sends `head`, `filler` bytes of 'x' (made as they are read, so the
    test itself never holds them) and `tail`, in pieces of at most `n` bytes."""

    def __init__(self, head, filler=0, tail=b"", n=64):
        self.head, self.filler, self.tail, self.n = head, filler, tail, n

    async def read(self, n):
        k = min(n, self.n)
        if self.head:
            out, self.head = self.head[:k], self.head[k:]
        elif self.filler:
            k = min(k, self.filler)
            self.filler -= k
            out = b"x" * k
        else:
            out, self.tail = self.tail[:k], self.tail[k:]
        return out


def test_a_huge_line_without_newline_is_refused_with_a_fixed_buffer():
    """1 MB without a newline (issue 14): ERR line-too-long, then the next line is served;
    nothing of the sender's size is ever allocated (the reader holds one fixed buffer)."""
    import gc

    from cpos.pos import bounded

    lines_seen = []
    srv = posserver.Server(rules.TILL, "t0001", lambda: "LAST - 0\n", log.Log(lines_seen.append))
    w = Writer()
    gc.collect()
    asyncio.run(srv.session(Trickle(b"PAY r1 100 ", 1024 * 1024, b"\nPING\n"), w))
    assert w.lines == ["ERR - line-too-long", "PONG t0001"], w.lines
    assert [l for l in lines_seen if "longer than" in l] == ["S POS: refused a line longer than 200 bytes"], lines_seen
    # one exactly at the bound is served; one byte over is refused
    r = bounded.LineReader(Trickle(b"PING" + b" " * 197 + b"\n" + b"P" * 202 + b"\nPING\n", n=7))
    first = asyncio.run(r.readline())
    assert len(first) == 202 and first.startswith(b"PING")
    assert asyncio.run(r.readline()) is bounded.TOO_LONG
    assert asyncio.run(r.readline()) == b"PING\n" and asyncio.run(r.readline()) == b""
