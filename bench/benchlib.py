"""Helpers shared by the benchmark scripts: running MicroPython under the heap cap,
percentiles and Markdown tables."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from runtimes import HEAP_CAP, micropython_cmd, micropython_env  # noqa: E402


def run_micropython(script, *args, heap=HEAP_CAP, timeout=1800):
    """Run a MicroPython script (path relative to the repo) and return its stdout."""
    proc = subprocess.run(micropython_cmd(os.path.join(ROOT, script), *map(str, args), heap=heap),
                          env=micropython_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError("%s failed:\n%s%s" % (script, proc.stdout[-2000:], proc.stderr[-2000:]))
    return proc.stdout


def percentile(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)
