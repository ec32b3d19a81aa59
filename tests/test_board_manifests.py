"""Every board's freeze manifest names files that exist and compile.

The MicroPython build (which cannot run here: it needs ESP-IDF) executes manifest.py
with `include`, `package`, `module` and `freeze`. This test executes each manifest
with stand-ins for those that resolve paths the way the build does (relative to the
manifest's folder; `$(PORT_DIR)`/`$(MPY_DIR)` includes are the build's own and are
skipped) and checks that everything named exists and compiles with mpy-cross. A
`require(name)` names a micropython-lib package the build takes from its own
micropython-lib tree; here it must be one the project pins (host_tools/vendor.py), and
the pinned copy must compile.
"""
import os
import subprocess

import pytest

from runtimes import ROOT, mpy_cross_path

BOARDS = sorted(d for d in os.listdir(os.path.join(ROOT, "boards"))
                if os.path.exists(os.path.join(ROOT, "boards", d, "manifest.py")))


def _collect(manifest):
    here = os.path.dirname(manifest)
    files = []

    def where(base_path):
        return os.path.normpath(os.path.join(here, base_path))

    def include(path):
        if not path.startswith("$("):
            raise AssertionError("only the port's own manifest may be included: %s" % path)

    def module(path, base_path=".", opt=None):
        files.append(os.path.join(where(base_path), path))

    def package(path, files_=None, base_path=".", opt=None):
        root = os.path.join(where(base_path), path)
        assert os.path.isdir(root), "package folder missing: %s" % root
        for base, _d, names in os.walk(root):
            files.extend(os.path.join(base, n) for n in names if n.endswith(".py"))

    def freeze(path, script=None, opt=None):
        files.append(os.path.join(where(path), script) if script else where(path))

    def require(name, **_kw):
        from host_tools import vendor

        pinned = {"ssd1306": vendor.SSD1306}
        assert name in pinned, "%s requires %r, which host_tools/vendor.py does not pin" % (manifest, name)
        files.append(vendor.fetch(pinned[name]))

    with open(manifest) as f:
        code = compile(f.read(), manifest, "exec")
    exec(code, {"include": include, "module": module, "package": package, "freeze": freeze, "require": require})
    return files


def test_esp32_boards_with_uart_and_i2c_exist():
    assert {"esp32_uart", "esp32_i2c"} <= set(BOARDS)


@pytest.mark.parametrize("board", BOARDS)
def test_manifest_names_files_that_compile(board, tmp_path):
    files = _collect(os.path.join(ROOT, "boards", board, "manifest.py"))
    assert any(f.endswith("cpos/rules.py") for f in files)
    assert any(f.endswith("board.py") for f in files) and any(f.endswith("app.py") for f in files)
    if board.startswith("esp32"):  # the boards that wire an OLED freeze its driver
        assert any(f.endswith("/ssd1306.py") for f in files), files
    for f in files:
        assert os.path.isfile(f), "%s names a missing file: %s" % (board, f)
        out = tmp_path / "x.mpy"
        proc = subprocess.run([mpy_cross_path(), "-o", str(out), f], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
