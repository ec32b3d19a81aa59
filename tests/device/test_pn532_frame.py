"""PN532 frame codec on both runtimes: exact bytes, every frame kind, resynchronisation."""
from cpos.reader import frame as F


def _reader_events(data, chunk=0, lookahead=True):
    r = F.FrameReader()
    out = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        r.feed(data[i:i + step])
        while True:
            ev = r.next()
            if not ev:
                break
            out.append((ev, bytes(r.data()) if ev == F.FRAME else b""))
    while lookahead:
        ev = r.next(True)
        if not ev:
            break
        out.append((ev, bytes(r.data()) if ev == F.FRAME else b""))
    return out


def test_encode_get_firmware_version_exact_bytes():
    assert F.encode(F.TFI_HOST, 0x02) == b"\x00\x00\xff\x02\xfe\xd4\x02\x2a\x00"


def test_encode_in_list_passive_target_exact_bytes():
    assert F.encode(F.TFI_HOST, 0x4A, b"\x01\x00") == b"\x00\x00\xff\x04\xfc\xd4\x4a\x01\x00\xe1\x00"


def test_encode_extended_frame_for_long_data():
    params = bytes(i & 0xFF for i in range(260))
    fr = F.encode(F.TFI_HOST, 0x40, params)
    assert fr[:5] == b"\x00\x00\xff\xff\xff"
    n = (fr[5] << 8) | fr[6]
    assert n == 262 and (fr[5] + fr[6] + fr[7]) & 0xFF == 0
    tfi, data = F.decode(fr)
    assert tfi == F.TFI_HOST and data == b"\x40" + params


def test_encode_refuses_too_long():
    try:
        F.encode(F.TFI_HOST, 0x40, bytes(300))
    except F.FrameError:
        return
    assert False, "no FrameError"


def test_decode_ack_nack_and_error_frame():
    assert F.decode(F.ACK_FRAME) == (None, b"ACK")
    assert F.decode(F.NACK_FRAME) == (None, b"NACK")
    try:
        F.decode(F.ERROR_FRAME)
    except F.ChipError as e:
        assert e.code == -1
    else:
        assert False, "error frame not reported"


def test_decode_response_and_checksums():
    fr = b"\x00\x00\xff\x06\xfa\xd5\x03\x32\x01\x06\x07\xe8\x00"
    assert F.decode(fr) == (F.TFI_CHIP, b"\x03\x32\x01\x06\x07")
    bad_dcs = fr[:11] + b"\xe9" + fr[12:]
    bad_lcs = fr[:4] + b"\xfb" + fr[5:]
    for bad in (bad_dcs, bad_lcs, fr[:9], b"", b"\x00\x00\x00"):
        try:
            F.decode(bad)
        except F.FrameError:
            continue
        assert False, "accepted %r" % bad


def test_bad_data_checksum_is_reported_once_then_next_frame_found():
    good = F.encode(F.TFI_CHIP, 0x4B, b"\x00")
    bad = bytearray(good)
    bad[-2] ^= 0x01
    ev = _reader_events(bytes(bad) + good)
    assert ev == [(F.BAD_FRAME, b""), (F.FRAME, b"\x4b\x00")]


def test_any_chunking_gives_the_same_events():
    stream = (b"\x13\x37" + F.ACK_FRAME + b"\xff\xff" + F.encode(F.TFI_CHIP, 0x03, b"\x32\x01\x06\x07")
              + F.NACK_FRAME + F.ERROR_FRAME)
    whole = _reader_events(stream)
    assert [e[0] for e in whole] == [F.ACK, F.FRAME, F.NACK, F.ERROR_FRAME_EVT]
    for chunk in (1, 2, 3, 5, 7):
        assert _reader_events(stream, chunk) == whole


def test_resync_after_false_start_claiming_a_long_frame():
    # A start code in noise claims 200 bytes; the real frame behind it is found once
    # the line goes quiet (lookahead), and not before.
    good = F.encode(F.TFI_CHIP, 0x4B, b"\x00")
    stream = b"\x00\xff\xc8\x38\x01\x02" + good
    r = F.FrameReader()
    r.feed(stream)
    assert r.next() == F.NONE
    assert r.next(True) == F.FRAME and bytes(r.data()) == b"\x4b\x00"


def test_noise_is_counted_and_buffer_stays_bounded():
    r = F.FrameReader()
    noise = bytes((i * 7 + 1) & 0xFF or 1 for i in range(2000))
    for i in range(0, len(noise), 50):
        r.feed(noise[i:i + 50])
        r.next(True)
    assert r.n < 300
    r.feed(F.ACK_FRAME)
    assert r.next(True) == F.ACK
    assert r.dropped > 1000
