"""Portal actions on the reference ledger (backend/portal.py): the guide's rules,
the statement lines they leave, the changes terminals must learn, and that a refused
action changes nothing at all."""
import pytest
from hypothesis import given, settings, strategies as st

from backend import Ledger, format_statement
from backend.portal import Portal, PortalError

T0 = 1764000000


def world():
    led = Ledger(":memory:")
    portal = Portal(led, clock=lambda: T0)
    a = led.add_account("Test Barn 1", account_id=1)
    b = led.add_account("Test Barn 2", account_id=2)
    portal.issue_card(a, "04A1B2C3D4E5F6", "884263sae")
    portal.issue_card(b, "04a1b2c3d4e5f7", "123456789")
    return led, portal, a, b


def changes(led, after=0):
    return [(k, a, u, u2) for _, k, a, u, u2, _ in led.changes_since(after)]


def last_change(led):
    return led.changes_since(0)[-1][0] if led.changes_since(0) else 0


def state(led):
    """Everything a refused action must leave as it was."""
    q = ("SELECT * FROM accounts ORDER BY id", "SELECT * FROM cards ORDER BY uid", "SELECT * FROM places",
         "SELECT * FROM limits", "SELECT * FROM enrolments", "SELECT * FROM ledger ORDER BY id",
         "SELECT id, kind, account, uid, uid2 FROM changes ORDER BY id")
    return [led.db.execute(x).fetchall() for x in q]


def test_top_up_whole_kroner_on_the_statement():
    led, portal, a, _ = world()
    mark = last_change(led)
    assert portal.top_up(a, 100, card="884263sae", t=T0) == 10000
    assert portal.top_up(a, 1, t=T0 + 60) == 10100
    assert changes(led, mark) == [("balance", a, None, None)] * 2
    lines = led.statement("884263sae")
    assert [(ln["type"], ln["amount"], ln["balance"], ln["text"]) for ln in lines] == [
        ("Indsat", 100, 10100, "1x Online Indbetaling"), ("Indsat", 10000, 10000, "1x Online Indbetaling")]
    before = state(led)
    for bad in (0, -5, 1.5, "10", True, None):
        with pytest.raises(PortalError, match="whole Danish kroner"):
            portal.top_up(a, bad)
    with pytest.raises(PortalError, match="no account 99"):
        portal.top_up(99, 10)
    with pytest.raises(PortalError, match="does not belong"):
        portal.top_up(a, 10, card="123456789")
    with pytest.raises(PortalError, match="case-sensitive"):
        portal.top_up(a, 10, card="884263SAE")
    assert state(led) == before


def test_payout_takes_money_out_and_cancels_automatic_top_up():
    led, portal, a, _ = world()
    portal.top_up(a, 100)
    portal.enrol(a, 200, "visa-1")
    mark = last_change(led)
    assert portal.payout(a, 4050, "1234", "1234567891", t=T0 + 5) == 5950
    assert changes(led, mark) == [("balance", a, None, None), ("enrol", a, None, None)]
    assert led.db.execute("SELECT status FROM enrolments WHERE account = ?", (a,)).fetchone() == ("cancelled",)
    top = led.statement("884263sae")[0]
    assert (top["type"], top["amount"], top["balance"]) == ("Hævet", 4050, 5950)
    assert top["text"].startswith("1x Udbetaling")
    # Without an enrolment a payout notes only the balance.
    mark = last_change(led)
    portal.payout(a, 950, "1234", "1")
    assert changes(led, mark) == [("balance", a, None, None)]
    before = state(led)
    with pytest.raises(PortalError, match="exceeds the balance of 50.00 kr."):
        portal.payout(a, 5001, "1234", "1234567891")
    for reg, konto in (("123", "1"), ("12a4", "1"), ("1234", ""), ("1234", "12345678901"), (1234, "1")):
        with pytest.raises(PortalError, match="digits"):
            portal.payout(a, 100, reg, konto)
    for bad in (0, -1, 1.0):
        with pytest.raises(PortalError, match="positive amount"):
            portal.payout(a, bad, "1234", "1")
    assert state(led) == before


