"""The MDB cashless reader (cpos.mdb.bus, cpos.mdb.cashless) byte by byte, on both runtimes.

A test VMC here writes blocks as the standard spells them (address with the mode bit,
data, 8-bit sum) into the framer, and the reader's replies are compared with exact bytes:
- the framer: blocks by mode bit, other peripherals skipped, bad checksums, ACK/RET/NAK
  only after a data reply, and framing without the mode bit (ESP32 UART) by address,
  length and checksum;
- the init sequence at Levels 1, 2 and 3 (the level the VMC announces), READER CONFIG
  with DKK 12 08 and the scale, PERIPHERAL ID;
- sessions (BEGIN SESSION with funds, Level 2+ the account as media ID), vend approved,
  denied, success, failure (refunded), cancel, session complete, reader disable, enable,
  cancel, always idle, out of sequence, a block repeated until the VMC ACKs it, RESET in
  the middle of a vend, the session timeout, prices in scaled units;
- framing and answering a POLL allocate nothing (MicroPython).
"""
import gc
import sys

from cpos import reasons
from cpos.mdb import bus, cashless
from cpos.mdb.settings import Settings

UID = b"\x04\xa1\xb2\xc3"
ACCOUNT = 0x01020304


class Host:
    """The app's side: funds, decisions, refunds, delivered notes, events."""

    def __init__(self, balance=10000, code=reasons.APPROVED):
        self.balance = balance
        self.code = code
        self.vends = []
        self.refunds = []
        self.delivered_seqs = []
        self.events = []
        self.seq = 0
        self.is_ready = True

    def funds(self, uid):
        return (reasons.APPROVED, self.balance, ACCOUNT) if bytes(uid) == UID else (reasons.UNKNOWN_CARD, 0, 0)

    def ready(self):
        return self.is_ready

    def vend(self, uid, amount, item):
        self.vends.append((bytes(uid), amount, item))
        if bytes(uid) != UID:
            return reasons.BLOCKED, 0, 0
        if self.code != reasons.APPROVED or amount > self.balance:
            return reasons.INSUFFICIENT_FUNDS if self.code == reasons.APPROVED else self.code, 0, self.balance
        self.seq += 1
        self.balance -= amount
        return reasons.APPROVED, self.seq, self.balance

    def refund(self, seq):
        self.refunds.append(seq)
        return reasons.APPROVED

    def delivered(self, seq):
        self.delivered_seqs.append(seq)

    def event(self, kind, a, b):
        self.events.append(kind)


class Bus:
    """A VMC's view: send a command block, get the reader's answer (as the service moves it)."""

    def __init__(self, host=None, mode_known=True, **settings):
        cfg = {"link": "tcp", "host": "x", "port": 1}
        cfg.update(settings)
        self.host = host or Host()
        self.f = bus.Framer(0x10)
        self.r = cashless.Reader(self.host, Settings(cfg))
        self.mode_known = mode_known
        self.now = 1000

    def _feed(self, b, m):
        f, r = self.f, self.r
        k = f.feed(b, m if self.mode_known else -1)
        if k == bus.BLOCK:
            n = r.handle(f.buf, f.last_n, self.now)
            if n:
                f.awaiting = True
                out = bytes(r.out[:n])
            else:
                out = b"ACK" if r.answered else b""
            r.work(self.now)
            return out
        if k == bus.GOT_ACK:
            r.acked()
        if k == bus.GOT_RET:
            f.awaiting = True
            return bytes(r.out[:r.retransmit()])
        if k == bus.BAD:
            return b"BAD"
        return None

    def cmd(self, *data, bad=False, ack=True):
        """One block; returns the reply: b"ACK", b"" (silence) or the data reply without
        its checksum (checked here), which the VMC then ACKs unless `ack` is False."""
        block = bytes(data)
        c = sum(block) & 0xFF
        if bad:
            c ^= 0x21
        if not self.mode_known:
            self.f.gap()
        out = None
        for i, b in enumerate(block + bytes([c])):
            got = self._feed(b, 1 if i == 0 else 0)
            if got is not None:
                out = got
        if out in (b"ACK", b"", b"BAD"):
            return out
        assert out is not None, "no answer"
        assert sum(out[:-1]) & 0xFF == out[-1], "bad checksum from the reader: %s" % out
        if ack:
            self._feed(0x00, 0)
        return out[:-1]

    def poll(self, ack=True):
        return self.cmd(0x12, ack=ack)

    def init(self, level=3, always_idle=False):
        assert self.cmd(0x10) == b"ACK"
        assert self.poll() == b"\x00"  # JUST RESET
        cfg = self.cmd(0x11, 0x00, level, 0, 0, 0)
        assert self.cmd(0x11, 0x01, 0xFF, 0xFF, 0x00, 0x00) == b"ACK"
        pid = self.cmd(0x17, 0x00, *(b"VMC" + b"0" * 12 + b"M" * 12 + b"\x01\x00"))
        if always_idle:
            assert self.cmd(0x17, 0x04, 0, 0, 0, 0x20) == b"ACK"
        assert self.cmd(0x14, 0x01) == b"ACK"
        return cfg, pid

    def tap(self, uid=UID):
        return self.r.card(uid, self.now)


