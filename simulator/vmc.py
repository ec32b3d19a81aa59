"""A vending machine controller (VMC) on MDB, emulated from MDB/ICP 4.2: the master of the bus.

    vmc = VMC("127.0.0.1", port, level=3, always_idle=True)
    await vmc.connect(); await vmc.init()
    out = await vmc.vend(1500, item=12, tap=lambda: term.place(uid))  # "sold" / "denied" / ...

Owns the controller's side of a cashless reader's conversation, written from the
standard and sharing no code with the reader (`cpos.mdb`): its own block encoding and
checksum, its own timers. It speaks the virtual bus (docs/mdb.md: TCP, each MDB byte as
a mode byte 0/1 then the data byte), masters the bus (every exchange is a command and
the reader's answer within `t_response`), initialises the reader, keeps polling it,
runs sessions (normal vend, vend failure, customer cancel, timeout, always idle) and can
misbehave on purpose (bad checksums, NAK and RET instead of ACK, garbage, RESET in the
middle of a vend, commands out of sequence). It keeps its own record of what it vended
(`sold`) and what it reported as failed (`failed`), the truth the journal and ledger are
checked against, and the reader's response times.
"""
import asyncio
import time

ADDR = 0x10  # cashless reader #1
RESET, SETUP, POLL, VEND, READER, REVALUE, EXPANSION = 0, 1, 2, 3, 4, 5, 7
ACK_BYTE, RET_BYTE, NAK_BYTE = 0x00, 0xAA, 0xFF


def chk(data):
    return sum(data) % 256


class NoAnswer(Exception):
    pass


