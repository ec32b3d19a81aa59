"""`python -m simulator`: run terminals of the real firmware against a scenario.

    python -m simulator run scenarios/lunch_rush.json [--json] [--keep DIR]
    python -m simulator exposure [--terminals 4 --outage-min 120 --threshold-min 10 --allowance-kr 40 ...]

Each terminal is a `micropython` process (unix port, WROOM heap cap) on the virtual
board, reading cards from an emulated PN532 and paid through the POS line protocol.
Prints a summary; with --json, one JSON line per tap as it happens (docs/simulator.md).
Exit status 0 when every invariant held, 1 when one was violated, 2 for a bad scenario.
"""
import argparse
import asyncio
import sys

from simulator import scenario as scen
from simulator.run import run_scenario


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a scenario file")
    r.add_argument("scenario", help="scenario JSON file (docs/simulator.md)")
    r.add_argument("--json", action="store_true", help="one JSON line per tap on stdout")
    r.add_argument("--keep", metavar="DIR", help="keep terminals' folders (config, flash files) in DIR")
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
    _, text, problems = asyncio.run(run_scenario(sc, a.keep, sys.stdout if a.json else None, quiet=a.json))
    print(text, file=sys.stderr if a.json else sys.stdout)
    return 1 if problems else 0


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
