"""The POS server: one open request at a time, and the sessions that open and cancel it.

    srv = Server(profile.kind, terminal_id, last_line, log); await srv.run(board.pos_link(cfg.pos))

Owns the terminal's side of the conversation in docs/pos-protocol.md. Each session (a
TCP connection, or the serial line) reads request lines and answers them: `PAY` (till)
or `VEND` (vending machine) opens the one `Request`, `CANCEL` closes it, `VOID` is
answered by the app's `void(ref, orig_seq)` (a reversal, firmware/app.py), `PING` is
answered here, a bad line gets `ERR`, never a crash; a request no card took within 60 s
is answered `EXPIRED`. What the terminal decides is not here: a tap takes the open
request in the app (`App.on_tap`), which replies with `send`, and the app supplies the
reply to `LAST` (`last_line()`, read from its journal). The transport is the board's
(`board.pos_link`, `cpos.pos.link`).
"""
import asyncio

from cpos import rules
from cpos.compat import const, sleep_ms, ticks_diff, ticks_ms
from cpos.pos import bounded, lines

_REQUEST_TIMEOUT_MS = const(60000)  # no card this long after WAIT: EXPIRED, and the request is closed


class Request:
    """The open payment (till) or vend request (vending machine)."""

    def __init__(self):
        self.open = False
        self.ref = ""
        self.amount = 0
        self.item = ""
        self.writer = None
        self.since = 0

    def set(self, ref, amount, item, writer):
        self.open = True
        self.ref, self.amount, self.item, self.writer = ref, amount, item, writer
        self.since = ticks_ms()

    def close(self):
        self.open = False
        self.writer = None


class Server:
    """Serves the POS over one link and holds the open request (`request`)."""

    def __init__(self, kind, terminal_id, last_line, log, void=None):
        """`kind`: the profile's kind (a till takes PAY, anything else VEND);
        `last_line()`: the reply line to `LAST`; `log`: a cpos.log.Log;
        `void(ref, orig_seq)`: the reply line to `VOID` (None: `ERR <ref> no-void`)."""
        self.request = Request()
        self._want = lines.PAY if kind == rules.TILL else lines.VEND
        self._terminal_id = terminal_id
        self._last_line = last_line
        self._void = void
        self.log = log
        self.expire_every_ms = _REQUEST_TIMEOUT_MS // 4  # how often an open request is checked

    async def run(self, link):
        """Serve the POS over `link` (a `cpos.pos.link` link, or None for `"link": "none"`:
        no POS, every tap shows the balance, and this waits for ever). Requests expire
        on every link: over TCP this runs until cancelled; over a serial line it returns
        when the line's one session ends (the task then ends and the app restarts)."""
        if link is None:
            while True:
                await sleep_ms(_REQUEST_TIMEOUT_MS)
        expiry = asyncio.create_task(self._expire_loop())
        try:
            server = await link.serve(self.session, self.log)
            if server is None:  # a serial line: its one session is over
                return
            try:
                await expiry  # runs for ever
            finally:
                server.close()
        finally:
            expiry.cancel()

    async def _expire_loop(self):
        while True:
            await sleep_ms(self.expire_every_ms)
            self.expire()

    def expire(self):
        """Close the open request if it waited too long, and tell its POS `EXPIRED`."""
        req = self.request
        if req.open and ticks_diff(ticks_ms(), req.since) > _REQUEST_TIMEOUT_MS:
            writer, ref = req.writer, req.ref
            req.close()
            asyncio.create_task(send(writer, lines.expired(ref)))

    async def session(self, stream, writer):
        """One POS connection: requests in, replies out. Bad lines get ERR, never a crash."""
        self.log.info("POS: connected")
        req = self.request
        want = self._want
        reader = bounded.LineReader(stream)  # a fixed bound: never a buffer of the sender's size
        try:
            while True:
                line = await reader.readline()
                if line is bounded.TOO_LONG:
                    self.log.security("POS: refused a line longer than %d bytes" % lines.MAX_LINE)
                    await send(writer, lines.error("-", "line-too-long"))
                    continue
                if not line:
                    break
                try:
                    verb, ref, amount, item = lines.parse(line)
                except lines.ProtoError as e:
                    await send(writer, lines.error(e.ref, e.what))
                    continue
                if verb == lines.PING:
                    await send(writer, lines.pong(self._terminal_id))
                elif verb == lines.LAST:  # leaves an open request open
                    await send(writer, self._last_line())
                elif verb == lines.VOID:  # leaves an open request open
                    if self._void is None:
                        await send(writer, lines.error(ref, "no-void"))
                    else:
                        await send(writer, self._void(ref, amount))
                elif verb == lines.CANCEL:
                    if req.open and req.ref == ref:
                        req.close()
                        await send(writer, lines.cancelled(ref))
                    else:
                        await send(writer, lines.error(ref, "not-open"))
                elif verb != want:
                    await send(writer, lines.error(ref, "wrong-kind"))
                elif req.open:
                    await send(writer, lines.error(ref, "busy"))
                else:
                    req.set(ref, amount, item, writer)
                    await send(writer, lines.wait(ref))
        finally:
            if req.open and req.writer is writer:
                req.close()
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the peer may already be gone
                pass
            self.log.info("POS: disconnected")


async def send(writer, line):
    """Write one reply line to a POS; a POS that hung up (or none: `writer` None) is ignored."""
    if writer is None:
        return
    try:
        writer.write(line.encode() if isinstance(line, str) else line)
        await writer.drain()
    except Exception:  # noqa: BLE001 - a POS that hung up must not stop the terminal
        pass