def test_framer_blocks_by_mode_bit_skips_others_and_refuses_bad_checksums():
    f = bus.Framer(0x10)
    kinds = [f.feed(b, m) for b, m in ((0x0B, 1), (0x0B, 0), (0x12, 1), (0x12, 0))]  # changer POLL, ours
    assert kinds == [bus.NOTHING, bus.NOTHING, bus.NOTHING, bus.BLOCK], kinds
    assert f.last_n == 2 and bytes(f.buf[:2]) == b"\x12\x12"
    assert [f.feed(b, m) for b, m in ((0x12, 1), (0x13, 0))] == [bus.NOTHING, bus.BAD]
    assert f.feed(0x00, 0) == bus.NOTHING and f.garbage == 1  # an ACK nobody asked for is noise
    f.awaiting = True
    assert f.feed(0xAA, 0) == bus.GOT_RET
    f.awaiting = True
    assert f.feed(0xFF, 0) == bus.GOT_NAK
    f.awaiting = True
    assert f.feed(0x00, 0) == bus.GOT_ACK
    # a VEND REQUEST cut short by the next address is dropped, and the new block read
    got = [f.feed(b, m) for b, m in ((0x13, 1), (0x00, 0), (0x12, 1), (0x12, 0))]
    assert got[-1] == bus.BLOCK and f.last_n == 2, got


def test_framer_without_the_mode_bit_cuts_by_address_length_and_checksum():
    f = bus.Framer(0x10)
    vend = bytes([0x13, 0x00, 0x00, 0x64, 0x00, 0x07])
    stream = vend + bytes([sum(vend) & 0xFF]) + b"\x12\x12"
    kinds = [f.feed(b, -1) for b in stream]
    assert kinds.count(bus.BLOCK) == 2 and kinds[6] == bus.BLOCK and kinds[8] == bus.BLOCK, kinds
    f.gap()
    assert [f.feed(b, -1) for b in b"\x33\x33"] == [bus.NOTHING, bus.NOTHING]  # a bill validator's
    f.gap()
    assert [f.feed(b, -1) for b in b"\x12\x12"] == [bus.NOTHING, bus.BLOCK]
    f.awaiting = True
    assert f.feed(0x00, -1) == bus.GOT_ACK  # after our data reply, 00 is the VMC's ACK
    assert f.feed(0x10, -1) == bus.NOTHING and f.feed(0x10, -1) == bus.BLOCK  # RESET


def test_init_answers_at_the_level_the_vmc_announces():
    for vmc_level, want in ((1, 1), (2, 2), (3, 3)):
        b = Bus()
        cfg, pid = b.init(level=vmc_level)
        assert cfg == bytes([0x01, want, 0x12, 0x08, 0x01, 0x02, 0x05, 0x00]), (vmc_level, cfg)
        assert pid[0] == 0x09 and pid[1:4] == b"CPS" and len(pid) == (34 if want == 3 else 30), pid
        assert b.r.state == cashless.ENABLED
    b = Bus(level=2)  # a reader configured for Level 2 answers 2 to a Level 3 VMC
    assert b.init(level=3)[0][1] == 2


