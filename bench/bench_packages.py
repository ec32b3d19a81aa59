"""Heap cost of lib/cpos's subpackages (reader/, cards/, net/, pos/) on the unix port.

Two measurements, each on the MicroPython unix port from compiled .mpy files, as a
deployed bundle runs:
- the four package modules alone (their module objects, dicts and names), imported
  after `cpos` itself;
- the firmware's whole import at boot (`app` and everything it imports, plus the
  network modules it loads when a broker is configured) in today's layout, and beside
  it the same code in the flat layout it replaced (the commit before the move, checked
  out into a temporary worktree and compiled the same way).
ESP32 estimate: module objects and dicts are pointer objects, half their unix-port size
(docs/heap.md); on a WROOM the bytecode itself is frozen in flash, so only the objects
count there.
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import ROOT, table  # noqa: E402

sys.path[:0] = [ROOT]
from host_tools.bundle import import_heap_cost, mpy_cross, tool  # noqa: E402

FLAT = "3d1a439"  # the last commit with the flat lib/cpos
BOOT_NEW = ["app", "cpos.net.mqtt", "cpos.net.uplink", "cpos.net.journal_feed", "cpos.net.sync"]
BOOT_FLAT = ["app", "cpos.mqtt", "cpos.uplink", "cpos.uplink_feed", "cpos.sync"]
PACKAGES = ["cpos.reader", "cpos.cards", "cpos.net", "cpos.pos"]


def compile_tree(lib, firmware, out):
    """lib/cpos/** and firmware/app.py compiled into `out`, as a bundle lays them out."""
    cross = mpy_cross()
    jobs = [(os.path.join(firmware, "app.py"), os.path.join(out, "app.mpy"))]
    for base, dirs, files in os.walk(os.path.join(lib, "cpos")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(base, f), lib)
                jobs.append((os.path.join(base, f), os.path.join(out, rel[:-3] + ".mpy")))
    for src, dst in jobs:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        subprocess.run([cross, "-o", dst, src], check=True, capture_output=True)


def cost(names, path, first=()):
    """Heap bytes that importing `names` takes after `first` is imported."""
    env = dict(os.environ, MICROPYPATH=".frozen:" + path)
    mp = tool("micropython")
    base = import_heap_cost(list(first), mp, env) if first else 0
    return import_heap_cost(list(first) + list(names), mp, env) - base


def main():
    with tempfile.TemporaryDirectory() as tmp:
        new = os.path.join(tmp, "new")
        compile_tree(os.path.join(ROOT, "lib"), os.path.join(ROOT, "firmware"), new)
        old_src = os.path.join(tmp, "flat-src")
        subprocess.run(["git", "worktree", "add", "-q", "--detach", old_src, FLAT], cwd=ROOT, check=True)
        try:
            old = os.path.join(tmp, "flat")
            compile_tree(os.path.join(old_src, "lib"), os.path.join(old_src, "firmware"), old)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", old_src], cwd=ROOT, check=True)
        pk = cost(PACKAGES, new, first=["cpos"])
        boot_new = cost(BOOT_NEW, new)
        boot_old = cost(BOOT_FLAT, old)
    print("## Heap cost of the subpackages (unix port, compiled .mpy)\n")
    rows = [
        ("4 package modules alone (reader, cards, net, pos)", pk, "%d (objects, half)" % (pk // 2)),
        ("firmware import at boot, packages (today)", boot_new, "code frozen in flash"),
        ("firmware import at boot, flat layout (%s)" % FLAT, boot_old, "code frozen in flash"),
        ("difference", boot_new - boot_old, "~%d (package objects, half)" % ((boot_new - boot_old) // 2)),
    ]
    print(table(["what", "unix port bytes", "ESP32 estimate bytes"], rows))
    print("\nThe import figures include bytecode, which a WROOM keeps frozen in flash; the package"
          " modules themselves are objects (module, dict, names), half their unix-port size on the"
          " 32-bit ESP32 (docs/heap.md).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
