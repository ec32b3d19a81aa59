"""`make bench`: run every bench/bench_*.py, print its figures, keep them in docs/benchmarks.md.

Each benchmark script prints Markdown (a heading of level 2 and tables) to stdout and
exits 0. This runner concatenates their output under a header saying when and where
it ran. A script that fails is reported as failed in the document, not hidden.
Run one alone: `make bench ONLY=cardtable` (matches part of the file name).
"""
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOC = os.path.join(ROOT, "docs", "benchmarks.md")


def main():
    only = os.environ.get("ONLY", "")
    scripts = sorted(f for f in os.listdir(HERE) if f.startswith("bench_") and f.endswith(".py") and only in f)
    parts = [
        "# Benchmarks\n",
        "Written by `make bench` on %s (%s, %d cores, Python %s). Figures are from the last run;"
        " MicroPython figures are from the unix port under the WROOM heap cap (docs/heap.md).\n"
        % (time.strftime("%Y-%m-%d"), platform.machine(), os.cpu_count(), platform.python_version()),
    ]
    failed = 0
    for s in scripts:
        print("== %s" % s, flush=True)
        t0 = time.time()
        proc = subprocess.run([sys.executable, os.path.join(HERE, s)], capture_output=True, text=True, cwd=ROOT)
        sys.stdout.write(proc.stdout)
        if proc.returncode:
            failed += 1
            sys.stdout.write(proc.stderr)
            parts.append("## %s\n\nFAILED (exit %d):\n\n```\n%s\n```\n" % (s, proc.returncode, proc.stderr[-2000:]))
        else:
            parts.append(proc.stdout.rstrip() + "\n\n_%s ran in %.1f s._\n" % (s, time.time() - t0))
    if not only:
        with open(DOC, "w") as f:
            f.write("\n".join(parts))
        print("wrote %s" % os.path.relpath(DOC, ROOT))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
