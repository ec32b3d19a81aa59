"""`python -m backend ACTION --ledger FILE ...`: run the backend, or do one portal action.

    python -m backend serve --ledger FILE --port N --password-file F --site-key-file SITE=F [...]
    python -m backend --ledger FILE --port N --password-file F [...]      (same: the old form)
    python -m backend rotate-master --ledger FILE --site-dir DIR     (docs/technician.md)
    python -m backend top-up --ledger FILE --account 7 --kr 200
    python -m backend block --ledger FILE --card 884263sae
    python -m backend conflicts --ledger FILE [--terminal 7] [--json]
    ...  (`python -m backend -h` lists every action; docs/portal.md describes them)

A refused action prints one line `error: ...` on stderr and exits 2; nothing changed.
The names match `cpos` (host_tools/cli.py): `--ledger` is the ledger's SQLite file
(`--db`, its old name, still works), `--terminal` a terminal's number.
"""
import argparse
import asyncio
import json
import os
import sqlite3
import sys

from cpos import reasons
from cpos.localtime import format_local
from cpos.money import format_kr, parse_kr
from backend.ledger import Ledger, format_statement
from backend.payments import PaymentProvider
from backend.portal import PLACES, WINDOWS, Portal, PortalError
from backend.topup import TopupProcessor


def _serve(a):
    from backend.service import Backend
    from backend import secrets_in

    try:
        password = secrets_in.broker_password(a.password_file)
        keys = secrets_in.site_masters(a.site_key_file)
    except secrets_in.SecretError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    a.password = password
    from backend.trust import RecordChecks

    ledger = Ledger(a.db, checks=RecordChecks(max_amount=a.max_amount_kr * 100, max_age_s=a.max_record_age_days * 86400,
                                              journal_records=a.journal_records))
    be = Backend(ledger, a.host, a.port, a.user, a.password, a.client_id, a.crash_after_apply,
                 log=lambda m: print(m, file=sys.stderr, flush=True),
                 payments=None if a.payments == "off" else _payments(a), crash_after_charge=a.crash_after_charge,
                 site_keys=keys, poll_ms=a.poll_ms, coalesce_ms=a.coalesce_ms,
                 one_connection=a.one_connection,
                 **({"sync_limit": (10 ** 9, 10 ** 9), "health_limit": (10 ** 9, 10 ** 9)} if a.no_rate_limits else {}))
    print("backend up", flush=True)
    asyncio.run(be.run())


