"""The VMC emulator (simulator/vmc.py) against the reader's service (cpos.mdb.service) on
CPython, over the virtual bus (TCP, mode byte + data byte), with a stand-in app
(tests/support/mdb_fakes.py) for the decision path. The firmware itself on the unix port is
tests/test_mdb_firmware.py; the reader byte by byte on both runtimes is
tests/device/test_mdb_reader.py.

What is shown: the init sequence at each level, sessions (normal vend, vend failure with a
refund, cancel by the customer, timeout, always idle), and a misbehaving VMC (bad checksums,
NAK and RET, garbage, RESET in the middle of a vend, commands out of sequence) that never
stops the reader, never charges twice and never loses a sale.
"""
import asyncio
import socket

from cpos import log as logmod
from cpos.mdb.link import make_link
from cpos.mdb.service import Service
from cpos.mdb.settings import Settings
from simulator.vmc import ADDR, POLL, VEND, VMC, NoAnswer
from support.mdb_fakes import FakeApp

CARD = bytes.fromhex("04A1B2C3")
POOR = bytes.fromhex("04000005")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def world(test, level=3, vmc_level=3, always_idle=False, with_reverse=True, **settings):
    """Run `test(app, svc, vmc, lines)` with a fresh reader service and a VMC connected."""
    async def go():
        port = free_port()
        app = FakeApp({CARD: (77, 10000), POOR: (5, 500)}, with_reverse=with_reverse)
        cfg = {"link": "tcp", "host": "127.0.0.1", "port": port, "level": level}
        cfg.update(settings)
        s = Settings(cfg)
        lines = []
        svc = Service(app, s, make_link(s.spec), logmod.Log(lines.append))
        task = asyncio.ensure_future(svc.run())
        vmc = VMC("127.0.0.1", port, level=vmc_level, always_idle=always_idle, t_response=2.0, poll_every=0.005)
        await vmc.connect()
        try:
            await vmc.init()
            await test(app, svc, vmc, lines)
            assert not task.done(), task  # the reader's task is alive after all of it
        finally:
            vmc.close()
            task.cancel()
            svc.link.close()
    asyncio.run(go())


def test_init_at_each_level_and_always_idle_only_at_level_3():
    for vmc_level in (1, 2, 3):
        async def check(app, svc, vmc, lines, vmc_level=vmc_level):
            assert vmc.config == bytes([0x01, vmc_level, 0x12, 0x08, 0x01, 0x02, 0x05, 0x00]), vmc.config.hex()
            assert vmc.always_idle == (vmc_level == 3)
            assert svc.reader.state == (4 if vmc_level == 3 else 3)
        world(check, vmc_level=vmc_level, always_idle=True)


def test_sessions_vend_failure_cancel_denied_and_timeout():
    async def t(app, svc, vmc, lines):
        assert await vmc.vend(1500, 3, tap=lambda: svc.tap(CARD, 0)) == "sold"
        assert vmc.funds == 10000 and vmc.media_id == 77  # BEGIN SESSION: balance, account as media ID
        assert await vmc.vend(1200, 4, tap=lambda: svc.tap(CARD, 0), outcome="failure") == "failed"
        assert await vmc.vend(1000, 5, tap=lambda: svc.tap(CARD, 0), outcome="cancel") == "cancelled"
        assert await vmc.vend(1000, 6, tap=lambda: svc.tap(POOR, 0)) == "denied"
        assert await vmc.vend(1000, 7, tap=lambda: svc.tap(CARD, 0), outcome="walk") == "timeout"
        # the journal and the machine agree: two approvals kept, the failed one reversed
        kept = [r for r in app.journal if r[3] is None]
        assert [r[2] for r in kept] == [1500] and vmc.sold == [(3, 1500)], (app.journal, vmc.sold)
        assert len(app.reversals) == len(app.journal) - 1  # failure, and cancel if it was approved first
        assert app.balances[CARD][1] == 10000 - 1500
    world(t, level=2, vmc_level=2, session_timeout_s=1)


def test_always_idle_vend_request_before_the_card():
    async def t(app, svc, vmc, lines):
        assert vmc.always_idle
        assert await vmc.vend(2500, 9, tap=lambda: svc.tap(CARD, 0)) == "sold"
        assert await vmc.vend(2500, 9, tap=None) == "denied"  # nobody tapped within max_response_s
        assert [r[2] for r in app.journal] == [2500]
    world(t, always_idle=True, max_response_s=1)


def test_a_misbehaving_vmc_never_stops_the_reader_nor_doubles_a_sale():
    async def t(app, svc, vmc, lines):
        # a bad checksum gets no answer; the VMC repeats the command and is answered
        async with vmc.lock:
            try:
                await vmc.exchange([ADDR | POLL], bad_checksum=True)
                raise AssertionError("a block with a bad checksum was answered")
            except NoAnswer:
                pass
        assert svc.framer.bad == 1
        # garbage on the bus before a command, and a torn block
        await vmc.raw([(0, 0x55), (0, 0x12), (1, 0x13), (0, 0x00)])
        async with vmc.lock:
            kind, _ = await vmc.command(ADDR | POLL, garbage=b"\x99\x98")
        assert kind in ("ACK", "DATA")
        # NAK of BEGIN SESSION: it comes again at the next POLL, the session opens once
        vmc.misbehave.add("nak_once")
        svc.tap(CARD, 0)
        p = await vmc.poll_until((0x03,), 5.0)
        assert p is not None and vmc.naks_sent == 1
        # RET of VEND APPROVED: the same block again at once; one purchase
        async with vmc.lock:
            await vmc.command(ADDR | VEND, 0x00, 0x01, 0x00, 0x00, 0x01)
        vmc.misbehave.add("ret_once")
        p = await vmc.poll_until((0x05,), 5.0)
        assert p == bytes([0x05, 0x01, 0x00]) and vmc.rets_sent == 1
        # out of sequence: a second VEND REQUEST during the vend, SETUP in a session
        async with vmc.lock:
            kind, p = await vmc.command(ADDR | VEND, 0x00, 0x00, 0x10, 0x00, 0x01)
        assert (kind, p) == ("DATA", bytes([0x0B, 0x05])), (kind, p)
        # RESET between VEND APPROVED and VEND SUCCESS: a sale, not refunded
        async with vmc.lock:
            await vmc.command(ADDR)
        assert [r[2] for r in app.journal] == [256] and app.reversals == []
        assert svc.reader.sequence_errors >= 1
        await vmc.init()
        assert await vmc.vend(100, 2, tap=lambda: svc.tap(CARD, 0)) == "sold"
        assert len(app.journal) == 2 and app.reversals == []
        assert any("out of sequence" in ln for ln in lines) and any("bad block" in ln for ln in lines)
    world(t, level=2, vmc_level=2)


def test_without_app_reverse_a_failed_vend_is_logged_not_a_crash():
    async def t(app, svc, vmc, lines):
        assert await vmc.vend(1500, 3, tap=lambda: svc.tap(CARD, 0), outcome="failure") == "failed"
        assert any(ln.startswith("E MDB: cannot refund purchase 1") for ln in lines), lines
    world(t, with_reverse=False)
