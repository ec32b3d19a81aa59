"""The MDB cashless reader's state machine (MDB/ICP 4.2 section 7, reader #1, Levels 1-3).

    r = Reader(host, settings)
    n = r.handle(block, length, now_ms)   # a VMC block in, the reply in r.out[:n] (0: silent)
    r.acked() / r.retransmit()            # the VMC's ACK / RET after a data reply
    r.work(now_ms)                        # after the reply is on the wire: decide, refund, time out
    r.card(uid, now_ms)                   # a card was tapped

Owns the reader's side of the conversation: states Inactive, Disabled, Enabled,
Session Idle and Vend (numbered 1-5, as the standard numbers them and as COMMAND OUT
OF SEQUENCE reports them at Level 2+); the init sequence (RESET, SETUP config and
prices, EXPANSION REQUEST ID, ENABLE OPTIONS at Level 3), sessions, vends, the answers
queued for POLL and the repetition of a block the VMC did not acknowledge. No I/O and
no clock of its own: the caller passes milliseconds and moves bytes (`cpos.mdb.service`).

Money on the bus is in the scale stated in READER CONFIG: øre = units x scale x
10^(2 - decimals) (DKK 12 08, scale 1, 2 decimals: one unit is one øre).

What the reader decides with is the host's (the app): `host.funds(uid)` ->
(reason code, available øre, account) for BEGIN SESSION; `host.vend(uid, øre, item)`
-> (reason code, seq, balance after) runs the till's decision path and journals an
approval before it returns, once `host.ready()` says it may (not while the clock waits
for its first time after a start: the reader answers POLLs with ACK meanwhile); `host.refund(seq)` reverses an approved purchase the
machine did not deliver; `host.delivered(seq)` notes that the VMC acknowledged VEND
APPROVED (from then on a RESET counts as a sale); `host.event(kind, a, b)` shows and
reports what happened. Replies are built in preallocated buffers: nothing is allocated
per byte or per POLL.
"""
from cpos.compat import const, ticks_diff
from cpos.mdb import bus

# states (the standard's numbering)
INACTIVE = const(1)
DISABLED = const(2)
ENABLED = const(3)
IDLE = const(4)  # Session Idle
VEND = const(5)
STATE_NAMES = ("", "inactive", "disabled", "enabled", "session-idle", "vend")

# poll replies
JUST_RESET = const(0x00)
READER_CONFIG = const(0x01)
BEGIN_SESSION = const(0x03)
SESSION_CANCEL = const(0x04)
VEND_APPROVED = const(0x05)
VEND_DENIED = const(0x06)
END_SESSION = const(0x07)
CANCELLED = const(0x08)
PERIPHERAL_ID = const(0x09)
OUT_OF_SEQUENCE = const(0x0B)
REVALUE_DENIED = const(0x0E)

ALWAYS_IDLE_BIT = const(0x20)  # EXPANSION 17 04: optional feature bit 5
_QSLOTS = const(4)
_APPROVED = const(0)  # reasons.APPROVED

# what the host is told (host.event)
EV_SESSION = const(1)  # a session began: (funds øre, account)
EV_REFUSED = const(2)  # a card could not open a session: (reason, 0)
EV_VEND = const(3)  # a decision: (reason, øre)
EV_SUCCESS = const(4)  # (seq, 0)
EV_FAILURE = const(5)  # the machine failed to vend, refunded: (seq, reason of the refund)
EV_CANCEL = const(6)  # a vend cancelled after approval, refunded: (seq, reason)
EV_END = const(7)  # the session ended
EV_TIMEOUT = const(8)  # the reader asked to end an unused session, or a vend waited too long for a card
EV_RESET = const(9)  # RESET (a: seq counted as sold, or 0)
EV_SEQUENCE = const(10)  # a command out of sequence: (command byte, sub)


def _copy(dst, src, n):
    """dst[:n] = src[:n] without the slice a MicroPython slice copy allocates."""
    for i in range(n):
        dst[i] = src[i]


