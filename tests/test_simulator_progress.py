"""The live progress of `python -m simulator run` (simulator/progress.py): plain lines
when stdout is not a terminal (CI, a pipe), rich bars per terminal on one, with the
text the last student saw."""
import io

from simulator.progress import PlainProgress, RichProgress, for_stdout
from simulator.run import Tap


def _taps():
    out = []
    for i, (decision, reason) in enumerate((("approved", "approved"), ("refused", "insufficient_funds"),
                                            ("terminal_off", None))):
        t = Tap("till1", b"\x04\xa1\xb2\xc3", "884263sae", 2500, "r%d" % i, 0.0, item="1x Pasta", at=3.0 * i)
        t.decision, t.reason = decision, reason
        out.append(t)
    return out


class _Run:
    terminals = {"till1": None}

    class scenario:
        events = [{"kind": "tap", "terminal": "till1"}] * 3


def test_progress_is_plain_lines_when_stdout_is_no_terminal(capsys):
    assert isinstance(for_stdout(), PlainProgress)  # pytest captures stdout: not a terminal
    buf = io.StringIO()
    p = PlainProgress(buf, every=5.0)
    p.start(_Run)
    p.event(2.5, "till1", "power cut")
    for t in _taps():
        p.tap(t)
    p.stop()
    lines = buf.getvalue().splitlines()
    assert lines == ["   +2.5 s  till1: power cut",
                     "   +6.0 s  till1 3/3 taps: 1 approved, 1 refused, 1 other",
                     "timeline done: 3 taps, 25.00 kr approved"], lines


def test_progress_on_a_terminal_is_rich_bars_with_the_text_the_student_saw():
    from rich.console import Console

    buf = io.StringIO()
    p = RichProgress(Console(file=buf, force_terminal=True, width=160, color_system=None))
    p.start(_Run)
    for t in _taps()[:2]:
        p.tap(t)
    p.progress.refresh()
    p.stop()
    out = buf.getvalue()
    assert "till1" in out and "2/3" in out and "1 ok" in out and "1 refused" in out, out
    assert "Ikke nok penge på kortet / Not enough money on card" in out, out
    assert "━" in out  # a drawn bar, not plain lines
