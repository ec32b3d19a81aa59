"""Scenario files are strict (simulator/scenario.py, docs/simulator.md): an unknown key, a
card no scenario names, a duplicate and an event that cannot happen are errors naming
the file's line and the key, with a "did you mean" for a near miss; a good file loads."""
import json

import pytest

from simulator import scenario as scen

GOOD = {
    "name": "strict", "start": 1764068400, "uplink": True,
    "terminals": [{"id": "till1", "kind": "till"}, {"id": "vend1", "kind": "vending"}],
    "accounts": [{"account": 1, "balance": 10000, "limits": {"school": {"day": 2500}}}],
    "cards": [{"uid": "04A1B2C3", "number": "884263sae", "account": 1}],
    "unknown_uids": ["DEADBEEF"],
    "events": [{"at": 0.5, "terminal": "till1", "pay": 4500, "item": "1x Sandwich"},
               {"at": 0.6, "terminal": "till1", "tap": "884263sae", "hold": 0.4},
               {"at": 1.0, "terminal": "till1", "tap": "deadbeef"},
               {"at": 1.5, "terminal": "till1", "tap": "04a1b2c3"},
               {"at": 9.0, "terminal": "till1", "power_cut": True},
               {"at": 9.5, "terminal": "till1", "boot": True},
               {"at": 12.0, "broker": "down"}, {"at": 30.0, "broker": "up"}],
    "rush": [{"terminal": "vend1", "count": 3, "from": 1.0, "every": 0.5, "seed": 1, "amounts": [1500]}],
}


def load(d, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(d, indent=1))
    return scen.load(str(path))


def mutate(**top):
    d = json.loads(json.dumps(GOOD))
    d.update(top)
    return d


def with_event(i, **kv):
    d = mutate()
    d["events"][i].update(kv)
    return d


def test_a_good_scenario_loads(tmp_path):
    sc = load(GOOD, tmp_path)
    assert [e["kind"] for e in sc.events if e["terminal"] == "till1"] == ["pay", "tap", "tap", "tap", "power_cut", "boot"]
    assert len([e for e in sc.events if e["terminal"] == "vend1"]) == 6


BAD = [
    (mutate(prior=[1]), "line 1: scenario: unknown key 'prior'"),
    (mutate(limits={}), "scenario: unknown key 'limits'"),
    (mutate(accounts=[{"account": 1, "balance": 10000, "limit": {"school": {"day": 1}}}]),
     "accounts[0]: unknown key 'limit' (did you mean 'limits'?)"),
    (mutate(accounts=[{"account": 1, "limits": {"school": {"dya": 1}}}]), "unknown window 'dya' (did you mean 'day'?)"),
    (mutate(terminals=[{"id": "till1", "kind": "til"}, {"id": "vend1"}]), "kind must be till or vending, got 'til' "
                                                                          "(did you mean 'till'?)"),
    (with_event(1, tap="884263sa"), "events[1]: card \"884263sa\" is no card's number or uid, nor in unknown_uids "
                                    "(did you mean '884263sae'?)"),
    (with_event(1, tap="ABCDEF12"), "events[1]: card \"ABCDEF12\" is no card's number or uid"),  # valid hex, no card
    (with_event(1, terminal="til1"), "events[1]: unknown terminal \"til1\" (did you mean 'till1'?)"),
    (with_event(1, hold=-1), "'hold' must be a positive number"),
    (with_event(0, at=-0.5), "'at' must be a non-negative number"),
    (with_event(0, pay=0), "pay must be positive whole øre"),
    (with_event(4, power_cut=False), "'power_cut' must be true"),
    (with_event(5, at=8.0), "boot of till1 at 8 s, which is on"),
    (with_event(6, broker="sideways"), "'broker' must be \"down\" or \"up\""),
    (with_event(0, itme="x"), "unknown key 'itme' (did you mean 'item'?)"),
    (mutate(rush=[{"terminal": "vend1", "cout": 3}]), "rush[0]: unknown key 'cout' (did you mean 'count'?)"),
    (mutate(rush=[{"terminal": "vend1", "cards": ["884263sa"]}]), "did you mean '884263sae'?"),
    (mutate(cards=GOOD["cards"] * 2), "a second card with this uid or number"),
    (mutate(unknown_uids=["04A1B2C3"]), "04A1B2C3 is a card's uid"),
]


@pytest.mark.parametrize("bad,message", BAD, ids=[m[:40] for _, m in BAD])
def test_a_bad_scenario_names_its_line_and_key(tmp_path, bad, message):
    with pytest.raises(scen.ScenarioError) as e:
        load(bad, tmp_path)
    assert message in str(e.value), str(e.value)
    assert str(e.value).startswith(str(tmp_path / "s.json") + ": line "), str(e.value)


def test_the_line_is_the_offending_objects(tmp_path):
    d = with_event(3, tap="feedface")
    path = tmp_path / "s.json"
    text = json.dumps(d, indent=1)
    path.write_text(text)
    want = [i + 1 for i, ln in enumerate(text.splitlines()) if '"feedface"' in ln][0] - 3  # the object's "{"
    with pytest.raises(scen.ScenarioError) as e:
        scen.load(str(path))
    assert ": line %d: events[3]:" % want in str(e.value), str(e.value)


def test_a_key_twice_is_an_error(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"name": "x",\n "start": 1764068400, "start": 1764068401, "terminals": []}')
    with pytest.raises(scen.ScenarioError) as e:
        scen.load(str(path))
    assert "line 1: key 'start' twice in one object" in str(e.value)