class Reader:
    def __init__(self, host, settings):
        self.host = host
        self.s = settings
        self.out = bytearray(bus.MAX_BLOCK)  # the reply being sent
        self.out_n = 0
        self._q = [bytearray(bus.MAX_BLOCK) for _ in range(_QSLOTS)]  # poll replies waiting
        self._qn = bytearray(_QSLOTS)
        self._qhead = self._qlen = 0
        self._direct = bytearray(bus.MAX_BLOCK)  # a direct data reply not yet acknowledged
        self._direct_n = 0
        self._sent_from_queue = False  # the last data reply was the queue's head
        self.uid = bytearray(10)
        self.uid_len = 0
        self.state = INACTIVE
        self.level = 1
        self.always_idle = False
        self.sequence_errors = 0
        self.session_timeouts = 0
        self.max_price = self.min_price = 0
        self.answered = True
        self.reset()

    # -- state -------------------------------------------------------------------
    def reset(self):
        """Power-up or RESET: Inactive, JUST RESET waiting for the first POLL."""
        self.state = INACTIVE
        self.level = 1
        self.always_idle = False
        self._disable_after = False
        self._qhead = self._qlen = 0
        self._direct_n = 0
        self._sent_from_queue = False
        self._end_session()
        self._queue1(JUST_RESET)

    def _end_session(self):
        self.uid_len = 0
        self.account = 0
        self.funds = 0
        self._since = 0
        self._cancel_asked = False
        self._vend_card = False  # always idle: the card was tapped for a waiting vend, no session of its own
        self._vend_clear()

    def _vend_clear(self):
        self.price = 0  # øre
        self.item = 0
        self._decide = False  # a VEND REQUEST waits for work() to decide
        self.seq = 0  # the approved purchase of the vend in progress
        self._delivered = False  # the VMC acknowledged VEND APPROVED
        self._vend_since = 0

    def _units(self, ore):
        """øre -> the bus's scaled units, capped below FFFF (which means 'unknown')."""
        u = ore // self.s.unit_ore
        return 0xFFFE if u > 0xFFFE else (0 if u < 0 else u)

    # -- replies -----------------------------------------------------------------
    def _queue1(self, code):
        b = self._slot()
        if b is not None:
            b[0] = code
            self._push(1)

    def _slot(self):
        if self._qlen >= _QSLOTS:
            return None
        return self._q[(self._qhead + self._qlen) % _QSLOTS]

    def _push(self, n):
        self._qn[(self._qhead + self._qlen) % _QSLOTS] = bus.seal(self._q[(self._qhead + self._qlen) % _QSLOTS], n)
        self._qlen += 1

    def _drop_queued(self, code):
        """Remove queued replies starting with `code` (a vend answer the VMC no longer waits for)."""
        keep = 0
        for i in range(self._qlen):
            k = (self._qhead + i) % _QSLOTS
            if self._q[k][0] != code:
                j = (self._qhead + keep) % _QSLOTS
                if j != k:
                    _copy(self._q[j], self._q[k], bus.MAX_BLOCK)
                    self._qn[j] = self._qn[k]
                keep += 1
        self._qlen = keep

    def _reply_direct(self, n):
        """Seal out[:n] as a data reply and keep a copy until the VMC acknowledges it."""
        n = bus.seal(self.out, n)
        _copy(self._direct, self.out, n)
        self._direct_n = n
        self._sent_from_queue = False
        self.out_n = n
        return n

    def _ack(self):
        self.out_n = 0
        return 0  # the service sends a lone ACK (00, mode bit set) for 0 with `answered`

    def acked(self):
        """The VMC acknowledged the data reply just sent."""
        if self._sent_from_queue:
            if self._qlen:
                code = self._q[self._qhead][0]
                self._qhead = (self._qhead + 1) % _QSLOTS
                self._qlen -= 1
                if code == VEND_APPROVED and self.seq and self.state == VEND:
                    self._delivered = True
                    self.host.delivered(self.seq)
            self._sent_from_queue = False
        else:
            self._direct_n = 0

    def retransmit(self):
        """RET: send the same data reply again (its length; it is in out)."""
        return self.out_n

    # -- the VMC's commands ----------------------------------------------------------
    def handle(self, blk, n, now):
        """One checked VMC block. Returns the length of the data reply in `out`, or 0:
        answer a lone ACK (when `answered` is True) or nothing. `answered` is False when
        the reader stays silent (a command it does not know)."""
        self.answered = True
        self.out_n = 0
        cmd = blk[0] & 7
        sub = blk[1] if n > 2 else -1
        if cmd == 2:
            self._timeouts(now)
            return self._poll()
        if cmd == 0:
            self._on_reset()
            return 0
        st = self.state
        if cmd == 1:
            if sub == 0:
                if st not in (INACTIVE, DISABLED):
                    return self._out_of_sequence(blk)
                return self._setup_config(blk)
            if st == INACTIVE or st == DISABLED or st == ENABLED:
                self.max_price = (blk[2] << 8) | blk[3]
                self.min_price = (blk[4] << 8) | blk[5]
                return 0
            return self._out_of_sequence(blk)
        if cmd == 7:
            if st == INACTIVE:
                return self._out_of_sequence(blk)
            if sub == 0:
                return self._peripheral_id()
            if self.level >= 3:  # 17 04: optional features enabled
                self.always_idle = bool(blk[5] & ALWAYS_IDLE_BIT)
            return 0
        if cmd == 4:
            return self._reader(sub, blk)
        if cmd == 3:
            return self._vend(sub, blk, now)
        if cmd == 5:  # REVALUE: this reader holds no cash value to add to
            if st < IDLE:
                return self._out_of_sequence(blk)
            self.out[0] = REVALUE_DENIED
            return self._reply_direct(1)
        self.answered = False
        return 0

    def _poll(self):
        if self._direct_n:  # a direct reply the VMC did not acknowledge: repeat it
            n = self._direct_n
            _copy(self.out, self._direct, n)
            self.out_n = n
            self._sent_from_queue = False
            return n
        if self._qlen:
            k = self._qhead
            n = self._qn[k]
            _copy(self.out, self._q[k], n)
            self.out_n = n
            self._sent_from_queue = True
            return n
        return 0

    def _on_reset(self):
        seq = 0
        if self.state == VEND and self.seq:
            if self._delivered:  # the standard: RESET between VEND APPROVED and SUCCESS is a sale
                seq = self.seq
            else:  # the VMC never heard the approval: nothing was sold
                self.host.refund(self.seq)
        self.host.event(EV_RESET, seq, 0)
        self.reset()

    def _setup_config(self, blk):
        vmc_level = blk[2]
        self.level = 1 if vmc_level < 1 else (vmc_level if vmc_level < self.s.level else self.s.level)
        s, o = self.s, self.out
        o[0] = READER_CONFIG
        o[1] = self.level
        o[2] = s.currency >> 8
        o[3] = s.currency & 0xFF
        o[4] = s.scale
        o[5] = s.decimals
        o[6] = s.max_response_s
        o[7] = 0  # options: no refunds by the VMC, not multivend, no display, no cash sale
        self.state = DISABLED
        return self._reply_direct(8)

    def _peripheral_id(self):
        o, s = self.out, self.s
        o[0] = PERIPHERAL_ID
        o[1:4] = s.manufacturer
        o[4:16] = s.serial
        o[16:28] = s.model
        o[28] = s.version >> 8
        o[29] = s.version & 0xFF
        n = 30
        if self.level >= 3:  # optional features offered: always idle only
            o[30] = o[31] = o[32] = 0
            o[33] = ALWAYS_IDLE_BIT
            n = 34
        return self._reply_direct(n)

    def _reader(self, sub, blk):
        st = self.state
        if st == INACTIVE:
            return self._out_of_sequence(blk)
        if sub == 0:  # DISABLE: at once, or when the session in progress ends
            if st >= IDLE and self.uid_len:
                self._disable_after = True
            else:
                self.state = DISABLED
                self._end_session()
        elif sub == 1:  # ENABLE
            self._disable_after = False
            if st == DISABLED:
                self.state = IDLE if self.always_idle else ENABLED
        else:  # CANCEL
            self._queue1(CANCELLED)
        return 0

    def _vend(self, sub, blk, now):
        st = self.state
        if sub == 0:  # VEND REQUEST price(2) item(2)
            if st != IDLE:
                return self._out_of_sequence(blk)
            self._vend_clear()
            self.price = ((blk[2] << 8) | blk[3]) * self.s.unit_ore
            self.item = (blk[4] << 8) | blk[5]
            self.state = VEND
            self._vend_since = now
            self._decide = True
            return 0
        if sub == 1:  # VEND CANCEL: the customer gave up before the product
            if st != VEND:
                return self._out_of_sequence(blk)
            if self.seq:
                self._drop_queued(VEND_APPROVED)
                self.host.event(EV_CANCEL, self.seq, self.host.refund(self.seq))
            self._vend_done()
            self.out[0] = VEND_DENIED
            return self._reply_direct(1)
        if sub == 2 or sub == 3:  # VEND SUCCESS item(2) / VEND FAILURE
            if st != VEND or not self.seq:
                return self._out_of_sequence(blk)
            if sub == 2:
                self.host.event(EV_SUCCESS, self.seq, 0)
            else:
                self.host.event(EV_FAILURE, self.seq, self.host.refund(self.seq))
            self._vend_done()
            return 0
        if sub == 4:  # SESSION COMPLETE
            if st < IDLE:
                return self._out_of_sequence(blk)
            if st == VEND and self.seq and not self._delivered:
                self._drop_queued(VEND_APPROVED)
                self.host.event(EV_CANCEL, self.seq, self.host.refund(self.seq))
            self._drop_queued(VEND_APPROVED)
            self._drop_queued(VEND_DENIED)
            self._drop_queued(SESSION_CANCEL)
            self._drop_queued(BEGIN_SESSION)
            self._queue1(END_SESSION)
            self._end_session()
            self.host.event(EV_END, 0, 0)
            if self._disable_after:
                self._disable_after = False
                self.state = DISABLED
            else:
                self.state = IDLE if self.always_idle else ENABLED
            return 0
        if sub == 5:  # CASH SALE: nothing of ours
            return 0
        return self._out_of_sequence(blk)

    def _vend_done(self):
        self.state = IDLE
        self._vend_clear()
        self._since = 0  # the session's timeout counts again from the next work()

    def _out_of_sequence(self, blk):
        self.sequence_errors += 1
        self.host.event(EV_SEQUENCE, blk[0], blk[1] if len(blk) > 1 else 0)
        self.out[0] = OUT_OF_SEQUENCE
        if self.level >= 2:
            self.out[1] = self.state
            return self._reply_direct(2)
        return self._reply_direct(1)

    # -- the card and the clock ----------------------------------------------------------
    def card(self, uid, now):
        """A card was tapped. Opens a session when enabled; in always-idle mode it is the
        card a waiting VEND REQUEST is decided with. Returns True if the reader took it."""
        st = self.state
        if st == VEND and not self.uid_len:
            if not self._decide:
                return False
            n = len(uid)  # always idle: this card pays for the vend the customer chose
            self.uid[:n] = uid
            self.uid_len = n
            self._vend_card = True
            self._decide = False
            self._decision()  # a refused card (blocked, unknown, ...) denies it with its reason
            return True
        if st == ENABLED or (st == IDLE and not self.uid_len):
            code, funds, account = self.host.funds(uid)
            if code != _APPROVED:
                self.host.event(EV_REFUSED, code, 0)
                return False
            n = len(uid)
            self.uid[:n] = uid
            self.uid_len = n
            self.account, self.funds = account, funds
            self._since = now
            self.state = IDLE
            self._begin_session(funds, account)
            self.host.event(EV_SESSION, funds, account)
            return True
        return False

    def _begin_session(self, funds, account):
        b = self._slot()
        if b is None:
            return
        u = self._units(funds)
        b[0] = BEGIN_SESSION
        b[1] = u >> 8
        b[2] = u & 0xFF
        n = 3
        if self.level >= 2:  # payment media ID (the account), type 00 normal card, data 0000
            b[3] = (account >> 24) & 0xFF
            b[4] = (account >> 16) & 0xFF
            b[5] = (account >> 8) & 0xFF
            b[6] = account & 0xFF
            b[7] = b[8] = b[9] = 0
            n = 10
        self._push(n)

    def work(self, now):
        """After the reply went out: run a waiting decision (the slow part: a flash write)."""
        if self.state == VEND and self._decide and self.uid_len and self.host.ready():
            self._decide = False
            self._decision()
        self._timeouts(now)

    def _timeouts(self, now):
        """A vend waiting too long for a card (always idle), a session nobody uses."""
        st = self.state
        if st == VEND:
            if self._decide and not self.uid_len and ticks_diff(now, self._vend_since) > self.s.max_response_s * 1000:
                self._decide = False  # always idle: no card came in time
                self.session_timeouts += 1
                self.host.event(EV_TIMEOUT, 0, 0)
                self._vend_done()
                self._queue1(VEND_DENIED)
            return
        if st == IDLE and self.uid_len and not self._cancel_asked:
            if not self._since:
                self._since = now
            elif ticks_diff(now, self._since) > self.s.session_timeout_ms:
                self._cancel_asked = True  # the VMC answers with SESSION COMPLETE
                self.session_timeouts += 1
                self.host.event(EV_TIMEOUT, 0, 0)
                self._queue1(SESSION_CANCEL)

    def _decision(self):
        price = self.price
        code, seq, after = self.host.vend(memoryview(self.uid)[:self.uid_len], price, self.item)
        self.host.event(EV_VEND, code, price)
        b = self._slot()
        if code == _APPROVED and seq:
            self.seq = seq
            self.funds = after
            if b is None:  # cannot happen: a vend is one queue entry at a time; refuse safely
                self.host.refund(seq)
                self.seq = 0
                return
            u = self._units(price)
            b[0] = VEND_APPROVED
            b[1] = u >> 8
            b[2] = u & 0xFF
            self._push(3)
        else:
            self._vend_done()
            self._queue1(VEND_DENIED)
            if self._vend_card:
                self.uid_len = 0  # the card came only for this vend: the next one may be another
                self._vend_card = False