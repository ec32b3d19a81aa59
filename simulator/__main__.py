"""`python -m simulator`: run terminals of the real firmware against a scenario.

    python -m simulator run scenarios/lunch_rush.json [--json] [--keep DIR]

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
    a = ap.parse_args(argv)
    try:
        sc = scen.load(a.scenario)
    except (OSError, scen.ScenarioError) as e:
        print("scenario: %s" % e, file=sys.stderr)
        return 2
    _, text, problems = asyncio.run(run_scenario(sc, a.keep, sys.stdout if a.json else None, quiet=a.json))
    print(text, file=sys.stderr if a.json else sys.stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
