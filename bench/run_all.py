"""`make bench`: run every bench/bench_*.py, print its figures, keep them in docs/benchmarks.md.

Each benchmark script prints Markdown (a heading of level 2 and tables) to stdout and
exits 0. This runner concatenates their output under a header saying when and where
it ran. A script that fails is reported as failed in the document, not hidden.
Run one alone: `make bench ONLY=cardtable` (matches part of the file name): its section
of the document is replaced (or added), the others stay as they were. Each script's
section sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` markers.
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
        "Written by `make bench` on %s (%s, %d cores, Python %s); `make bench ONLY=name` reruns one section, which then ends with its own date."
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
            body = "## %s\n\nFAILED (exit %d):\n\n```\n%s\n```\n" % (s, proc.returncode, proc.stderr[-2000:])
        else:
            body = proc.stdout.rstrip() + "\n\n_%s ran in %.1f s on %s._\n" % (s, time.time() - t0, time.strftime("%Y-%m-%d"))
        parts.append("<!-- bench:%s -->\n%s<!-- /bench:%s -->\n" % (s, body, s))
    if only:
        parts = _merge(parts)
    with open(DOC, "w") as f:
        f.write("\n".join(parts))
    print("wrote %s" % os.path.relpath(DOC, ROOT))
    return 1 if failed else 0


def _merge(fresh):
    """The existing document with the freshly run scripts' sections replaced or added."""
    try:
        with open(DOC) as f:
            old = f.read()
    except OSError:
        return fresh
    doc = old.rstrip("\n") + "\n"
    for part in fresh:
        if not part.startswith("<!-- bench:"):
            continue  # the document's title and run line stay as they were
        name = part.split(" -->", 1)[0][len("<!-- bench:"):]
        start, end = "<!-- bench:%s -->" % name, "<!-- /bench:%s -->\n" % name
        i = doc.find(start)
        j = doc.find(end)
        if i >= 0 and j > i:
            doc = doc[:i] + part + doc[j + len(end):]
        else:
            doc += "\n" + part
    return [doc]


if __name__ == "__main__":
    sys.exit(main())