class VMC:
    def __init__(self, host, port, level=3, always_idle=False, t_response=0.5, poll_every=0.02, log=None):
        """`t_response`: how long to wait for the reader's first byte (the standard says
        5 ms; the virtual bus crosses two processes on a shared machine, so tests allow more
        and count answers, never time them). `poll_every`: the idle POLL period."""
        self.host, self.port = host, port
        self.level = level
        self.want_always_idle = always_idle
        self.t_response = t_response
        self.poll_every = poll_every
        self.log = log or (lambda line: None)
        self.reader = self.writer = None
        self.lock = asyncio.Lock()
        self.events = []  # (time, reply code, payload bytes) of every data reply heard
        self.sold = []  # (item, price units) vended: the machine's own truth
        self.failed = []  # (item, price units) approved but not delivered (VEND FAILURE sent)
        self.rtt = []  # seconds from a command's last byte to the reply's last byte
        self.rtt_by = []  # (command, sub or -1, seconds) of each
        self.reader_level = None
        self.config = None
        self.peripheral_id = None
        self.always_idle = False
        self.funds = None  # from the newest BEGIN SESSION (units), media id
        self.media_id = None
        self.naks_sent = self.rets_sent = self.timeouts = 0
        self.misbehave = set()  # e.g. {"nak_once", "ret_once", "bad_checksum_once"}
        self._poller = None
        self._pending = []  # data replies heard during background polls, not consumed yet

    # -- the wire -------------------------------------------------------------------
    async def connect(self, timeout=20.0):
        end = time.monotonic() + timeout
        while True:
            try:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                return
            except OSError:
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.05)

    def close(self):
        if self._poller is not None:
            self._poller.cancel()
        if self.writer is not None:
            self.writer.close()

    def _send_bytes(self, pairs):
        self.writer.write(bytes(b for m, d in pairs for b in (m, d)))

    async def _drain_input(self):
        """Drop anything the reader sent outside an exchange (it should send nothing)."""
        try:
            while True:
                await asyncio.wait_for(self.reader.read(256), 0.0001)
        except (asyncio.TimeoutError, TimeoutError):
            pass

    async def exchange(self, data, bad_checksum=False, garbage=b""):
        """Send one command block (address + data + checksum) and read the answer.
        Returns ("ACK", b"") / ("NAK", b"") / ("DATA", payload) / ("BAD", payload), or
        raises NoAnswer after t_response."""
        block = bytes(data)
        c = chk(block) ^ (0x5A if bad_checksum else 0)
        pairs = [(0, g) for g in garbage] + [(1, block[0])] + [(0, b) for b in block[1:]] + [(0, c)]
        self._send_bytes(pairs)
        await self.writer.drain()
        t0 = time.monotonic()
        try:
            got = await self._read_block()
        except (asyncio.TimeoutError, TimeoutError):
            self.timeouts += 1
            raise NoAnswer()
        except asyncio.IncompleteReadError:
            raise NoAnswer()
        self.rtt.append(time.monotonic() - t0)
        self.rtt_by.append((block[0] & 7, block[1] if len(block) > 1 else -1, time.monotonic() - t0))
        if len(got) == 1:
            return ("ACK", b"") if got[0] == ACK_BYTE else (("NAK", b"") if got[0] == NAK_BYTE else ("BAD", bytes(got)))
        payload, c = bytes(got[:-1]), got[-1]
        if chk(payload) != c:
            return "BAD", payload
        return "DATA", payload

    def _answer(self, byte):
        self._send_bytes([(0, byte)])

    async def command(self, *data, tries=5, **kw):
        """One command with the standard's answers to the reader: ACK a good data reply,
        NAK a bad one (the reader repeats it at the next POLL), and repeat a command
        that got no answer. Returns (kind, payload)."""
        for _ in range(tries):
            try:
                kind, payload = await self.exchange(data, **kw)
            except NoAnswer:
                kw = {}
                await asyncio.sleep(0.001)
                continue
            if kind == "DATA":
                if "nak_once" in self.misbehave:
                    self.misbehave.discard("nak_once")
                    self.naks_sent += 1
                    self._answer(NAK_BYTE)
                    await self.writer.drain()
                    return "NAKED", payload
                if "ret_once" in self.misbehave:
                    self.misbehave.discard("ret_once")
                    self.rets_sent += 1
                    self._answer(RET_BYTE)
                    await self.writer.drain()
                    kind, payload = await self._read_reply()
                self._answer(ACK_BYTE)
                await self.writer.drain()
                self.events.append((time.monotonic(), payload[0], payload))
            elif kind == "BAD":
                self.naks_sent += 1
                self._answer(NAK_BYTE)
                await self.writer.drain()
            return kind, payload
        raise NoAnswer()

    async def _read_block(self):
        """The reader's next block as its bytes, checksum last: (mode, data) pairs until the
        one with the mode bit set. Each byte must come within t_response (asyncio.TimeoutError)."""
        got = []
        while True:
            m = await asyncio.wait_for(self.reader.readexactly(1), self.t_response)
            d = await asyncio.wait_for(self.reader.readexactly(1), self.t_response)
            got.append(d[0])
            if m[0] == 1:
                return got

    async def _read_reply(self):
        """The data reply sent again after our RET: ("DATA", payload without its checksum)."""
        return "DATA", bytes((await self._read_block())[:-1])

    # -- polling ----------------------------------------------------------------------
    async def poll(self):
        """One POLL; returns the data reply's payload (ACKed) or None."""
        async with self.lock:
            kind, payload = await self.command(ADDR | POLL)
        if kind == "DATA":
            self._note(payload)
            return payload
        return None

    def _note(self, p):
        if p[0] == 0x03:
            self.funds = (p[1] << 8) | p[2]
            self.media_id = int.from_bytes(p[3:7], "big") if len(p) >= 7 else None
        self.log("VMC heard %s" % p.hex())

    async def poll_until(self, codes, timeout=10.0):
        """POLL until a reply whose first byte is in `codes`; returns it (None on timeout)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            while self._pending:
                p = self._pending.pop(0)
                if p[0] in codes:
                    return p
            p = await self.poll()
            if p is not None and p[0] in codes:
                return p
            if p is not None:
                self._pending.append(p) if p[0] in (0x03, 0x04) else None
            await asyncio.sleep(self.poll_every)
        return None

    def start_polling(self):
        """Keep polling in the background (a VMC polls all the time); replies wait in `_pending`."""
        async def loop():
            while True:
                try:
                    p = await self.poll()
                except NoAnswer:
                    p = None
                if p is not None:
                    self._pending.append(p)
                await asyncio.sleep(self.poll_every)
        self._poller = asyncio.ensure_future(loop())

    def stop_polling(self):
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    # -- the init sequence ---------------------------------------------------------------
    async def init(self, max_price=0xFFFF, min_price=0):
        """RESET, JUST RESET, SETUP config and prices, REQUEST ID, (Level 3) ENABLE OPTIONS, ENABLE."""
        async with self.lock:
            await self.command(ADDR | RESET)
        if await self.poll_until((0x00,)) is None:
            raise NoAnswer("no JUST RESET")
        async with self.lock:
            kind, p = await self.command(ADDR | SETUP, 0x00, self.level, 0, 0, 0)
        if kind != "DATA" or p[0] != 0x01:
            raise AssertionError("SETUP config answered %s %s" % (kind, p.hex()))
        self.config = p
        self.reader_level = p[1]
        async with self.lock:
            await self.command(ADDR | SETUP, 0x01, max_price >> 8, max_price & 0xFF, min_price >> 8, min_price & 0xFF)
            kind, p = await self.command(ADDR | EXPANSION, 0x00, *(b"VMC" + b"SIM000000001" + b"VMC-EMULATOR" + b"\x01\x00"))
        if kind != "DATA" or p[0] != 0x09:
            raise AssertionError("REQUEST ID answered %s %s" % (kind, p.hex()))
        self.peripheral_id = p
        level = min(self.level, self.reader_level)
        if level >= 3 and self.want_always_idle and len(p) >= 34 and p[33] & 0x20:
            async with self.lock:
                await self.command(ADDR | EXPANSION, 0x04, 0, 0, 0, 0x20)
            self.always_idle = True
        async with self.lock:
            await self.command(ADDR | READER, 0x01)

    def scale(self):
        """(scale factor, decimal places) from READER CONFIG."""
        return self.config[4], self.config[5]

    # -- sessions -------------------------------------------------------------------------
    async def vend(self, price, item, tap=None, outcome="success", session_wait=10.0, approve_wait=10.0):
        """One customer. Without always idle: wait for BEGIN SESSION (the card first; `tap()`
        presents it), then VEND REQUEST; with always idle: VEND REQUEST first, then `tap()`.
        `outcome`: "success" (the product drops), "failure" (it does not: VEND FAILURE),
        "cancel" (the customer cancels while the reader decides), "reset" (a RESET between
        VEND APPROVED and VEND SUCCESS), "walk" (never choose: the reader's session timeout).
        Returns "sold", "failed", "denied", "cancelled", "reset", "timeout" or "no-session"."""
        if not self.always_idle:
            if tap is not None:
                tap()
            p = await self.poll_until((0x03,), session_wait)
            if p is None:
                return "no-session"
            if outcome == "walk":
                p = await self.poll_until((0x04,), 120.0)
                await self.session_complete()
                return "timeout" if p is not None else "no-cancel-request"
        async with self.lock:
            await self.command(ADDR | VEND, 0x00, price >> 8, price & 0xFF, item >> 8, item & 0xFF)
        if self.always_idle and tap is not None:
            tap()
        if outcome == "cancel":
            async with self.lock:
                kind, p = await self.command(ADDR | VEND, 0x01)
            await self.session_complete()
            return "cancelled"
        p = await self.poll_until((0x05, 0x06), approve_wait)
        if p is None or p[0] == 0x06:
            await self.session_complete()
            return "denied" if p is not None else "timeout"
        if outcome == "reset":
            self.sold.append((item, price))  # the standard: a RESET after VEND APPROVED counts as a sale
            async with self.lock:
                await self.command(ADDR | RESET)
            return "reset"
        async with self.lock:
            if outcome == "success":
                await self.command(ADDR | VEND, 0x02, item >> 8, item & 0xFF)
                self.sold.append((item, price))
            else:
                await self.command(ADDR | VEND, 0x03)
                self.failed.append((item, price))
        await self.session_complete()
        return "sold" if outcome == "success" else "failed"

    async def session_complete(self):
        async with self.lock:
            await self.command(ADDR | VEND, 0x04)
        return await self.poll_until((0x07,), 5.0)

    # -- misbehaviour ---------------------------------------------------------------------
    async def raw(self, pairs):
        """Put (mode, byte) pairs on the bus as they are: garbage, torn blocks."""
        async with self.lock:
            self._send_bytes(pairs)
            await self.writer.drain()
            await asyncio.sleep(0.05)
            await self._drain_input()

