"""Every board offers the board interface that boards/README.md writes down, and the
README lists every name the device code uses on `board`.

The required and optional names are read from the README's two tables, so the doc and
this test cannot drift apart. Each `boards/*/board.py` is imported on CPython: the
ESP32 boards with empty stand-ins for `machine` and `esp32` (nothing of them is
called at import; `Esp32Board.install` puts the interface into the module). The
names used are collected from the files that see the board module: `firmware/*.py`
and every file under `lib/`, `host_tools/` and `simulator/` that imports `board` or
holds one as `self.board`. And main.py and app.py import no `machine`, `esp32` or
`network` themselves: the hardware is the board's.
"""
import glob
import importlib.util
import os
import re
import sys
import types

import pytest

from runtimes import ROOT

README = os.path.join(ROOT, "boards", "README.md")
BOARDS = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(ROOT, "boards", "*", "board.py")))


def _table(section):
    """The names in the first column of the README table under `### <section>`."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^### %s\n(.*?)(?=^#|\Z)" % section, text, re.S | re.M)
    assert m, "boards/README.md has no '### %s' section" % section
    return [n for n in re.findall(r"^\| `(\w+)", m.group(1), re.M)]


REQUIRED = _table("Required")
OPTIONAL = _table("Optional")


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def load_board(monkeypatch):
    """Import boards/<name>/board.py as a fresh module, with stand-ins for the chip's modules."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "lib"))
    for chip in ("machine", "esp32"):
        monkeypatch.setitem(sys.modules, chip, types.ModuleType(chip))

    def load(name):
        monkeypatch.setitem(sys.modules, "esp32_board",
                            _load(os.path.join(ROOT, "boards", "esp32", "esp32_board.py"), "esp32_board"))
        return _load(os.path.join(ROOT, "boards", name, "board.py"), "board_" + name)

    return load


def _used_names():
    """{name: [files]} of every name used on the board module by device code and tools."""
    files = glob.glob(os.path.join(ROOT, "firmware", "*.py"))
    for top in ("lib", "host_tools", "simulator"):
        files += glob.glob(os.path.join(ROOT, top, "**", "*.py"), recursive=True)
    used = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if not (path.startswith(os.path.join(ROOT, "firmware")) or "import board" in text or "self.board" in text):
            continue
        names = re.findall(r"\bboard\.(\w+)", text)
        names += re.findall(r"\b(?:get|has)attr\((?:self\.)?board,\s*\"(\w+)\"", text)
        for n in names:
            if n not in ("py", "mpy"):  # file names: board.py, board.mpy
                used.setdefault(n, []).append(os.path.relpath(path, ROOT))
    return used


def test_the_readme_lists_the_interface():
    assert {"NAME", "now", "config_path", "block_device", "pn532_link", "pos_link", "outputs", "watchdog",
            "log", "restart"} <= set(REQUIRED), REQUIRED
    assert {"log_path", "maintenance_requested", "network_up", "event"} <= set(OPTIONAL), OPTIONAL
    assert not set(REQUIRED) & set(OPTIONAL)


def test_the_readme_names_every_board():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert {"unix", "esp32_uart", "esp32_i2c"} <= set(BOARDS), BOARDS
    for name in BOARDS:
        assert "| `%s/` |" % name in text, "boards/README.md does not describe the board %s" % name


def test_every_name_the_code_uses_on_board_is_in_the_readme():
    used = _used_names()
    assert {"now", "block_device", "pn532_link", "pos_link", "restart"} <= set(used), sorted(used)
    missing = {n: where for n, where in used.items() if n not in REQUIRED and n not in OPTIONAL}
    assert not missing, "used on `board` but not in boards/README.md: %r" % missing


@pytest.mark.parametrize("name", BOARDS)
def test_every_board_offers_the_required_interface(name, load_board):
    board = load_board(name)
    missing = [n for n in REQUIRED if not hasattr(board, n)]
    assert not missing, "boards/%s/board.py lacks %s (boards/README.md)" % (name, ", ".join(missing))
    assert board.NAME == name, board.NAME
    for n in REQUIRED + [n for n in OPTIONAL if hasattr(board, n)]:
        if n != "NAME":
            assert callable(getattr(board, n)), "%s.%s is not callable" % (name, n)


def test_esp32_boards_install_only_documented_names(load_board):
    esp32_board = load_board("esp32_uart")
    installed = {}
    sys.modules["esp32_board"].Esp32Board("x", {}).install(installed)
    undocumented = set(installed) - set(REQUIRED) - set(OPTIONAL)
    assert not undocumented, "Esp32Board.install offers names boards/README.md does not list: %s" % undocumented
    assert set(REQUIRED) <= set(installed), set(REQUIRED) - set(installed)
    assert esp32_board.NAME == "esp32_uart"


def test_the_firmware_reaches_the_hardware_only_through_board():
    for name in ("main.py", "app.py"):
        with open(os.path.join(ROOT, "firmware", name), encoding="utf-8") as f:
            text = f.read()
        found = re.findall(r"^\s*(?:import|from)\s+(machine|esp32|network)\b", text, re.M)
        assert not found, "firmware/%s imports %s: that is the board's (boards/README.md)" % (name, found)
