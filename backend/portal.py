"""The citizen portal's actions (borgerportal) on the reference backend's ledger.

Owns the rules the portal guide sets for what a parent or student may do: top up in whole
kroner, pay out (which cancels automatic top-up), transfer between accounts (a message is
required), block and re-activate a card, order a new card (the old one becomes replaced),
set day/week/month limits per kind of place, set the allowed places, enrol in and cancel
automatic top-up. Every action validates its input and raises PortalError with a one-line
message, and runs in one transaction that also notes what terminals must learn
(`Ledger._changed`), so a portal change and its downlink note commit together.

Money is integer øre; `top_up` and enrolment amounts are whole kroner (the guide's rule).
Limits apply at tills only: that is the terminal's rule (cpos.rules); here they are stored.
"""
import re
import time

from cpos.money import MAX_ORE, ORE_PER_KRONE, format_kr
from cpos.uid import UID_LENGTHS

PLACES = {"school": 0, "club": 1}
WINDOWS = {"day": 0, "week": 1, "month": 2}
_UID = re.compile("^(%s)$" % "|".join("[0-9a-f]{%d}" % (2 * n) for n in UID_LENGTHS))  # lower-case hex
_NUMBER = re.compile(r"^[0-9A-Za-z]{1,32}$")  # printed card number: alphanumeric, case-sensitive

TOPUP_TEXT = "1x Online Indbetaling"
PAYOUT_TEXT = "1x Udbetaling"


class PortalError(ValueError):
    """A refused portal action; str() is the one-line reason shown to the user."""


def _ore(amount, what):
    if type(amount) is not int or amount <= 0 or amount > MAX_ORE:
        raise PortalError("%s must be a positive amount in øre (at most %s), not %r"
                          % (what, format_kr(MAX_ORE), amount))
    return amount


def _whole_kr(kr, what):
    if type(kr) is not int or kr < 1 or kr * ORE_PER_KRONE > MAX_ORE:
        raise PortalError("%s must be whole Danish kroner, at least 1 kr., not %r" % (what, kr))
    return kr


def _name(table, value, what):
    if type(value) is int and value in table.values():
        return value
    if value in table:
        return table[value]
    raise PortalError("%s must be one of %s, not %r" % (what, "/".join(table), value))