def test_transfer_moves_money_between_accounts_with_a_message():
    led, portal, a, b = world()
    portal.top_up(a, 90)
    mark = last_change(led)
    assert portal.transfer(a, b, 2000, "Test", t=T0 + 10) == (7000, 2000)
    assert changes(led, mark) == [("balance", a, None, None), ("balance", b, None, None)]
    out, = [ln for ln in led.statement("884263sae") if ln["type"] == "Hævet"]
    into, = led.statement("123456789")
    assert (out["amount"], out["balance"], out["text"]) == (2000, 7000, "1x Overførsel til Test Barn 2: Test")
    assert (into["type"], into["amount"], into["balance"]) == ("Indsat", 2000, 2000)
    text = format_statement("123456789", led.statement("123456789"))
    assert "Indsat" in text and "20.00 kr." in text and "Overførsel fra Test Barn 1" in text
    before = state(led)
    with pytest.raises(PortalError, match="needs a message"):
        portal.transfer(a, b, 100, "  ")
    with pytest.raises(PortalError, match="itself"):
        portal.transfer(a, a, 100, "x")
    with pytest.raises(PortalError, match="exceeds the balance"):
        portal.transfer(a, b, 7001, "x")
    with pytest.raises(PortalError, match="no account 5"):
        portal.transfer(a, 5, 100, "x")
    assert state(led) == before


def test_block_and_re_activate():
    led, portal, a, _ = world()
    mark = last_change(led)
    portal.block("884263sae")
    with pytest.raises(PortalError, match="already blocked"):
        portal.block("884263sae")
    portal.activate("884263sae")
    with pytest.raises(PortalError, match="already active"):
        portal.activate("884263sae")
    assert changes(led, mark) == [("block", a, "04a1b2c3d4e5f6", None), ("unblock", a, "04a1b2c3d4e5f6", None)]
    with pytest.raises(PortalError, match="no card"):
        portal.block("nope")


def test_order_a_new_card_replaces_the_old_one():
    led, portal, a, _ = world()
    mark = last_change(led)
    portal.order_card("884263sae")  # the new card is on its way
    assert changes(led, mark) == [("replace", a, "04a1b2c3d4e5f6", None)]
    with pytest.raises(PortalError, match="replaced by a newer card"):
        portal.activate("884263sae")
    with pytest.raises(PortalError, match="already replaced"):
        portal.order_card("884263sae")
    portal.issue_card(a, "04a1b2c3d4e5f8", "728F9661")  # ... and arrives
    mark = last_change(led)
    portal.order_card("728F9661", "0A0B0C0D", "9000X")  # issued at the counter in one go
    assert changes(led, mark) == [("replace", a, "04a1b2c3d4e5f8", "0a0b0c0d")]
    assert led.db.execute("SELECT number, status FROM cards WHERE account = ? ORDER BY number", (a,)).fetchall() == [
        ("728F9661", "replaced"), ("884263sae", "replaced"), ("9000X", "active")]
    before = state(led)
    with pytest.raises(PortalError, match="already exists"):
        portal.order_card("9000X", "0a0b0c0e", "123456789")
    with pytest.raises(PortalError, match="4, 7 or 10 bytes"):
        portal.order_card("9000X", "0a0b0c", "x1")
    with pytest.raises(PortalError, match="letters or digits"):
        portal.issue_card(a, "0a0b0c0f", "12-34")
    with pytest.raises(PortalError, match="both"):
        portal.order_card("9000X", "0a0b0c0f", None)
    assert state(led) == before


