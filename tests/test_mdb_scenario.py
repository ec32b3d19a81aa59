"""Scenario files put a vending machine on MDB strictly (docs/simulator.md, docs/mdb.md):
a wrong `mdb` or `outcome` is one clear line naming the key, never a silent default."""
import pytest

from simulator import scenario as scen


def sc(terminal, events=()):
    return scen.Scenario({"name": "x", "start": 1764068400, "uplink": False, "terminals": [terminal],
                          "accounts": [{"account": 1, "balance": 100}],
                          "cards": [{"uid": "04000001", "number": "a", "account": 1}], "events": list(events)})


def test_an_mdb_vending_machine_and_its_outcomes():
    s = sc({"id": "v", "kind": "vending", "mdb": {"level": 2, "always_idle": False}},
           [{"at": 1, "terminal": "v", "pay": 100, "outcome": "failure"}, {"at": 1.1, "terminal": "v", "tap": "a"}])
    assert s.terminals[0]["mdb"] == {"level": 2, "always_idle": False}
    assert s.events[0]["outcome"] == "failure"
    assert sc({"id": "v", "kind": "vending", "mdb": {}}).terminals[0]["mdb"] == {"level": 3, "always_idle": True}
    assert sc({"id": "t"}).terminals[0]["mdb"] is None


@pytest.mark.parametrize("terminal,events,words", [
    ({"id": "t", "kind": "till", "mdb": {}}, [], "mdb needs kind vending"),
    ({"id": "v", "kind": "vending", "mdb": {"level": 4}}, [], "mdb.level must be 1, 2 or 3"),
    ({"id": "v", "kind": "vending", "mdb": {"level": 2, "always_idle": True}}, [], "true needs level 3"),
    ({"id": "v", "kind": "vending", "mdb": {"levle": 2}}, [], "did you mean 'level'"),
    ({"id": "v", "kind": "vending", "mdb": {}}, [{"at": 1, "terminal": "v", "tap": "a", "outcome": "success"}],
     "'outcome' belongs to a pay event"),
    ({"id": "v", "kind": "vending", "mdb": {}}, [{"at": 1, "terminal": "v", "pay": 5, "outcome": "explode"}],
     "one of success, failure, cancel, reset"),
])
def test_mistakes_are_one_line_naming_the_key(terminal, events, words):
    with pytest.raises(scen.ScenarioError) as e:
        sc(terminal, events)
    assert words in str(e.value), str(e.value)


def test_the_vmc_emulator_shares_no_code_with_the_reader():
    """simulator/vmc.py is written from the standard: it imports nothing of cpos (the
    reader's framing, checksum and constants are not reused to judge the reader)."""
    import ast
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "simulator", "vmc.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not [n for n in names if n.split(".")[0] in ("cpos", "firmware", "boards")], names
