"""What the student saw: the virtual board's display frames as PNG images.

Owns turning a frame into a picture. The unix board draws every page into a 128x64
MONO_VLSB framebuf with the real `framebuf` of the MicroPython unix port (the same
code and layout as an SSD1306 on an ESP32) and sends the whole frame, hex, in its
`display` event. `write` saves each one as `<terminal>-<n>.png` (scaled up, lit pixels
light on dark as on an OLED) and lists them in `frames.txt` with the scenario time
and the page's Danish and English line. `python -m simulator run FILE --frames DIR`
calls it after the run (docs/simulator.md). Needs Pillow (a matplotlib dependency).
"""
import os

WIDTH, HEIGHT = 128, 64
SCALE = 4
LIT = (225, 240, 255)
DARK = (8, 12, 24)


def pixels(frame):
    """Rows of 0/1 (64 rows of 128) of a MONO_VLSB frame (bytes)."""
    if len(frame) != WIDTH * HEIGHT // 8:
        raise ValueError("a 128x64 frame is %d bytes, not %d" % (WIDTH * HEIGHT // 8, len(frame)))
    return [[(frame[(y >> 3) * WIDTH + x] >> (y & 7)) & 1 for x in range(WIDTH)] for y in range(HEIGHT)]


def image(frame, scale=SCALE):
    """A Pillow image of a frame, each pixel `scale` x `scale`."""
    from PIL import Image

    img = Image.new("RGB", (WIDTH, HEIGHT), DARK)
    img.putdata([LIT if p else DARK for row in pixels(frame) for p in row])
    return img.resize((WIDTH * scale, HEIGHT * scale), Image.NEAREST)


def shown(term):
    """[(event, frame bytes)] of every display event of a SimTerminal that carried a frame."""
    return [(e, bytes.fromhex(e["frame"])) for e in term.events if e.get("ev") == "display" and e.get("frame")]


def write(run, folder):
    """Save every frame of every terminal of `run` (simulator.run.Run) in `folder`; returns the paths."""
    os.makedirs(folder, exist_ok=True)
    t0 = run.clock.t0 + (run.t_play or 0.0)
    paths, index = [], []
    for tid, term in run.terminals.items():
        for n, (ev, frame) in enumerate(shown(term), 1):
            name = "%s-%03d.png" % (tid, n)
            path = os.path.join(folder, name)
            image(frame).save(path)
            paths.append(path)
            index.append("%s\t%s\t%+.3f\t%s\t%s" % (name, tid, ev["_t"] - t0, ev.get("l1", ""), ev.get("l2", "")))
    with open(os.path.join(folder, "frames.txt"), "w", encoding="utf-8") as f:
        f.write("file\tterminal\tat_s\tdanish\tenglish\n")
        f.write("".join(line + "\n" for line in index))
    return paths
