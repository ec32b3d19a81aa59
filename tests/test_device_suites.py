"""Run every tests/device/test_*.py module on MicroPython and on CPython.

Each device test function becomes two pytest tests, one per runtime, so a failure
on either runtime fails the run with the runtime's own traceback. On CPython a module
runs once (session cache) and each pytest test reads its own result. On MicroPython
each test runs in a fresh process, as on a freshly booted device, with the heap cap for
its data plus the measured room of its code (tests/runtimes.py `code_kb`, docs/heap.md):
tests run one after another in one capped heap failed on the fragmentation their
predecessors left behind, which says nothing about the firmware.
"""
import ast
import os

import pytest

from runtimes import DEVICE_TESTS, run_device_modules

RUNTIMES = ("micropython", "cpython")


def _device_tests():
    cases = []
    for fname in sorted(os.listdir(DEVICE_TESTS)):
        if not (fname.startswith("test_") and fname.endswith(".py")):
            continue
        with open(os.path.join(DEVICE_TESTS, fname)) as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                cases.append((fname[:-3], node.name))
    return cases


_CASES = _device_tests()
_cache = {}


def _results(runtime, module, name):
    target = module + "." + name if runtime == "micropython" else module
    key = (runtime, target)
    if key not in _cache:
        code, out = run_device_modules(runtime, [target])
        results, current = {}, None
        for line in out.splitlines():
            if line.startswith(("PASS ", "FAIL ")):
                status, name = line.split(" ", 1)
                current = name.split(".", 1)[1]
                results[current] = [status, []]
            elif line.startswith("    ") and current:
                results[current][1].append(line[4:])
        _cache[key] = (code, out, results)
    return _cache[key]


def test_device_tests_were_found():
    assert len(_CASES) >= 10, "expected device tests under tests/device"


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("module,name", _CASES, ids=["%s.%s" % c for c in _CASES])
def test_device(runtime, module, name):
    code, out, results = _results(runtime, module, name)
    if name not in results:
        pytest.fail("%s did not report %s.%s; output:\n%s" % (runtime, module, name, out[-4000:]))
    status, trace = results[name]
    if status != "PASS":
        pytest.fail("%s on %s:\n%s" % (name, runtime, "\n".join(trace)))