def _kr(text):
    """Kroner with at most two decimals (`20`, `20.50`) to øre; refuses floats' surprises."""
    try:
        return parse_kr(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an amount in kroner: %r" % text)


def _whole(text):
    if not text.isdigit():
        raise argparse.ArgumentTypeError("not whole kroner: %r" % text)
    return int(text)


def _limit(text):
    if text == "none":
        return None
    if text.startswith("-"):
        raise argparse.ArgumentTypeError("a limit cannot be negative: %r" % text)
    return _kr(text)


def _account_summary(led, account):
    row = led.db.execute("SELECT name, balance, status FROM accounts WHERE id = ?", (account,)).fetchone()
    if row is None:
        raise PortalError("no account %d" % account)
    out = ["account %d %s: balance %s, %s" % (account, row[0] or "", format_kr(row[1]), row[2])]
    for number, uid, status in led.db.execute(
            "SELECT number, uid, status FROM cards WHERE account = ? ORDER BY issued, rowid", (account,)):
        out.append("card %s (uid %s): %s" % (number, uid, status))
    places = [n for n, p in sorted(PLACES.items(), key=lambda kv: kv[1])
              if led.db.execute("SELECT 1 FROM places WHERE account = ? AND place = ?", (account, p)).fetchone()]
    out.append("places: %s" % (" ".join(places) or "none"))
    for p, w, amount in led.db.execute("SELECT place, window, amount FROM limits WHERE account = ? "
                                       "ORDER BY place, window", (account,)):
        out.append("limit %s %s: %s" % ([n for n in PLACES if PLACES[n] == p][0],
                                        [n for n in WINDOWS if WINDOWS[n] == w][0], format_kr(amount)))
    en = led.db.execute("SELECT amount_kr, payment_ref, status FROM enrolments WHERE account = ?", (account,)).fetchone()
    if en:
        out.append("automatic top-up: %d kr. from %s, %s" % en)
    return "\n".join(out)


def _record_line(r):
    """One journal record (a dict of the ledger's RECORD_FIELDS) on one line, for staff."""
    return "%s  account %d  card %s  %s  %s%s  %s" % (
        format_local(r["t"]), r["account"], r["uid"], format_kr(r["amount"]), reasons.name(r["reason"]),
        " (top-up trigger)" if r["topup"] else "", r["item"])


def _conflicts(led, terminal, as_json):
    """The records kept in uplink_conflicts, each with the record that holds its seq."""
    rows = led.conflicts(terminal)
    if as_json:
        return "\n".join(json.dumps(r, ensure_ascii=False, sort_keys=True) for r in rows)
    out = []
    for r in rows:
        out.append("conflict %d: t%04d seq %d, received %s" % (r["id"], r["terminal"], r["seq"],
                                                              format_local(r["received"])))
        out.append("  kept, not booked: %s" % _record_line(r))
        out.append("  seq %d holds:     %s" % (r["seq"], _record_line(r["stored"])))
    out.append("%d conflict(s)" % len(rows) if rows else "no conflicts")
    return "\n".join(out)


def _refused(led, terminal, as_json):
    """The records the backend's checks refused (backend.trust): kept, not booked."""
    rows, dropped = led.refused(terminal)
    if as_json:
        return "\n".join(json.dumps(r, ensure_ascii=False, sort_keys=True) for r in rows)
    out = ["t%04d seq %d, received %s: %s\n  %s" % (r["terminal"], r["seq"], format_local(r["received"]), r["why"],
                                                    _record_line(r["record"])) for r in rows]
    for number, n in sorted(dropped.items()):
        if terminal is None or terminal == number:
            out.append("t%04d: %d more refused record(s) not kept (over the cap)" % (number, n))
    out.append("%d refused record(s)" % len(rows) if rows else "no refused records")
    return "\n".join(out)


def _payments(a):
    return a.payments or a.db + ".payments"


def _do(a, led):
    """Run action `a.cmd` on `led`; returns the text to print."""
    portal = Portal(led)
    c = a.cmd
    if c == "add-account":
        acc = led.add_account(a.name, account_id=a.id)
        return "account %d" % acc
    if c == "issue-card":
        portal.issue_card(a.account, a.uid, a.number)
        return "card %s issued to account %d" % (a.number, a.account)
    if c == "top-up":
        return "balance %s" % format_kr(portal.top_up(a.account, a.kr, card=a.card))
    if c == "payout":
        return "balance %s" % format_kr(portal.payout(a.account, a.amount, a.reg, a.konto, card=a.card))
    if c == "transfer":
        b1, b2 = portal.transfer(a.src, a.dst, a.amount, a.message)
        return "balance %s (account %d), %s (account %d)" % (format_kr(b1), a.src, format_kr(b2), a.dst)
    if c == "block":
        portal.block(a.card)
        return "card %s blocked" % a.card
    if c == "activate":
        portal.activate(a.card)
        return "card %s active" % a.card
    if c == "order-card":
        portal.order_card(a.card, a.new_uid, a.new_number)
        return "card %s replaced" % a.card + (" by %s" % a.new_number if a.new_number else "")
    if c == "set-limit":
        portal.set_limit(a.account, a.place, a.window, a.amount)
        return "limit %s %s: %s" % (a.place, a.window, "none" if a.amount is None else format_kr(a.amount))
    if c == "set-places":
        portal.set_places(a.account, a.places)
        return "places: %s" % (" ".join(a.places) or "none")
    if c == "enrol":
        portal.enrol(a.account, a.kr, a.payment_ref)
        return "account %d enrolled: %d kr." % (a.account, a.kr)
    if c == "cancel-enrol":
        portal.cancel_enrolment(a.account)
        return "account %d: automatic top-up cancelled" % a.account
    if c == "statement":
        try:
            return format_statement(a.card, led.statement(a.card))
        except KeyError:
            raise PortalError("no card with number %r (card numbers are case-sensitive)" % a.card)
    if c == "account":
        return _account_summary(led, a.account)
    if c == "conflicts":
        return _conflicts(led, a.terminal, a.json)
    if c == "refused":
        return _refused(led, a.terminal, a.json)
    if c == "adopt-version":
        from backend.downlink import Downlink

        try:
            v = Downlink(led, {}).adopt_version(a.terminal)
        except KeyError:
            raise PortalError("terminal %d has not reported a card-table version yet" % a.terminal)
        except ValueError as e:
            raise PortalError("terminal %d: %s" % (a.terminal, e))
        return "t%04d: downlink stream at v%d; its next sync request brings a snapshot above it" % (a.terminal, v)
    if c == "rotate-master":
        from backend.site_keys import rotate_master

        return rotate_master(a.site_dir, led.db)
    if c == "payment-card":
        prov = PaymentProvider(_payments(a))
        prov.add_card(a.ref, a.expiry, a.funds_kr * 100)
        prov.close()
        return "payment card %s: expires %s, %d kr. available" % (a.ref, a.expiry, a.funds_kr)
    if c == "process-topups":
        prov = PaymentProvider(_payments(a))
        proc = TopupProcessor(led, prov)
        n = proc.recover() + proc.process_pending()
        prov.close()
        rows = led.db.execute("SELECT status, count(*) FROM topup_triggers GROUP BY status ORDER BY status").fetchall()
        return "%d attempt(s) finished; triggers: %s" % (n, ", ".join("%s %d" % r for r in rows) or "none")
    raise AssertionError(c)


def _parser():
    ap = argparse.ArgumentParser(prog="python -m backend",
                                 description="The reference backend: serve it, or do one portal action.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="ACTION")
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--ledger", dest="db", metavar="FILE", help="the ledger's SQLite file (required)")
    db.add_argument("--db", dest="db", help=argparse.SUPPRESS, default=argparse.SUPPRESS)  # the old name

    def action(name, help):
        return sub.add_parser(name, parents=[db], help=help)

    s = action("serve", "run the backend service (MQTT)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=1883)
    s.add_argument("--user", default="backend")
    s.add_argument("--password-file", metavar="FILE",
                   help="file holding the backend's broker password (mode 0600); or set $CPOS_BROKER_PASSWORD. "
                        "Never on the command line: any user can read it in ps")
    s.add_argument("--client-id", default="cpos-backend")
    s.add_argument("--payments", default=None,
                   help="the simulated payment provider's SQLite file (default LEDGER.payments; 'off': "
                        "no automatic top-up processing)")
    s.add_argument("--crash-after-apply", type=int, default=0,
                   help="fault injection: SIGKILL itself right after committing the Nth batch")
    s.add_argument("--crash-after-charge", action="store_true",
                   help="fault injection: SIGKILL itself after the payment provider took a top-up, before booking it")
    s.add_argument("--site-key-file", action="append", default=[], metavar="SITE=FILE",
                   help="run the downlink and check uplink signatures for SITE with the master secret in FILE "
                        "(the site folder's site_key; FILE.previous too during a master rotation; repeatable)")
    s.add_argument("--poll-ms", type=int, default=50, help="how often the downlink looks for new changes")
    s.add_argument("--coalesce-ms", type=int, default=500,
                   help="balance-like changes gather this long before the downlink sends them (default 500)")
    s.add_argument("--max-amount-kr", type=_whole, default=1000,
                   help="a record above this amount is refused, kept for staff, not booked (default 1000)")
    s.add_argument("--max-record-age-days", type=_whole, default=62,
                   help="a record older than this (by the backend's clock) is refused, kept for staff (default 62)")
    s.add_argument("--no-rate-limits", action="store_true",
                   help="benchmark only: no per-terminal budget for sync requests and health reports")
    s.add_argument("--one-connection", action="store_true",
                   help="benchmark only: sync requests and health reports on the batches' own connection")
    s.add_argument("--journal-records", type=_whole, default=4096,
                   help="records a terminal's journal holds: how far one batch may move its watermark (default 4096)")

    p = action("add-account", "create an account")
    p.add_argument("--name", required=True)
    p.add_argument("--id", type=int, default=None)
    p = action("issue-card", "give an account a new card (e.g. the ordered one arriving)")
    p.add_argument("--account", type=int, required=True)
    p.add_argument("--uid", required=True, help="4, 7 or 10 bytes in hex")
    p.add_argument("--number", required=True, help="printed card number (case-sensitive)")
    p = action("top-up", "indbetal: whole kroner onto an account")
    p.add_argument("--account", type=int, required=True)
    p.add_argument("--kr", type=_whole, required=True)
    p.add_argument("--card", help="the card number the top-up is for (optional)")
    p = action("payout", "udbetal to a bank account (cancels automatic top-up)")
    p.add_argument("--account", type=int, required=True)
    p.add_argument("--amount", type=_kr, required=True, help="kroner, e.g. 100 or 99.50")
    p.add_argument("--reg", required=True, help="bank reg. number (4 digits)")
    p.add_argument("--konto", required=True, help="bank account number (up to 10 digits)")
    p.add_argument("--card")
    p = action("transfer", "overfør between accounts")
    p.add_argument("--from", dest="src", type=int, required=True)
    p.add_argument("--to", dest="dst", type=int, required=True)
    p.add_argument("--amount", type=_kr, required=True)
    p.add_argument("--message", required=True, help="required by the portal")
    for name, what in (("block", "spær kort: block a lost card"), ("activate", "re-activate a blocked card")):
        p = action(name, what)
        p.add_argument("--card", required=True)
    p = action("order-card", "bestil nyt kort: the card becomes replaced")
    p.add_argument("--card", required=True)
    p.add_argument("--new-uid")
    p.add_argument("--new-number")
    p = action("set-limit", "maks forbrug per place kind and window (tills only); 'none' removes it")
    p.add_argument("--account", type=int, required=True)
    p.add_argument("--place", choices=sorted(PLACES), required=True)
    p.add_argument("--window", choices=sorted(WINDOWS), required=True)
    p.add_argument("--amount", type=_limit, required=True)
    p = action("set-places", "forbrugssteder: the kinds of place allowed (none listed: none allowed)")
    p.add_argument("--account", type=int, required=True)
    p.add_argument("places", nargs="*", choices=sorted(PLACES))
    p = action("enrol", "automatisk optankning: enrol with a stored payment card")
    p.add_argument("--account", type=int, required=True)
    p.add_argument("--kr", type=_whole, required=True)
    p.add_argument("--payment-ref", required=True, help="the payment provider's stored-card reference")
    p = action("cancel-enrol", "annuller automatisk optankning")
    p.add_argument("--account", type=int, required=True)
    p = action("statement", "kontoudtog of a card")
    p.add_argument("--card", required=True)
    p = action("account", "show an account: balance, cards, places, limits, enrolment")
    p.add_argument("--account", type=int, required=True)
    p = action("conflicts", "uplink records kept because their (terminal, seq) already held a different "
                            "record (a wiped or replaced journal): not booked, for staff to settle")
    p.add_argument("--terminal", type=int, help="only this terminal's (number, e.g. 7 for t0007)")
    p.add_argument("--json", action="store_true", help="one JSON object per conflict")
    p = action("refused", "uplink records the backend's checks refused (unknown account, a card not the "
                          "account's, amount, time, range): not booked, for staff to look at")
    p.add_argument("--terminal", type=int, help="only this terminal's (number, e.g. 7 for t0007)")
    p.add_argument("--json", action="store_true", help="one JSON object per refused record")
    p = action("adopt-version", "after restoring the ledger from a backup: take the card-table version a "
                                "terminal reports as its stream's (the backend otherwise refuses a version "
                                "it never sent)")
    p.add_argument("--terminal", type=int, required=True, help="the terminal's number, e.g. 7 for t0007")
    p = action("rotate-master", "start (or, run again, finish) a rotation of the site's master secret "
                                "(docs/technician.md); terminals keep working throughout")
    p.add_argument("--site-dir", required=True, help="the site folder (its site_key)")
    payments = argparse.ArgumentParser(add_help=False)
    payments.add_argument("--payments", help="the simulated payment provider's SQLite file (default LEDGER.payments)")
    p = sub.add_parser("payment-card", parents=[db, payments], help="store a card at the simulated payment provider")
    p.add_argument("--ref", required=True)
    p.add_argument("--expiry", required=True, help="YYYY-MM")
    p.add_argument("--funds-kr", type=_whole, required=True)
    sub.add_parser("process-topups", parents=[db, payments],
                   help="answer pending automatic top-up triggers once (the service does this by itself)")
    return ap


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["serve"] + argv  # the original flag form runs the service
    ap = _parser()
    for arg in argv:  # docs/security.md: a secret on a command line is visible to every user (ps)
        for flag in ("--password", "--site-key"):
            if arg == flag or arg.startswith(flag + "="):
                print("error: %s is no longer taken on the command line (every user can read it in ps): use %s"
                      % (flag, "--password-file FILE or $CPOS_BROKER_PASSWORD" if flag == "--password"
                         else "--site-key-file SITE=FILE"), file=sys.stderr)
                return 2
    a = ap.parse_args(argv)
    if a.db is None:
        ap.error("the following arguments are required: --ledger")
    if a.cmd == "serve":
        return _serve(a)
    if a.cmd != "add-account" and not os.path.exists(a.db):
        print("error: no ledger database %s" % a.db, file=sys.stderr)
        return 2
    try:
        led = Ledger(a.db)
        try:
            print(_do(a, led))
        finally:
            led.close()
    except ValueError as e:  # PortalError and the provider's input checks: the user's mistake
        print("error: %s" % e, file=sys.stderr)
        return 2
    except sqlite3.Error as e:
        print("error: database %s: %s" % (a.db, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