def test_limits_and_places():
    led, portal, a, _ = world()
    mark = last_change(led)
    portal.set_limit(a, "club", "day", 2000)
    portal.set_limit(a, "school", "day", 2500)
    portal.set_limit(a, 0, 2, 30000)
    portal.set_limit(a, "school", "month", None)
    portal.set_places(a, ["school"])
    assert led.db.execute("SELECT place, window, amount FROM limits ORDER BY place, window").fetchall() == [
        (0, 0, 2500), (1, 0, 2000)]
    assert led.db.execute("SELECT place FROM places WHERE account = ?", (a,)).fetchall() == [(0,)]
    # A limit change also re-sends the window totals it counts against (none were sent without a limit).
    assert changes(led, mark) == [("limits", a, None, None), ("totals", a, None, None)] * 4 + [("places", a, None, None)]
    portal.set_places(a, ["club", "school", "club"])
    assert led.db.execute("SELECT place FROM places WHERE account = ? ORDER BY place", (a,)).fetchall() == [(0,), (1,)]
    portal.set_places(a, [])
    assert led.db.execute("SELECT count(*) FROM places WHERE account = ?", (a,)).fetchone() == (0,)
    before = state(led)
    for args, msg in (((a, "gym", "day", 1), "place must be"), ((a, "school", "year", 1), "window must be"),
                      ((a, "school", "day", -1), "non-negative"), ((a, "school", "day", 1.5), "non-negative"),
                      ((7, "school", "day", 1), "no account 7")):
        with pytest.raises(PortalError, match=msg):
            portal.set_limit(*args)
    with pytest.raises(PortalError, match="place must be"):
        portal.set_places(a, ["school", "mall"])
    with pytest.raises(PortalError, match="not one string"):
        portal.set_places(a, "school")
    assert state(led) == before


def test_enrol_and_cancel_automatic_top_up():
    led, portal, a, _ = world()
    mark = last_change(led)
    portal.enrol(a, 200, "visa-4242")
    with pytest.raises(PortalError, match="already enrolled"):
        portal.enrol(a, 300, "visa-1")
    portal.cancel_enrolment(a)
    with pytest.raises(PortalError, match="not enrolled"):
        portal.cancel_enrolment(a)
    portal.enrol(a, 300, "visa-1")  # a new card after cancelling, as the guide says
    assert led.db.execute("SELECT amount_kr, payment_ref, status FROM enrolments").fetchall() == [(300, "visa-1", "active")]
    assert changes(led, mark) == [("enrol", a, None, None)] * 3
    before = state(led)
    portal.cancel_enrolment(a)
    portal.enrol(a, 300, "visa-1")
    for kr in (0, 12.5, -1):
        with pytest.raises(PortalError, match="whole Danish kroner"):
            portal.enrol(a, kr, "visa-1")
    with pytest.raises(PortalError, match="printable"):
        portal.enrol(a, 100, "")
    assert state(led)[:5] == before[:5]


ACTIONS = st.one_of(
    st.tuples(st.just("top_up"), st.integers(0, 3), st.integers(-2, 500)),
    st.tuples(st.just("payout"), st.integers(0, 3), st.integers(-100, 60000)),
    st.tuples(st.just("transfer"), st.integers(0, 3), st.integers(0, 3), st.integers(-100, 60000)),
    st.tuples(st.just("block"), st.sampled_from(["884263sae", "123456789", "nope"])),
    st.tuples(st.just("activate"), st.sampled_from(["884263sae", "123456789"])),
    st.tuples(st.just("enrol"), st.integers(0, 3), st.integers(-1, 300)),
    st.tuples(st.just("cancel_enrolment"), st.integers(0, 3)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(ACTIONS, max_size=25))
def test_any_action_sequence_keeps_the_books_and_refusals_change_nothing(actions):
    led, portal, a, b = world()
    for act in actions:
        name, args = act[0], act[1:]
        if name == "payout":
            args = args + ("1234", "1")
        elif name == "transfer":
            args = args + ("x",)
        elif name == "enrol":
            args = args + ("visa-1",)
        before = state(led)
        try:
            getattr(portal, name)(*args)
        except PortalError:
            assert state(led) == before
        else:
            assert len(state(led)[6]) > len(before[6])  # every mutation notes a change
    for acc in (a, b):
        rows = led.db.execute("SELECT type, amount FROM ledger WHERE account = ?", (acc,)).fetchall()
        assert led.balance(acc) == sum(x if t == "deposited" else -x for t, x in rows)
        assert led.balance(acc) >= 0  # the portal never pays out or transfers money that is not there
