"""Money in integer øre (cpos.money), on both runtimes."""
from cpos import money
from checks import raises


def test_parse_kr():
    assert money.parse_kr("12") == 1200
    assert money.parse_kr("12.5") == 1250
    assert money.parse_kr("12.50") == 1250
    assert money.parse_kr(" 0.05 ") == 5
    assert money.parse_kr("-3.10") == -310
    for bad in ("", "12.", ".5", "1.234", "1,50", "abc", "1e3", "--1", "12.5x",
                "\u0661\u0662", "1.\u0665", "1\u00b2", "+5", "1 000"):
        raises(ValueError, money.parse_kr, bad)
    raises(ValueError, money.parse_kr, 12)


def test_format_kr():
    assert money.format_kr(10000) == "100.00 kr."
    assert money.format_kr(5) == "0.05 kr."
    assert money.format_kr(-500) == "-5.00 kr."
    assert money.format_kr(0) == "0.00 kr."


def test_is_ore():
    assert money.is_ore(0) and money.is_ore(-5) and money.is_ore(money.MAX_ORE)
    assert not money.is_ore(1.0)
    assert not money.is_ore(True)
    assert not money.is_ore("5")
    assert not money.is_ore(money.MAX_ORE + 1)


def test_round_trip():
    for ore in (0, 1, 99, 100, 101, 123456, money.MAX_ORE):
        assert money.parse_kr(money.format_kr(ore)[:-4]) == ore
