"""The MDB task: bytes from the link, through the framer and the reader, replies back.

    svc = Service(app, settings, link, log)
    await svc.run()            # an app task (firmware/app.py), for ever
    svc.tap(uid, now_ms)       # the app's reader task saw a card

Owns the loop around `cpos.mdb.cashless.Reader` and the reader's host: the session's
funds from the app's `balance_of`, a vend decided by the app's own `decide` (the
till's lookup, rules with the vending profile, offline cap, journal append before VEND
APPROVED is queued), a refund through `App.reverse(orig_seq, now)` (the durable
reversal record, docs/mdb.md "Refunds"), and the feedback and simulator events of each.
The reply to a block is written before any slow work (the decision runs after the
VMC's VEND REQUEST has its ACK), so the 5 ms response budget covers only framing and a
state change. Buffers are made once: nothing is allocated per byte.
"""
from cpos import purchase, reasons
from cpos.compat import const, ticks_diff, ticks_ms, ticks_us
from cpos.mdb import bus, cashless
from cpos.mdb.vendlog import BASELINE, VendLog

_ACK = b"\x00"
_RT_SLOTS = const(256)
_EVQ = const(8)  # response times kept for the health figures (a ring)
_EV_NAMES = ("", "session", "refused", "vend", "success", "failure", "cancel", "end", "timeout", "reset",
             "out_of_sequence")