def test_a_level_1_session_vend_approved_success_and_end():
    b = Bus()
    b.init(level=1)
    assert b.poll() == b"ACK"
    assert b.tap()
    assert b.poll() == bytes([0x03, 0x27, 0x10])  # BEGIN SESSION, 100.00 kr: Level 1 has funds only
    assert b.cmd(0x13, 0x00, 0x05, 0xDC, 0x00, 0x0C) == b"ACK"  # VEND REQUEST 15.00 kr item 12
    assert b.host.vends == [(UID, 1500, 12)]
    assert b.poll() == bytes([0x05, 0x05, 0xDC])  # VEND APPROVED 15.00
    assert b.host.delivered_seqs == [1]
    assert b.cmd(0x13, 0x02, 0x00, 0x0C) == b"ACK"  # VEND SUCCESS
    assert b.cmd(0x13, 0x04) == b"ACK"  # SESSION COMPLETE
    assert b.poll() == b"\x07"  # END SESSION
    assert b.r.state == cashless.ENABLED and b.host.refunds == []
    assert b.poll() == b"ACK"


def test_a_vend_waits_for_the_clock_just_after_a_start_and_polls_are_answered_meanwhile():
    b = Bus()
    b.init(level=1)
    b.host.is_ready = False  # the time is unknown and a first time is due (TimeKeeper.waiting)
    assert b.tap()
    assert b.poll() == bytes([0x03, 0x27, 0x10])
    assert b.cmd(0x13, 0x00, 0x05, 0xDC, 0x00, 0x0C) == b"ACK"  # VEND REQUEST: not decided yet
    for _ in range(3):
        assert b.poll() == b"ACK" and b.host.vends == []
    b.host.is_ready = True  # a source answered (or the wait is over: the offline policy decides)
    assert b.poll() == b"ACK" and b.host.vends == [(UID, 1500, 12)]  # decided after this POLL's reply
    assert b.poll() == bytes([0x05, 0x05, 0xDC])  # VEND APPROVED at the next


def test_level_2_begin_session_names_the_account_and_denied_vends_stay_in_the_session():
    b = Bus(host=Host(balance=1000))
    b.init(level=2)
    b.tap()
    assert b.poll() == bytes([0x03, 0x03, 0xE8, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00])
    assert b.cmd(0x13, 0x00, 0x05, 0xDC, 0x00, 0x01) == b"ACK"
    assert b.poll() == b"\x06"  # VEND DENIED: 15.00 > 10.00
    assert b.r.state == cashless.IDLE
    assert b.cmd(0x13, 0x04) == b"ACK" and b.poll() == b"\x07"


def _vending(*price_and_item):
    """A Level 2 bus in a session (a card tapped, BEGIN SESSION polled) that has sent VEND
    REQUEST with `price_and_item` (price high, low, item high, low)."""
    b = Bus()
    b.init(level=2)
    b.tap()
    b.poll()
    b.cmd(0x13, 0x00, *price_and_item)
    return b


def test_vend_failure_refunds_the_purchase_once():
    b = _vending(0x01, 0x00, 0x00, 0x02)
    assert b.poll()[0] == 0x05
    assert b.cmd(0x13, 0x03) == b"ACK"  # VEND FAILURE
    assert b.host.refunds == [1]
    assert b.cmd(0x13, 0x03) == bytes([0x0B, 0x04])  # a second failure is out of sequence, no refund
    assert b.host.refunds == [1]


def test_vend_cancel_before_the_approval_was_heard_refunds_and_denies():
    b = _vending(0x01, 0x00, 0x00, 0x02)  # decided and journaled; VEND APPROVED waits for a POLL
    assert b.cmd(0x13, 0x01) == b"\x06"  # VEND CANCEL -> VEND DENIED
    assert b.host.refunds == [1] and b.host.delivered_seqs == []
    assert b.poll() == b"ACK"  # the approval is no longer queued


