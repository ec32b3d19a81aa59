"""cpos.net.mqtt packet codec and cpos.net.messages helpers, byte for byte, on both runtimes."""
from cpos.net import messages
from cpos.net.mqtt import (MQTTError, connect_packet, encode_length, parse_publish, publish_header, puback_packet,
                       subscribe_packet, topic_matches)


def test_remaining_length():
    assert encode_length(0) == b"\x00"
    assert encode_length(127) == b"\x7f"
    assert encode_length(128) == b"\x80\x01"
    assert encode_length(16383) == b"\xff\x7f"
    assert encode_length(2097152) == b"\x80\x80\x80\x01"
    try:
        encode_length(268435456)
        assert False
    except MQTTError:
        pass


def test_connect_with_will_and_credentials():
    p = connect_packet("t1", "u", "p", 30, ("s", b"x", 1, True), True)
    assert p == (b"\x10\x1a\x00\x04MQTT\x04\xee\x00\x1e" + b"\x00\x02t1" + b"\x00\x01s\x00\x01x"
                 + b"\x00\x01u\x00\x01p")
    assert connect_packet("c", keepalive=60, clean=False) == b"\x10\x0d\x00\x04MQTT\x04\x00\x00\x3c\x00\x01c"


def test_publish_subscribe_puback():
    assert publish_header("a/b", 2, 1, True, 7) == b"\x33\x09\x00\x03a/b\x00\x07"
    assert publish_header("a", 0, 0) == b"\x30\x03\x00\x01a"
    assert subscribe_packet(5, "x/#", 1) == b"\x82\x08\x00\x05\x00\x03x/#\x01"
    assert puback_packet(258) == b"\x40\x02\x01\x02"


def test_parse_publish_and_refusals():
    assert parse_publish(0x33, b"\x00\x03a/b\x00\x07hi") == ("a/b", 1, 7, b"hi", True)
    assert parse_publish(0x30, b"\x00\x01ahi") == ("a", 0, 0, b"hi", False)
    for first, body in ((0x30, b""), (0x30, b"\x00\x09ab"), (0x32, b"\x00\x01a\x00"), (0x34, b"\x00\x01a")):
        try:
            parse_publish(first, body)
            assert False, body
        except MQTTError:
            pass


def test_topic_filters():
    assert topic_matches("cpos/v1/+/+/up/#", "cpos/v1/s/t0001/up/batch")
    assert not topic_matches("cpos/v1/+/+/up/#", "cpos/v1/s/t0001/down/ack")
    assert topic_matches("a/+", "a/b") and not topic_matches("a/+", "a/b/c") and not topic_matches("a/b/c", "a/b")


def test_protocol_names():
    assert messages.terminal_id(1) == "t0001" and messages.terminal_id(123456) == "t123456"
    assert messages.terminal_number("t0042") == 42
    for bad in ("t42", "x0001", "t00a1", "t00001", 5):
        try:
            messages.terminal_number(bad)
            assert False, bad
        except messages.ProtocolError:
            pass
    assert messages.split_topic("cpos/v1/skole-nord/t0001/up/batch") == ("skole-nord", "t0001", "up/batch")
    assert messages.valid_site("skole-nord") and not messages.valid_site("Skole") and not messages.valid_site("a/b")


def test_batch_roundtrip():
    r = {"seq": 3, "t": 1764000000, "uid": "04a1b2c3", "account": 7, "amount": 2500, "place": 0, "kind": 0,
         "terminal": 1, "item": "1x Æble \"grøn\"", "balance_after": 100, "reason": 0, "topup": False}
    lo, hi, recs = messages.decode_batch(messages.encode_batch(2, 4, [r]))
    assert (lo, hi, recs) == (2, 4, [r])
