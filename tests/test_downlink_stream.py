"""The downlink stream under a lunch rush (backend.downlink; issue 13 point 6): balance-like
changes to one account within the coalescing window become one delta, blocks go at once,
many deltas travel packed in DELTAS messages up to the size cap, and a terminal that holds
part of a packed message gets it again whole (it skips what it holds)."""
from cpos.cards import delta as carddelta
from cpos.net import signing
from cpos.net import messages
from backend import Ledger
from backend.downlink import Downlink

SITE = "skole-nord"
KEY = bytes(range(32))
T0 = 1764072000


class Mono:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _world(accounts=1, coalesce_s=0.5):
    led = Ledger(":memory:", clock=lambda: T0)
    for a in range(1, accounts + 1):
        led.add_account("A%d" % a, 10000, account_id=a)
        led.add_card("04%06x" % a, "card%d" % a, a)
    led.add_terminal(1, SITE, 0, 0)
    mono = Mono()
    dl = Downlink(led, {SITE: KEY}, coalesce_s=coalesce_s, monotonic=mono)
    dl.on_request(SITE, "t0001", messages.encode_sync(0, 0, True, 5))  # the first snapshot
    return led, dl, mono


def _deltas(msgs):
    """(kind, version) of every delta in the messages, in order, after checking each tag."""
    k = signing.Key(signing.derive(KEY, signing.DOWN, "t0001", 0))  # the terminal's own key
    topic = messages.topic(SITE, "t0001", messages.SYNC_DOWN).encode()
    out = []
    for _, p in msgs:
        assert len(p) <= signing.MAX_MESSAGE
        m = signing.decode(k, topic, p)
        b = bytes(m.body)
        if m.kind == signing.DELTA:
            out.append((b[2], int.from_bytes(b[3:7], "little")))
            continue
        assert m.kind == signing.DELTAS
        i = 0
        while i < len(b):
            d = b[i + 1:i + 1 + b[i]]
            out.append((d[2], int.from_bytes(d[3:7], "little")))
            i += 1 + b[i]
        assert out[-1][1] == m.version
    return out


def test_changes_to_one_account_within_the_window_send_one_delta():
    led, dl, mono = _world()
    v0 = dl._stream(1)[0]
    for kr in (10, 20, 30):
        led.deposit(1, kr * 100)
    assert dl.pump() == []  # held back: the window has just begun
    mono.t = 0.3
    led.deposit(1, 100)
    assert dl.pump() == []
    mono.t = 0.51
    sent = _deltas(dl.pump())
    assert sent == [(carddelta.BALANCE, v0 + 1)]  # four deposits, one delta with the balance now
    assert led.balance(1) == 10000 + 6100 and dl.pump() == []


def test_a_block_is_never_held_back():
    led, dl, mono = _world()
    v0 = dl._stream(1)[0]
    led.deposit(1, 100)
    assert dl.pump() == []
    led.set_card_status("card1", "blocked")
    assert sorted(_deltas(dl.pump())) == [(carddelta.BALANCE, v0 + 1), (carddelta.BLOCK, v0 + 2)]


def test_many_deltas_travel_packed_up_to_the_cap_and_a_partial_holder_gets_the_message_again():
    led, dl, mono = _world(accounts=400, coalesce_s=0)
    v0 = dl._stream(1)[0]
    for a in range(1, 401):
        led.deposit(a, 100)
    msgs = dl.pump()
    sent = _deltas(msgs)
    assert [v for _, v in sent] == list(range(v0 + 1, v0 + 401))
    assert 1 < len(msgs) < 10 and dl.messages == len(msgs)  # 400 deltas, a handful of messages
    # A terminal that got the first message and part of the second asks from the middle.
    first_of_second = _deltas(msgs[:1])[-1][1] + 1
    out = dl.on_request(SITE, "t0001", messages.encode_sync(first_of_second + 3, 1, False, 9))
    assert [p for _, p in out[:-1]] == [p for _, p in msgs[1:]]  # the same bytes, from the second on
    # Deltas no longer kept: a catch-up from the ledger's changes since the mark behind v0 + 5
    # (a JUMP from it, then each account's state now: tests/test_downlink_catchup.py) ...
    dl.db.execute("DELETE FROM dl_sent WHERE terminal = 1 AND version < ?", (v0 + 400,))
    out = dl.on_request(SITE, "t0001", messages.encode_sync(v0 + 5, 1, False, 10))
    sent = _deltas(out[:-1])
    assert sent[0] == (carddelta.JUMP, v0 + 401) and len(sent) == 401 and dl.catchups == 1
    # ... or, with no mark that old either, a snapshot.
    dl.db.execute("DELETE FROM dl_sent WHERE terminal = 1")
    dl.db.execute("DELETE FROM dl_marks WHERE terminal = 1")
    out = dl.on_request(SITE, "t0001", messages.encode_sync(v0 + 5, 1, False, 11))
    k = signing.Key(signing.derive(KEY, signing.DOWN, "t0001", 0))
    topic = messages.topic(SITE, "t0001", messages.SYNC_DOWN).encode()
    assert {signing.decode(k, topic, p).kind for _, p in out} == {signing.CHUNK, signing.CURRENT}
