"""Offline exposure: worst overdraft across N terminals during an outage, with and without
the offline policy (simulator/exposure.py, docs/offline.md). A simulation, not a timing."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import ROOT  # noqa: E402

sys.path[:0] = [os.path.join(ROOT, "lib"), ROOT]
from simulator.exposure import report  # noqa: E402


def main():
    print("## Offline exposure: overdraft during an outage, policy vs none\n")
    for terminals, threshold_min, allowance_kr in ((4, 10, 40), (8, 2, 30)):
        print(report(terminals=terminals, threshold_min=threshold_min, allowance_kr=allowance_kr))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
