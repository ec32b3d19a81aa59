"""The uplink's acknowledgement is a downlink message too: with the site key, `down/ack`
carries the HMAC tag (cpos.downlink.seal_json) and cpos.uplink refuses one without it,
altered, under another key or made for another terminal. Both runtimes."""
from cpos import downlink, protocol
from cpos.uplink import Uplink
from downlink_fakes import KEY, SITE, FakeClient
from fake_journal import MemJournal, make_record


def test_acks_carry_the_tag_too():
    j = MemJournal()
    for _ in range(3):
        j.append(make_record(j.next_seq))
    c = FakeClient()
    up = Uplink(j, c, SITE, 1, key=KEY)
    k = downlink.Key(KEY)
    t_ack = protocol.topic(SITE, "t0001", protocol.ACK)
    signed = downlink.seal_json(k, t_ack, protocol.encode_ack(2, 1764000000))
    head = b'{"v":1,"w":2,"t":1764000000,"tag":"'
    assert signed.startswith(head) and signed.endswith(b'"}') and len(signed) == len(head) + 64 + 2
    tampered = signed.replace(b'"w":2', b'"w":3')
    for bad in (protocol.encode_ack(2, 0),  # unsigned
                tampered,
                downlink.seal_json(downlink.Key(b"z" * 32), t_ack, protocol.encode_ack(2, 0)),  # another key
                downlink.seal_json(k, protocol.topic(SITE, "t0002", protocol.ACK), protocol.encode_ack(2, 0))):
        n = up.bad_acks
        c.handler(t_ack, bad, True)
        assert up.bad_acks == n + 1 and up._ack_in == -1, bad
    c.handler(t_ack, signed, True)
    assert up.bad_acks == 4 and up._ack_in == 2