def test_reader_disable_enable_cancel_and_out_of_sequence():
    b = Bus()
    b.init(level=2)
    assert b.cmd(0x13, 0x00, 0x00, 0x10, 0x00, 0x01) == bytes([0x0B, 0x03])  # VEND REQUEST while Enabled
    assert b.cmd(0x14, 0x00) == b"ACK" and b.r.state == cashless.DISABLED
    assert not b.tap()  # disabled: no session
    assert b.poll() == b"ACK"
    assert b.cmd(0x14, 0x01) == b"ACK" and b.r.state == cashless.ENABLED
    assert b.cmd(0x14, 0x02) == b"ACK" and b.poll() == b"\x08"  # READER CANCEL -> CANCELLED
    b1 = Bus()
    b1.init(level=1)
    assert b1.cmd(0x13, 0x02, 0, 1) == b"\x0B"  # Level 1: no state byte
    assert b1.cmd(0x15, 0x01) == b"\x0B"
    b0 = Bus()
    assert b0.cmd(0x14, 0x01) == bytes([0x0B])  # ENABLE before SETUP: still Inactive
    assert b0.cmd(0x16) == b"BAD" and b0.f.bad == 1  # a command it does not know: dropped, no answer


def test_always_idle_vend_request_first_then_the_card_or_a_timeout():
    b = Bus()
    b.init(level=3, always_idle=True)
    assert b.r.always_idle and b.r.state == cashless.IDLE
    assert b.cmd(0x13, 0x00, 0x04, 0xB0, 0x00, 0x03) == b"ACK"  # 12.00 kr before any card
    assert b.poll() == b"ACK" and b.host.vends == []
    assert b.tap()
    assert b.poll() == bytes([0x05, 0x04, 0xB0])
    b.cmd(0x13, 0x02, 0x00, 0x03)
    b.cmd(0x13, 0x04)
    assert b.poll() == b"\x07" and b.r.state == cashless.IDLE  # back to Session Idle, not Enabled
    b.cmd(0x13, 0x00, 0x04, 0xB0, 0x00, 0x03)
    b.now += 5001  # max_response_s 5: nobody tapped
    assert b.poll() == b"\x06" and len(b.host.vends) == 1


def test_always_idle_a_refused_card_denies_the_waiting_vend_at_once():
    b = Bus()
    b.init(level=3, always_idle=True)
    b.cmd(0x13, 0x00, 0x04, 0xB0, 0x00, 0x03)
    assert b.tap(b"\x04\x99\x99\x99")  # a blocked card: decided (its reason shown), not waited on
    assert b.poll() == b"\x06" and b.host.vends[-1][0] == b"\x04\x99\x99\x99"
    b.cmd(0x13, 0x04)
    assert b.poll() == b"\x07"
    b.cmd(0x13, 0x00, 0x04, 0xB0, 0x00, 0x03)  # the customer tries again with the right card
    assert b.tap()
    assert b.poll() == bytes([0x05, 0x04, 0xB0])
    b = Bus()
    b.init(level=2)
    assert not b.tap(b"\x04\x99\x99\x99")  # not always idle: no session for a refused card
    assert b.host.events[-1] == cashless.EV_REFUSED and b.poll() == b"ACK"


def test_an_unacknowledged_block_is_repeated_at_the_next_poll():
    b = Bus()
    b.init(level=2)
    b.tap()
    first = b.poll(ack=False)  # BEGIN SESSION, the VMC's ACK lost
    assert first[0] == 0x03
    assert b.poll() == first  # repeated
    assert b.poll() == b"ACK"
    cfg = b.cmd(0x11, 0x00, 2, 0, 0, 0, ack=False)  # out of sequence in a session, not ACKed
    assert b.poll() == cfg  # a direct reply is repeated too
    b.cmd(0x13, 0x00, 0x00, 0x64, 0x00, 0x01)
    b.f.awaiting = False
    got = b.poll(ack=False)
    assert got[0] == 0x05
    assert b._feed(0xAA, 0)[:-1] == got  # RET: sent again at once
    assert b.host.delivered_seqs == []
    b._feed(0x00, 0)
    assert b.host.delivered_seqs == [1]


