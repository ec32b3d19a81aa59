"""Broker-level guarantees with the real backend service: a terminal cannot publish as another
terminal, and duplicated and reordered batches sent through mosquitto are applied once."""
import asyncio

from cpos.net import messages
from cpos.net.mqtt import MQTTClient
from fake_journal import make_record
from backend import Backend, Ledger  # noqa: F401
from support.seeded import fake_ledger


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _world(broker, db):
    led = fake_ledger(db)
    be = Backend(led, broker.host, broker.port, "backend", broker.users["backend"])
    task = asyncio.create_task(be.run())
    assert await be.client.wait_connected(5000)
    return led, be, task


async def _terminal(broker, tid, acks):
    c = MQTTClient(tid, broker.host, broker.port, tid, broker.users[tid], keepalive=10)
    c.subscribe(messages.topic(broker.site, tid, messages.ACK), 1,
                lambda t, p, r: acks.append(messages.decode_ack(p)))
    task = asyncio.create_task(c.run())
    assert await c.wait_connected(5000)
    await asyncio.sleep(0.1)
    return c, task


async def _until(pred, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


def test_terminal_cannot_publish_as_another(broker, tmp_path):
    async def main():
        led, be, bt = await _world(broker, str(tmp_path / "l.db"))
        acks1, acks2 = [], []
        t1, k1 = await _terminal(broker, "t0001", acks1)
        t2, k2 = await _terminal(broker, "t0002", acks2)
        site = broker.site
        forged = messages.encode_batch(1, 3, [make_record(s, terminal=1) for s in (1, 2, 3)])
        # t0002 publishes terminal 1's records under t0001's topic: the broker drops it.
        assert await t2.publish(messages.topic(site, "t0001", messages.BATCH), forged)
        # t0002 forges an ack for t0001: dropped as well (only the backend may write down/).
        assert await t2.publish(messages.topic(site, "t0001", messages.ACK), messages.encode_ack(3, 0))
        # t0002 sends terminal 1's records under its own topic: the backend refuses them.
        assert await t2.publish(messages.topic(site, "t0002", messages.BATCH), forged)
        assert await _until(lambda: be.rejected == 1)
        await asyncio.sleep(0.3)
        assert led.received_seqs(1) == [] and led.received_seqs(2) == []
        assert led.db.execute("SELECT count(*) FROM ledger").fetchone()[0] == 0
        assert acks1 == [] and acks2 == []
        assert led.db.execute("SELECT tid, error FROM rejected").fetchall() == [
            ("t0002", "record of terminal 1 in t0002's batch")]
        # Positive control: the same batch from t0001 itself is applied and acknowledged.
        assert await t1.publish(messages.topic(site, "t0001", messages.BATCH), forged)
        assert await _until(lambda: acks1 == [3])
        assert led.received_seqs(1) == [1, 2, 3]
        for c in (t1, t2):
            await c.stop()
        await be.stop()
        for k in (k1, k2, bt):
            k.cancel()

    run(main())


def test_duplicated_and_reordered_batches_applied_once(broker, tmp_path):
    async def main():
        led, be, bt = await _world(broker, str(tmp_path / "l.db"))
        acks = []
        t1, k1 = await _terminal(broker, "t0001", acks)
        recs = [make_record(s) for s in range(1, 101)]
        b = [messages.encode_batch(lo, lo + 19, recs[lo - 1:lo + 19]) for lo in range(1, 101, 20)]
        order = [b[3], b[1], b[1], b[4], b[0], b[3], b[2], b[0], b[4], b[2]]
        topic = messages.topic(broker.site, "t0001", messages.BATCH)
        for p in order:
            assert await t1.publish(topic, p)
        # Overlapping ranges, as a terminal resending with another batch size would send.
        assert await t1.publish(topic, messages.encode_batch(11, 50, recs[10:50]))
        assert await _until(lambda: be.applied == 11)
        assert await _until(lambda: acks and acks[-1] == 100)
        assert acks == sorted(acks)  # the watermark never goes back
        assert acks[0] == 0  # b[3] arrived first: applied, but nothing contiguous yet
        assert led.received_seqs(1) == list(range(1, 101))
        assert led.purchase_seqs(1) == [r["seq"] for r in recs if r["reason"] == 0]
        spent = sum(r["amount"] for r in recs if r["reason"] == 0)
        assert sum(led.balance(a) for a in range(1000, 1005)) == -spent
        await t1.stop()
        await be.stop()
        k1.cancel()
        bt.cancel()

    run(main())
