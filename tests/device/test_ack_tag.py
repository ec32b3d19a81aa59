"""The uplink's acknowledgement is a downlink message too: with the site key, `down/ack`
carries the HMAC tag (cpos.net.signing.seal_json) and cpos.net.uplink refuses one without it,
altered, under another key or made for another terminal. Both runtimes."""
from cpos import log
from cpos.net import signing
from cpos.net import messages
from cpos.net.uplink import Uplink
from downlink_fakes import KEY, SITE, FakeClient
from fake_journal import MemJournal, make_record


def test_acks_carry_the_tag_too():
    j = MemJournal()
    for _ in range(3):
        j.append(make_record(j.next_seq))
    c = FakeClient()
    lines = []
    up = Uplink(j, c, SITE, 1, key=KEY, log=log.Log(lines.append))
    k = signing.Key(KEY)
    t_ack = messages.topic(SITE, "t0001", messages.ACK)
    signed = signing.seal_json(k, t_ack, messages.encode_ack(2, 1764000000))
    head = b'{"v":1,"w":2,"t":1764000000,"tag":"'
    assert signed.startswith(head) and signed.endswith(b'"}') and len(signed) == len(head) + 64 + 2
    tampered = signed.replace(b'"w":2', b'"w":3')
    for bad in (messages.encode_ack(2, 0),  # unsigned
                tampered,
                signing.seal_json(signing.Key(b"z" * 32), t_ack, messages.encode_ack(2, 0)),  # another key
                signing.seal_json(k, messages.topic(SITE, "t0002", messages.ACK), messages.encode_ack(2, 0))):
        n = up.bad_acks
        c.handler(t_ack, bad, True)
        assert up.bad_acks == n + 1 and up._ack_in == -1, bad
        assert lines[-1].startswith("S uplink: ignored ack: "), lines  # a security event, not noise
    c.handler(t_ack, signed, True)
    assert up.bad_acks == 4 and up._ack_in == 2
    n = len(lines)
    # Signed, but for records this terminal never wrote: a journal reset or a forgery.
    c.handler(t_ack, signing.seal_json(k, t_ack, messages.encode_ack(99, 0)), True)
    assert up.bad_acks == 5 and up._ack_in == 2
    assert lines[n:] == ["S uplink: ack 99 beyond next_seq 4 ignored"], lines[n:]