class Service:
    def __init__(self, app, settings, link, log):
        self.app = app
        self.s = settings
        self.link = link
        self.log = log
        self.framer = bus.Framer(0x10)
        self.reader = cashless.Reader(self, settings)
        self._data = bytearray(64)
        self._modes = bytearray(64)
        self.vends = self.refunds = 0
        self.response_us = [0] * _RT_SLOTS  # per block answered: from its last byte read to the reply written
        self.responses = 0
        self._evq = [0] * (3 * _EVQ)  # events (kind, a, b) told after the reply is on the wire
        self._evn = 0
        self.vendlog = VendLog(app.board.block_device(settings.state)) if settings.state is not None else None

    # -- the loop ----------------------------------------------------------------
    def recover(self):
        """Before the bus: a purchase journaled above the vend log's `settled` was never
        heard by the VMC (the power went first), so nothing was vended: refund it. A
        vend log never used starts at the journal's newest purchase (docs/mdb.md)."""
        vl = self.vendlog
        if vl is None:
            self.log.warn("MDB: no mdb.state in the config: a vend cut by a power loss is not refunded")
            return
        settled = vl.recover()
        newest = self._newest_purchase()
        if settled < 0:
            vl.note(newest, BASELINE)
            self.log.info("MDB: vend log started at purchase %d" % newest)
        elif newest > settled:
            self.log.warn("MDB: purchase %d was not heard by the vending machine before a power loss: refunding" % newest)
            self.refund(newest)
        self._report("mdb", what="recovered", a=settled, b=newest, state="inactive")

    def _newest_purchase(self):
        """The seq of the newest approved purchase record in the journal (0: none readable)."""
        j = self.app.journal
        buf = bytearray(purchase.SIZE)
        seq = j.next_seq - 1
        for _ in range(16):
            if seq < 1:
                return 0
            if j.read(seq, buf, True) == seq and buf[0] == purchase.TYPE and buf[2] == reasons.APPROVED:
                return seq
            seq -= 1
        return 0

    async def run(self):
        link = self.link
        self.recover()
        await link.open(self.log)
        data, modes = self._data, self._modes
        framer, reader = self.framer, self.reader
        while True:
            n = await link.read(data, modes)
            if link.gap:
                framer.gap()
            for i in range(n):
                kind = framer.feed(data[i], modes[i] if modes[i] != 0xFF else -1)
                if kind == bus.NOTHING:
                    continue
                if kind == bus.BLOCK:
                    t0 = ticks_us()
                    now = ticks_ms()
                    r = reader.handle(framer.buf, framer.last_n, now)
                    if r:
                        link.send(reader.out, r)
                        framer.awaiting = True
                    elif reader.answered:
                        link.send(_ACK, 1)
                    self.response_us[self.responses % _RT_SLOTS] = ticks_diff(ticks_us(), t0)
                    self.responses += 1
                    await link.drain()
                    self._tell()
                    reader.work(ticks_ms())
                    self._tell()
                elif kind == bus.GOT_ACK:
                    reader.acked()
                elif kind == bus.GOT_RET:
                    r = reader.retransmit()
                    if r:
                        link.send(reader.out, r)
                        framer.awaiting = True
                        await link.drain()
                elif kind == bus.BAD:
                    self.log.warn("MDB: bad block (checksum or length): ignored, the VMC repeats it")
                # GOT_NAK: the VMC repeats its POLL and the reader the unacknowledged reply

    def tap(self, uid, now_ms):
        """A card for the reader; True if the MDB session took it."""
        return self.reader.card(uid, now_ms)

    def busy(self):
        """A session or vend in progress: not a quiet moment for slow flash work."""
        return self.reader.state >= cashless.IDLE and self.reader.uid_len > 0

    def health(self):
        r = self.reader
        return {"mdb_state": cashless.STATE_NAMES[r.state], "mdb_level": r.level, "mdb_blocks": self.framer.blocks,
                "mdb_bad": self.framer.bad, "mdb_sequence_errors": r.sequence_errors, "mdb_vends": self.vends,
                "mdb_refunds": self.refunds}

    # -- the reader's host: the app's decision path -----------------------------------
    def funds(self, uid):
        app = self.app
        code, balance = app.balance_of(uid, app.clock.now())
        return code, balance, app.card.account

    def ready(self):
        """May a vend be decided now? Not while the clock is unknown just after a start and a
        first time is still due (as the till's tap waits, firmware/app.py): the reader keeps
        answering POLLs with ACK meanwhile, inside the VMC's maximum response time."""
        return not self.app.clock.waiting()

    def vend(self, uid, amount, item):
        app = self.app
        code, topup, seq, after, t = app.decide(uid, amount, "MDB #%d" % item, app.clock.now())
        self.vends += 1
        app._show(("decision", code, amount, after, topup, app.capped))
        self._report("decision", uid=_hex(uid), ref="mdb", amount=amount, reason=reasons.name(code), seq=seq,
                   balance_after=after, topup=topup, item=item, lookup_us=t[0], rules_us=t[1], journal_us=t[2])
        return code, seq, after

    def refund(self, seq):
        """Reverse purchase `seq` (a vend the machine did not deliver). Returns a reason code."""
        app = self.app
        reverse = getattr(app, "reverse", None)
        if reverse is None:
            self.log.error("MDB: cannot refund purchase %d: this firmware has no App.reverse" % seq)
            return reasons.TERMINAL_FULL
        res = reverse(seq, app.clock.now())  # (code, reversal seq[, balance after])
        code, rseq = res[0], res[1]
        self.refunds += 1
        if self.vendlog is not None and code != reasons.TERMINAL_FULL:
            self.vendlog.note(seq)  # settled: refunded now, or refused for good (already reversed, ...)
        self._report("refund", seq=seq, reason=reasons.name(code), reversal_seq=rseq)
        if code == reasons.APPROVED:
            self.log.info("MDB: purchase %d refunded (reversal %d)" % (seq, rseq))
        else:
            self.log.warn("MDB: refund of purchase %d: %s" % (seq, reasons.name(code)))
        return code

    def delivered(self, seq):
        """The VMC acknowledged VEND APPROVED for `seq`: from now on it counts as sold."""
        if self.vendlog is not None:
            self.vendlog.note(seq)
        self._report("mdb", what="delivered", seq=seq)

    def event(self, kind, a, b):
        """From the reader, possibly before its reply is sent: kept, told by `_tell` after it."""
        q, n = self._evq, self._evn
        if n < _EVQ:
            q[3 * n], q[3 * n + 1], q[3 * n + 2] = kind, a, b
            self._evn = n + 1
        if kind == cashless.EV_SESSION or kind == cashless.EV_REFUSED:
            self._tell()  # a tap: not on the bus's clock

    def _tell(self):
        q = self._evq
        for i in range(self._evn):
            self._told(q[3 * i], q[3 * i + 1], q[3 * i + 2])
        self._evn = 0

    def _told(self, kind, a, b):
        app = self.app
        name = _EV_NAMES[kind]
        if kind == cashless.EV_SESSION:
            app._show(("balance", reasons.APPROVED, 0, a, False, False))
        elif kind == cashless.EV_REFUSED:
            app._show(("balance", a, 0, 0, False, False))
        if kind == cashless.EV_SEQUENCE:
            self.log.warn("MDB: command %02X %02X out of sequence in state %s"
                          % (a, b, cashless.STATE_NAMES[self.reader.state]))
        self._report("mdb", what=name, a=a, b=b, state=cashless.STATE_NAMES[self.reader.state])

    def _report(self, kind, **fields):
        """An event for the simulator (unix board only), without App.report's heap census:
        a collection per event would hold the bus for milliseconds (the VMC waits 5)."""
        ev = self.app._event
        if ev is not None:
            fields["terminal"] = self.app.cfg.terminal_id
            ev(kind, **fields)


def _hex(uid):
    return "".join("%02X" % b for b in uid)
