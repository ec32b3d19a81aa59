"""The line protocol between the terminal and the point of sale (till or vending machine).

Owns parsing of requests and formatting of replies; docs/pos-protocol.md is the spec.
ASCII lines ending in LF (CR before it is ignored); item text may be UTF-8.

Requests (POS -> terminal):
    PAY <ref> <amount_ore> <item text>     till: open a payment, wait for a tap
    VEND <ref> <amount_ore> <item text>    vending machine: vend request, wait for a tap
    CANCEL <ref>                           withdraw the open request
    PING                                   liveness
    LAST                                   the newest journaled decision (after a lost reply)
    VOID <ref> <orig_seq>                  give back the money of own approved purchase orig_seq
Replies (terminal -> POS):
    WAIT <ref>                             request open, waiting for a card
    APPROVED <ref> <seq> <amount_ore> <balance_after_ore>
    REFUSED <ref> <reason_name>
    CANCELLED <ref> | EXPIRED <ref> | PONG <terminal_id>
    LAST <seq> <amount_ore> <balance_after_ore> <reason_name> <t>
    LAST <seq> <amount_ore> <balance_after_ore> reversed <t> <orig_seq>   (the newest is a reversal)
    LAST - <newest_seq>                    no record left to show (newest_seq 0: none ever)
    VOIDED <ref> <orig_seq> <rev_seq> <amount_ore> <balance_after_ore>
    ERR <ref or -> <what>                  the request was not understood or not allowed
"""
MAX_LINE = 200
MAX_REF = 16
MAX_ITEM = 40

PAY = "PAY"
VEND = "VEND"
CANCEL = "CANCEL"
PING = "PING"
LAST = "LAST"
VOID = "VOID"


class ProtoError(ValueError):
    """A request line that cannot be accepted; str() is the short reason sent back."""

    def __init__(self, ref, what):
        super().__init__(what)
        self.ref = ref
        self.what = what


def _ref(word):
    if not word or len(word) > MAX_REF:
        return False
    for ch in word:
        if not (ch.isalpha() or ch.isdigit() or ch in "-_"):
            return False
    return True


def parse(line):
    """Parse one request line (bytes or str) -> (verb, ref, amount, item).

    Raises ProtoError with a short machine-readable reason for anything else.
    """
    if isinstance(line, (bytes, bytearray, memoryview)):
        if len(line) > MAX_LINE:
            raise ProtoError("-", "line-too-long")
        try:
            line = bytes(line).decode("utf-8")
        except UnicodeError:
            raise ProtoError("-", "not-utf8")
    if len(line) > MAX_LINE:
        raise ProtoError("-", "line-too-long")
    line = line.rstrip("\r\n")
    parts = line.split(" ", 3)
    verb = parts[0]
    if verb == PING and len(parts) == 1:
        return (PING, "-", 0, "")
    if verb == LAST:
        if len(parts) != 1:
            raise ProtoError("-", "bad-last")
        return (LAST, "-", 0, "")
    if verb not in (PAY, VEND, CANCEL, VOID):
        raise ProtoError("-", "unknown-request")
    if len(parts) < 2 or not _ref(parts[1]):
        raise ProtoError("-", "bad-ref")
    ref = parts[1]
    if verb == CANCEL:
        if len(parts) != 2:
            raise ProtoError(ref, "bad-cancel")
        return (CANCEL, ref, 0, "")
    if verb == VOID:  # (VOID, ref, orig_seq, "")
        if len(parts) != 3 or not parts[2].isdigit() or len(parts[2]) > 10:
            raise ProtoError(ref, "bad-void")
        orig = int(parts[2])
        if not 0 < orig <= 0xFFFFFFFF:
            raise ProtoError(ref, "bad-void")
        return (VOID, ref, orig, "")
    if len(parts) < 3 or not parts[2].isdigit() or len(parts[2]) > 9:
        raise ProtoError(ref, "bad-amount")
    amount = int(parts[2])
    if amount <= 0:
        raise ProtoError(ref, "bad-amount")
    item = parts[3].strip() if len(parts) > 3 else ""
    return (verb, ref, amount, item[:MAX_ITEM])


def wait(ref):
    return "WAIT %s\n" % ref


def approved(ref, seq, amount, balance_after):
    return "APPROVED %s %d %d %d\n" % (ref, seq, amount, balance_after)


def refused(ref, reason_name):
    return "REFUSED %s %s\n" % (ref, reason_name)


def cancelled(ref):
    return "CANCELLED %s\n" % ref


def expired(ref):
    return "EXPIRED %s\n" % ref


def pong(terminal_id):
    return "PONG %s\n" % terminal_id


def last(seq, amount, balance_after, reason_name, t):
    """The newest journaled decision: its seq, amount, balance after, reason and time."""
    return "LAST %d %d %d %s %d\n" % (seq, amount, balance_after, reason_name, t)


def last_reversal(seq, amount, balance_after, t, orig_seq):
    """The newest journal record is a reversal (seq) that gave back purchase orig_seq."""
    return "LAST %d %d %d reversed %d %d\n" % (seq, amount, balance_after, t, orig_seq)


def voided(ref, orig_seq, rev_seq, amount, balance_after):
    """A VOID was done: purchase orig_seq reversed by the durable record rev_seq."""
    return "VOIDED %s %d %d %d %d\n" % (ref, orig_seq, rev_seq, amount, balance_after)


def last_none(newest_seq):
    """No record to show: none was ever written (0), or the newest is gone from flash."""
    return "LAST - %d\n" % newest_seq


def error(ref, what):
    return "ERR %s %s\n" % (ref, what)
