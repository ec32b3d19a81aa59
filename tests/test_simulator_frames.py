"""`python -m simulator run FILE --frames DIR`: the display frames the student saw, as PNG files.

The real firmware on the virtual board draws each page with the unix port's own
`framebuf`; the simulator writes each frame as a PNG. Each image must show the
expected page: it is compared pixel for pixel with the same page drawn here on
CPython (cpos.display on the stand-in simulator/framebuf.py), so the test also checks
that the CPython stand-in draws exactly what MicroPython draws.
"""
import json
import subprocess
import sys

from PIL import Image

from runtimes import ROOT, cpython_env
from cpos import display, reasons, screen
from simulator import frames
from simulator.framebuf import MONO_VLSB, FrameBuffer

SCENARIO = {
    "name": "frames", "start": 1764068400, "uplink": False,
    "terminals": [{"id": "till1", "place": "school", "kind": "till"}],
    "accounts": [{"account": 1, "balance": 10000}, {"account": 2, "balance": 10000},
                 {"account": 3, "balance": 3000, "topup_kr": 200}],
    "cards": [{"uid": "04A1B2C3", "number": "884263sae", "account": 1},
              {"uid": "04A1B2C4", "number": "728F9661", "account": 2, "status": "blocked"},
              {"uid": "04A1B2C5", "number": "K3", "account": 3}],
    "events": [
        {"at": 0.5, "terminal": "till1", "pay": 4500, "item": "1x Sandwich"},
        {"at": 0.6, "terminal": "till1", "tap": "884263sae", "hold": 0.3},
        {"at": 1.5, "terminal": "till1", "pay": 2500, "item": "1x Pasta"},
        {"at": 1.6, "terminal": "till1", "tap": "728F9661", "hold": 0.3},
        {"at": 3.0, "terminal": "till1", "pay": 2500, "item": "1x Pasta"},
        {"at": 3.1, "terminal": "till1", "tap": "K3", "hold": 0.3},
        {"at": 7.0, "terminal": "till1", "tap": "884263sae", "hold": 0.3},
    ],
}


def render(page):
    """`page` as the device draws it, on CPython: a 1024-byte MONO_VLSB frame."""
    buf = bytearray(1024)
    display.draw(FrameBuffer(buf, 128, 64, MONO_VLSB), page)
    return bytes(buf)


def test_frames_are_written_and_show_the_expected_pages(tmp_path):
    path = tmp_path / "frames.json"
    path.write_text(json.dumps(SCENARIO))
    out = tmp_path / "frames"
    p = subprocess.run([sys.executable, "-m", "simulator", "run", str(path), "--site-dir", str(tmp_path / "site"),
                        "--frames", str(out)], cwd=ROOT, env=cpython_env(), capture_output=True, text=True,
                       timeout=180)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "frames: 5 display frames in %s" % out in p.stdout, p.stdout[-2000:]
    rows = [line.split("\t") for line in (out / "frames.txt").read_text(encoding="utf-8").splitlines()[1:]]
    expected = [screen.approved(4500, 5500), screen.refused(reasons.BLOCKED), screen.approved(2500, 500),
                screen.topup(), screen.balance(5500)]
    assert [r[3] for r in rows] == [pg.da for pg in expected], rows
    assert [r[0] for r in rows] == ["till1-%03d.png" % n for n in range(1, 6)]
    at = [float(r[2]) for r in rows]
    assert at == sorted(at) and at[3] - at[2] >= 1.5, at  # the top-up page follows the decision's hold
    for row, page in zip(rows, expected):
        img = Image.open(str(out / row[0])).convert("RGB")
        assert img.size == (128 * frames.SCALE, 64 * frames.SCALE)
        want = frames.image(render(page))
        assert img.tobytes() == want.tobytes(), "%s does not show %r" % (row[0], page.text())
    # and a wrong page would not have matched: the check can fail
    other = frames.image(render(screen.refused(reasons.REPLACED)))
    assert Image.open(str(out / rows[1][0])).convert("RGB").tobytes() != other.tobytes()


def test_a_frame_decodes_to_the_pixels_that_were_drawn():
    frame = render(screen.balance(12345))
    px = frames.pixels(frame)
    fb = FrameBuffer(bytearray(frame), 128, 64, MONO_VLSB)
    assert all(px[y][x] == fb.pixel(x, y) for y in range(64) for x in range(128))
    assert sum(map(sum, px[:screen.BAND])) > 128 * 8  # the lit band
