"""The POS line protocol (cpos.pos.lines): requests parse, garbage is refused by name."""
from cpos.pos import lines as pp


def refused(line):
    try:
        pp.parse(line)
    except pp.ProtoError as e:
        return e.what
    raise AssertionError("accepted %r" % (line,))


def test_requests_parse():
    assert pp.parse(b"PAY r1 4500 1x Sandwich med ost\r\n") == ("PAY", "r1", 4500, "1x Sandwich med ost")
    assert pp.parse("VEND v-9 1500 1x Vand\n") == ("VEND", "v-9", 1500, "1x Vand")
    assert pp.parse("PAY r2 100\n") == ("PAY", "r2", 100, "")
    assert pp.parse("CANCEL r1\n") == ("CANCEL", "r1", 0, "")
    assert pp.parse("PING\n") == ("PING", "-", 0, "")
    assert pp.parse(b"LAST\r\n") == ("LAST", "-", 0, "")
    assert pp.parse("LAST") == ("LAST", "-", 0, "")
    assert pp.parse("PAY r3 100 " + "x" * 100)[3] == "x" * pp.MAX_ITEM
    assert pp.parse("PAY r4 250 1x Æblegrød".encode("utf-8"))[3] == "1x Æblegrød"


def test_garbage_is_refused_with_a_reason():
    assert refused(b"") == "unknown-request"
    assert refused(b"\xff\xfe") == "not-utf8"
    assert refused(b"pay r1 100 x") == "unknown-request"
    assert refused(b"PAY") == "bad-ref"
    assert refused(b"PAY r/1 100") == "bad-ref"
    assert refused(b"PAY r1") == "bad-amount"
    assert refused(b"PAY r1 -5 x") == "bad-amount"
    assert refused(b"PAY r1 0 x") == "bad-amount"
    assert refused(b"PAY r1 12.50 x") == "bad-amount"
    assert refused(b"PAY r1 9999999999 x") == "bad-amount"
    assert refused(b"CANCEL r1 extra") == "bad-cancel"
    assert refused(b"LAST r1") == "bad-last"
    assert refused(b"LAST ") == "bad-last"
    assert refused(b"LAST 17 x") == "bad-last"
    assert refused(b"last") == "unknown-request"
    assert refused(b"PAY r1 100 " + b"x" * 300) == "line-too-long"


def test_replies_format():
    assert pp.approved("r1", 17, 4500, 5500) == "APPROVED r1 17 4500 5500\n"
    assert pp.refused("r1", "blocked") == "REFUSED r1 blocked\n"
    assert pp.error("-", "bad-ref") == "ERR - bad-ref\n"
    assert pp.wait("r1") == "WAIT r1\n"


def test_last_replies_format_and_split_into_their_fields():
    assert pp.last(912, 4500, 7550, "approved", 1764068400) == "LAST 912 4500 7550 approved 1764068400\n"
    assert pp.last(7, 2500, -300, "insufficient_funds", 5) == "LAST 7 2500 -300 insufficient_funds 5\n"
    assert pp.last_none(0) == "LAST - 0\n"
    assert pp.last_none(41) == "LAST - 41\n"
    words = pp.last(3, 100, 900, "approved", 9).split()
    assert words == ["LAST", "3", "100", "900", "approved", "9"]