def test_reset_mid_vend_counts_as_a_sale_only_after_the_approval_was_heard():
    b = _vending(0x00, 0x64, 0x00, 0x01)
    assert b.poll()[0] == 0x05
    assert b.cmd(0x10) == b"ACK"  # RESET between VEND APPROVED and VEND SUCCESS
    assert b.host.refunds == [] and b.r.state == cashless.INACTIVE and b.poll() == b"\x00"
    b = _vending(0x00, 0x64, 0x00, 0x01)
    assert b.cmd(0x10) == b"ACK"  # RESET before the VMC heard VEND APPROVED: nothing was sold
    assert b.host.refunds == [1]


def test_a_session_nobody_uses_is_cancelled_by_the_reader():
    b = Bus(session_timeout_s=30)
    b.init(level=2)
    b.tap()
    b.poll()
    b.now += 29000
    assert b.poll() == b"ACK"
    b.now += 2000
    assert b.poll() == b"\x04"  # SESSION CANCEL REQUEST
    assert b.poll() == b"ACK"  # asked once
    assert b.cmd(0x13, 0x04) == b"ACK" and b.poll() == b"\x07"


def test_prices_are_in_the_units_of_reader_config():
    b = Bus(scale=5, decimals=2, host=Host(balance=10000000))
    cfg, _ = b.init(level=2)
    assert cfg[4:6] == b"\x05\x02"
    b.tap()
    assert b.poll()[1:3] == b"\xFF\xFE"  # 100000 kr is past 16 bits: capped below FFFF (unknown)
    b.cmd(0x13, 0x00, 0x00, 0x64, 0x00, 0x01)  # 100 units of 5 øre
    assert b.host.vends[-1][1] == 500
    assert b.poll() == bytes([0x05, 0x00, 0x64])
    b = Bus(scale=1, decimals=1)
    b.init(level=1)
    b.tap()
    assert b.poll() == bytes([0x03, 0x03, 0xE8])  # 100.00 kr in tenths: 1000
    b.cmd(0x13, 0x00, 0x00, 0x0F, 0x00, 0x01)  # 1.5 kr
    assert b.host.vends[-1][1] == 150


def test_a_mode_blind_link_runs_the_same_session():
    b = Bus(mode_known=False)
    b.init(level=2)
    b.tap()
    assert b.poll()[0] == 0x03
    assert b.cmd(0x13, 0x00, 0x00, 0x64, 0x00, 0x01) == b"ACK"
    assert b.poll() == bytes([0x05, 0x00, 0x64])
    assert b.cmd(0x13, 0x02, 0x00, 0x01) == b"ACK"


def test_framing_and_answering_polls_allocate_nothing():
    if sys.implementation.name != "micropython":
        return
    b = Bus()
    b.init(level=2)
    f, r = b.f, b.r
    poll = (0x12, 0x12)
    for _ in range(3):
        for x in poll:
            if f.feed(x, 1 if x == poll[0] and f.n == 0 else 0) == bus.BLOCK:
                r.handle(f.buf, f.last_n, 5)
                r.work(5)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(50):
        assert f.feed(0x12, 1) == bus.NOTHING
        assert f.feed(0x12, 0) == bus.BLOCK
        r.handle(f.buf, f.last_n, 5)
        r.work(5)
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used
    # a queued reply: READER CANCEL, the POLL that answers CANCELLED, the VMC's ACK
    cancel = (0x14, 0x02, 0x16)

    def cycle():
        for i in range(3):  # (enumerate would allocate its iterator)
            if f.feed(cancel[i], 1 if i == 0 else 0) == bus.BLOCK:
                r.handle(f.buf, f.last_n, 5)
        assert f.feed(0x12, 1) == bus.NOTHING and f.feed(0x12, 0) == bus.BLOCK
        n = r.handle(f.buf, f.last_n, 5)
        assert n == 2 and r.out[0] == cashless.CANCELLED
        f.awaiting = True
        assert f.feed(0x00, 0) == bus.GOT_ACK
        r.acked()
    cycle()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(20):
        cycle()
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used
