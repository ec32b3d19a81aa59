"""Fakes for the downlink device tests: an MQTT client where the test is the broker (it
keeps the handler an engine subscribes, the test calls it with messages), and the signed
chunk messages of a one-card snapshot."""
import asyncio
import gc

from cpos.cards import layout
from cpos.net import signing
from cpos.net import messages as protocol
from cpos.rules import ACTIVE, NO_LIMIT

KEY = b"k" * 32
SITE = "skole-nord"
TOPIC = protocol.topic(SITE, "t0001", protocol.SYNC_DOWN)
UID = b"\x04\xa1\xb2\xc3"
ACCOUNT = (10000, 3, [NO_LIMIT] * 6, False, 0, (0, 0, 0), [0] * 6)


class FakeClient:
    connected = True

    def __init__(self):
        self.handler = None
        self.hook = None
        self.filters = []

    def subscribe(self, filt, qos, handler):
        self.filters.append(filt)

        def deliver(topic, payload, retained):
            # as cpos.net.mqtt does: a handler's coroutine (a DELTAS message applied a delta
            # at a time) runs to its end before the next message
            work = handler(topic, payload, retained)
            if work is not None:
                asyncio.run(work)

        self.handler = deliver

    def add_connect_hook(self, fn):
        self.hook = fn


def snapshot(k, version, inc, chunk=1024, balance=10000):
    """The messages of a snapshot of card UID (account 1); the image streams out a block at
    a time, so the capped heap never needs one 8 KB piece for it. `chunk` divides 4096."""
    gc.collect()
    b = layout.ImageBuilder([(UID, 1, ACTIVE)], {1: (balance,) + ACCOUNT[1:]}, version, inc)
    n = b.size() // chunk
    out = []

    def emit(block):
        for o in range(0, len(block), chunk):
            out.append(signing.encode(k, TOPIC, signing.CHUNK, version, block[o:o + chunk], inc, len(out), n))
    b.write(emit)
    return out
