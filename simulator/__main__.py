"""`python -m simulator`: run terminals of the real firmware against a scenario.

    python -m simulator run scenarios/lunch_rush.json [--json] [--site-dir DIR] [--frames DIR]
    python -m simulator exposure [--terminals 4 --outage-min 120 --threshold-min 10 --allowance-kr 40 ...]

Each terminal is a `micropython` process (unix port, WROOM heap cap) on the virtual
board, reading cards from an emulated PN532 and paid through the POS line protocol.
Shows live progress per terminal, then a summary; with --json, one JSON line per tap
as it happens on stdout and the summary on stderr (docs/simulator.md). The run's site
folder (ledger, terminals' flash and logs, taps.jsonl, summary.txt, report.html) stays
in --site-dir. Exit status 0 when every invariant held, 1 when one was violated, 2 for a
bad scenario or site folder.
"""
import argparse
import asyncio
import os
import shutil
import sys

from simulator import scenario as scen
from simulator.run import run_scenario

DEFAULT_SITE_DIR = "demo-site"
MARK = ".cpos-sim-site"  # marks a folder this command made: the next run may empty it


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a scenario file")
    r.add_argument("scenario", help="scenario JSON file (docs/simulator.md)")
    r.add_argument("--json", action="store_true", help="one JSON line per tap on stdout; the summary goes to stderr")
    r.add_argument("--site-dir", metavar="DIR", default=DEFAULT_SITE_DIR,
                   help="the run's folder, kept afterwards: ledger, terminals' flash and console logs, taps.jsonl, "
                        "summary.txt, report.html (default ./%s; emptied first if an earlier run made it)"
                        % DEFAULT_SITE_DIR)
    r.add_argument("--keep", metavar="DIR", dest="site_dir", help=argparse.SUPPRESS)  # the old name
    r.add_argument("--frames", metavar="DIR",
                   help="save every display frame the terminals drew as a PNG in DIR, listed in DIR/frames.txt "
                        "(what the student saw)")
    e = sub.add_parser("exposure", help="offline exposure: worst overdraft during an outage, with and "
                                        "without the offline policy (docs/offline.md)")
    for name, default, what in (
            ("terminals", 4, "terminals cut off from the backend (each synced at the start of the outage)"),
            ("students", 300, "students tapping during the outage (balances 0-300 kr.)"),
            ("outage-min", 120, "length of the outage in minutes"),
            ("threshold-min", 10, "the offline policy's threshold: minutes after its last sync during which a "
                                  "terminal trusts its view of a balance"),
            ("allowance-kr", 40, "the offline policy's allowance: whole kroner a card may spend at one terminal "
                                 "since its last sync once the threshold has passed"),
            ("walk-s", 60, "seconds a greedy student takes to walk from one terminal to the next"),
            ("seed", 1, "random seed (the same seed gives the same table)")):
        e.add_argument("--" + name, type=int, default=default, help=what + " (default %d)" % default)
    a = ap.parse_args(argv)
    if a.cmd == "exposure":
        return _exposure(a)
    try:
        sc = scen.load(a.scenario)
    except (OSError, scen.ScenarioError) as e:
        print("scenario: %s" % e, file=sys.stderr)
        return 2
    site_dir = os.path.abspath(a.site_dir)  # the terminals run in their own folders: no relative paths
    problem = _fresh_site_dir(site_dir)
    if problem:
        print("site folder: %s" % problem, file=sys.stderr)
        return 2
    return _run(a, sc, site_dir)


def _fresh_site_dir(path):
    """Empty `path` if an earlier run made it; refuse a folder with anything else in it."""
    if os.path.isdir(path) and os.listdir(path):
        if not os.path.exists(os.path.join(path, MARK)):
            return "%s is not empty and no earlier run's site folder: choose another --site-dir" % path
        shutil.rmtree(path)
    elif os.path.exists(path) and not os.path.isdir(path):
        return "%s is a file" % path
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, MARK), "w") as f:
        f.write("made by python -m simulator run; the next run empties this folder\n")
    return None


class _Tee:
    def __init__(self, *outs):
        self.outs = outs

    def write(self, text):
        for o in self.outs:
            o.write(text)

    def flush(self):
        for o in self.outs:
            o.flush()


def _run(a, sc, site_dir):
    from simulator import progress, report

    out = sys.stderr if a.json else sys.stdout
    with open(os.path.join(site_dir, "taps.jsonl"), "w") as taps:
        run, text, problems = asyncio.run(run_scenario(
            sc, site_dir, _Tee(sys.stdout, taps) if a.json else taps, quiet=a.json,
            progress=None if a.json else progress.for_stdout()))
    with open(os.path.join(site_dir, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print(text, file=out)
    try:
        path = report.write(run, site_dir, text)
    except ImportError as e:  # matplotlib: `pip install -e .[test]` (make demo does)
        print("report: not written, %s" % e, file=out)
    else:
        print("report: %s" % path, file=out)
    if a.frames:
        _frames(run, os.path.abspath(a.frames), out)
    print(report.try_next(run, site_dir), file=out)
    return 1 if problems else 0


def _frames(run, folder, out):
    from simulator import frames

    try:
        paths = frames.write(run, folder)
    except ImportError as e:  # Pillow: `pip install -e .[test]`
        print("frames: not written, %s" % e, file=out)
    except OSError as e:
        print("frames: not written, %s" % e, file=out)
    else:
        print("frames: %d display frames in %s (index: frames.txt)" % (len(paths), folder), file=out)


def _exposure(a):
    from simulator.exposure import report

    if min(a.terminals, a.students, a.outage_min, a.walk_s) < 1 or min(a.threshold_min, a.allowance_kr) < 0:
        print("exposure: counts and durations must be positive, threshold and allowance non-negative",
              file=sys.stderr)
        return 2
    print(report(a.terminals, a.students, a.outage_min, a.threshold_min, a.allowance_kr, a.walk_s, a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