class Portal:
    """Portal actions over a `Ledger`. `clock()` gives UTC epoch seconds for ledger rows."""

    def __init__(self, ledger, clock=time.time):
        self.ledger = ledger
        self.db = ledger.db
        self.clock = clock

    # --- lookups (inside the caller's transaction) -------------------------------------

    def _account(self, account):
        if type(account) is not int:
            raise PortalError("account must be a number, not %r" % (account,))
        row = self.db.execute("SELECT name, balance, status FROM accounts WHERE id = ?", (account,)).fetchone()
        if row is None:
            raise PortalError("no account %d" % account)
        if row[2] != "active":
            raise PortalError("account %d is %s" % (account, row[2]))
        return row

    def _card(self, number):
        row = self.db.execute("SELECT uid, account, status FROM cards WHERE number = ?", (number,)).fetchone()
        if row is None:
            raise PortalError("no card with number %r (card numbers are case-sensitive)" % (number,))
        return row

    def _card_of(self, account, number):
        """The uid of card `number` if it belongs to `account`; None for no card."""
        if number is None:
            return None
        uid, owner, _ = self._card(number)
        if owner != account:
            raise PortalError("card %s does not belong to account %d" % (number, account))
        return uid

    def _t(self, t):
        return int(self.clock()) if t is None else t

    def _cancel_enrolment(self, account):
        cur = self.db.execute("UPDATE enrolments SET status = 'cancelled' WHERE account = ? AND status = 'active'",
                              (account,))
        if cur.rowcount:
            self.ledger._changed("enrol", account)
        return cur.rowcount == 1

    # --- money ----------------------------------------------------------------------------

    def top_up(self, account, kr, card=None, t=None):
        """Indbetal: `kr` whole kroner onto the account (optionally named by one of its cards).
        Returns the new balance in øre."""
        _whole_kr(kr, "a top-up")
        with self.ledger._tx():
            self._account(account)
            uid = self._card_of(account, card)
            self.ledger._book(account, "deposited", kr * ORE_PER_KRONE, self._t(t), TOPUP_TEXT, uid)
        return self.ledger.balance(account)

    def payout(self, account, amount, reg_no, account_no, card=None, t=None):
        """Udbetal: `amount` øre to a Danish bank account (4-digit reg. no., up to 10-digit
        account no.), at most the balance. Cancels automatic top-up, as the guide warns.
        Returns the new balance."""
        _ore(amount, "a payout")
        if not (isinstance(reg_no, str) and len(reg_no) == 4 and reg_no.isdigit()):
            raise PortalError("reg. number must be 4 digits, not %r" % (reg_no,))
        if not (isinstance(account_no, str) and 1 <= len(account_no) <= 10 and account_no.isdigit()):
            raise PortalError("bank account number must be 1 to 10 digits, not %r" % (account_no,))
        with self.ledger._tx():
            _, balance, _ = self._account(account)
            uid = self._card_of(account, card)
            if amount > balance:
                raise PortalError("payout of %s exceeds the balance of %s" % (format_kr(amount), format_kr(balance)))
            self.ledger._book(account, "withdrawn", amount, self._t(t),
                              "%s til %s-%s" % (PAYOUT_TEXT, reg_no, account_no), uid)
            self._cancel_enrolment(account)
        return self.ledger.balance(account)

    def transfer(self, src, dst, amount, message, t=None):
        """Overfør: `amount` øre from account `src` to `dst` with the required message.
        Returns (src balance, dst balance)."""
        _ore(amount, "a transfer")
        if not isinstance(message, str) or not message.strip():
            raise PortalError("a transfer needs a message (the portal's Besked field must be filled in)")
        if len(message) > 64 or "\n" in message:
            raise PortalError("the message must be one line of at most 64 characters")
        if src == dst:
            raise PortalError("cannot transfer from account %r to itself" % (src,))
        t = self._t(t)
        with self.ledger._tx():
            src_name, balance, _ = self._account(src)
            dst_name, _, _ = self._account(dst)
            if amount > balance:
                raise PortalError("transfer of %s exceeds the balance of %s" % (format_kr(amount), format_kr(balance)))
            text = message.strip()
            self.ledger._book(src, "withdrawn", amount, t, "1x Overførsel til %s: %s" % (dst_name or dst, text))
            self.ledger._book(dst, "deposited", amount, t, "1x Overførsel fra %s: %s" % (src_name or src, text))
        return self.ledger.balance(src), self.ledger.balance(dst)

    # --- cards ----------------------------------------------------------------------------

    def _set_status(self, number, want, allowed_from, change):
        with self.ledger._tx():
            uid, account, status = self._card(number)
            if status == "replaced":
                raise PortalError("card %s has been replaced by a newer card; destroy it and use the newest"
                                  % number)
            if status != allowed_from:
                raise PortalError("card %s is already %s" % (number, status))
            self.db.execute("UPDATE cards SET status = ? WHERE uid = ?", (want, uid))
            self.ledger._changed(change, account, uid)

    def block(self, number):
        """Spær kort: a lost card is refused from now on."""
        self._set_status(number, "blocked", "active", "block")

    def activate(self, number):
        """Aktiver kort: a blocked card that turned up is accepted again."""
        self._set_status(number, "active", "blocked", "unblock")

    def order_card(self, number, new_uid=None, new_number=None):
        """Bestil nyt kort: card `number` becomes replaced at once. With `new_uid` and
        `new_number` the new card is issued in the same step; without, it is on its way
        and `issue_card` adds it when it arrives."""
        if (new_uid is None) != (new_number is None):
            raise PortalError("give both the new card's UID and its number, or neither")
        if new_uid is not None:
            new_uid = self._check_new_card(new_uid, new_number)
        with self.ledger._tx():
            uid, account, status = self._card(number)
            if status == "replaced":
                raise PortalError("card %s is already replaced" % number)
            self._account(account)
            self.db.execute("UPDATE cards SET status = 'replaced' WHERE uid = ?", (uid,))
            if new_uid is not None:
                self._insert_card(new_uid, new_number, account)
            self.ledger._changed("replace", account, uid, new_uid)

    def issue_card(self, account, uid, number):
        """A new card for `account` (the ordered card arriving, or a first card)."""
        uid = self._check_new_card(uid, number)
        with self.ledger._tx():
            self._account(account)
            self._insert_card(uid, number, account)
            self.ledger._changed("new_card", account, uid)

    def _check_new_card(self, uid, number):
        uid = uid.lower() if isinstance(uid, str) else uid
        if not (isinstance(uid, str) and _UID.match(uid)):
            raise PortalError("card UID must be 4, 7 or 10 bytes in hex, not %r" % (uid,))
        if not (isinstance(number, str) and _NUMBER.match(number)):
            raise PortalError("card number must be 1 to 32 letters or digits, not %r" % (number,))
        return uid

    def _insert_card(self, uid, number, account):
        clash = self.db.execute("SELECT uid, number FROM cards WHERE uid = ? OR number = ?", (uid, number)).fetchone()
        if clash is not None:
            raise PortalError("a card with UID %s or number %s already exists" % (uid, number))
        self.db.execute("INSERT INTO cards (uid, number, account, status, issued) VALUES (?, ?, ?, 'active', ?)",
                        (uid, number, account, int(self.clock())))

    # --- settings (stamdata) --------------------------------------------------------------

    def set_limit(self, account, place, window, amount):
        """Maks forbrug: at most `amount` øre per `window` (day/week/month) at `place`
        (school/club), at tills; `None` removes the limit. 0 is allowed (nothing at tills)."""
        p = _name(PLACES, place, "place")
        w = _name(WINDOWS, window, "window")
        if amount is not None and (type(amount) is not int or not 0 <= amount <= MAX_ORE):
            raise PortalError("a limit must be a non-negative amount in øre, or none, not %r" % (amount,))
        with self.ledger._tx():
            self._account(account)
            self.ledger._set_limit(account, p, w, amount)

    def set_places(self, account, places):
        """Forbrugssteder: exactly the kinds of place in `places` (names or ints) are allowed."""
        if isinstance(places, str):
            raise PortalError("places must be a list of kinds of place, not one string")
        wanted = sorted({_name(PLACES, p, "place") for p in places})
        with self.ledger._tx():
            self._account(account)
            self.db.execute("DELETE FROM places WHERE account = ?", (account,))
            for p in wanted:
                self.db.execute("INSERT INTO places VALUES (?, ?)", (account, p))
            self.ledger._changed("places", account)

    def enrol(self, account, amount_kr, payment_ref, t=None):
        """Automatisk optankning: charge `amount_kr` whole kroner to the stored payment card
        `payment_ref` (the payment provider's token) when a till sees the balance under 50 kr.
        An enrolled account must cancel first to change card or amount, as in the portal."""
        _whole_kr(amount_kr, "the automatic top-up amount")
        if not (isinstance(payment_ref, str) and 1 <= len(payment_ref) <= 64 and payment_ref.isprintable()):
            raise PortalError("payment card reference must be 1 to 64 printable characters")
        with self.ledger._tx():
            self._account(account)
            row = self.db.execute("SELECT status FROM enrolments WHERE account = ?", (account,)).fetchone()
            if row is not None and row[0] == "active":
                raise PortalError("account %d is already enrolled in automatic top-up; cancel it first" % account)
            self.db.execute("INSERT OR REPLACE INTO enrolments VALUES (?, ?, ?, 'active', ?)",
                            (account, amount_kr, payment_ref, self._t(t)))
            self.ledger._changed("enrol", account)

    def cancel_enrolment(self, account):
        """Annuller automatisk optankning."""
        with self.ledger._tx():
            self._account(account)
            if not self._cancel_enrolment(account):
                raise PortalError("account %d is not enrolled in automatic top-up" % account)
