"""Runs tests/device/cardtable_cases.py on CPython and on the MicroPython unix port.

On MicroPython these cases run with a 1 MB heap, not the 192 KB WROOM cap: the
simulated flash (40 KB), the reference model and the test data share the heap with
the code, and after the modules compile from source the capped heap has no 4-8 KB
holes left for them. What the cap must hold on a device, the table's own RAM, is
checked by `test_lookup_allocates_nothing` and measured by bench/bench_cardtable.py.
"""
import os
import subprocess
import sys

import pytest

from runtimes import DEVICE_TESTS, ROOT, micropython_cmd, micropython_env, cpython_env

MP_HEAP = "1M"


def _run(runtime):
    runner = os.path.join(DEVICE_TESTS, "runner.py")
    if runtime == "micropython":
        cmd, env = micropython_cmd(runner, "cardtable_cases", heap=MP_HEAP), micropython_env()
    else:
        cmd, env = [sys.executable, runner, "cardtable_cases"], cpython_env()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_cardtable_cases(runtime):
    code, out = _run(runtime)
    assert "FAIL" not in out and "IMPORTERROR" not in out and code == 0, out[-6000:]
    assert " passed, 0 failed" in out, out[-2000:]
    assert int(out.strip().splitlines()[-1].split()[0]) >= 10
