"""Scenario files: who the cards and terminals are, and what happens when.

Owns loading, validating and expanding a scenario (docs/simulator.md is the spec)
into a sorted list of timed events. A scenario is JSON:

    {"name": "...", "start": 1764068400,            # UTC seconds the terminals' clocks start at
     "site": "skole-nord", "uplink": true,          # default true: broker + backend (simulator/site.py)
     "terminals": [{"id": "till1", "place": "school", "kind": "till"},
                   {"id": "vend1", "kind": "vending", "mdb": {"level": 3, "always_idle": true}}, ...],
     "accounts":  [{"account": 1, "balance": 20000, "places": ["school"],
                    "limits": {"school": {"day": 2500}}, "topup_kr": 200}, ...],
     "cards":     [{"uid": "04A1B2C3", "number": "884263sae", "account": 1,
                    "status": "active"}, ...],
     "events":    [{"at": 0.5, "terminal": "till1", "pay": 4500, "item": "1x Sandwich"},
                   {"at": 0.6, "terminal": "till1", "tap": "884263sae", "hold": 0.4},
                   {"at": 9.0, "terminal": "till1", "power_cut": true},
                   {"at": 9.5, "terminal": "till1", "boot": true},
                   {"at": 12.0, "broker": "down"}, {"at": 40.0, "broker": "up"},  # site events
                   {"at": 13.0, "ntp_down": true}, {"at": 14.0, "clock_skew": 3600},  # time (docs/time.md)
                   {"at": 15.0, "advance": 86400},
                   {"at": 16.0, "terminal": "till1", "rtc_lost": true}],
     "rush":      [{"terminal": "till1", "count": 100, "from": 1.0, "every": 0.6,
                    "amounts": [1500, 2500], "items": ["1x Pasta"], "seed": 1}]}

`rush` entries expand into PAY (or VEND) + tap pairs with cards drawn at random
(seeded, so a scenario always expands the same way).

Strict: a key this spec does not name, a card a tap names that is neither a card's
number or UID nor one of `unknown_uids`, a duplicate id, and an event that cannot
happen (a negative time, a boot of a terminal that is on, a power cut of one that is
off) are errors that name the file's line and the key, with a "did you mean" for a
near miss.
"""
import bisect
import difflib
import json
import json.decoder
import json.scanner
import math
import random

from cpos import rules
from cpos.uid import UID_LENGTHS
from cpos.net import messages

PLACES = {"school": rules.PLACE_SCHOOL, "club": rules.PLACE_CLUB}
KINDS = {"till": rules.TILL, "vending": rules.VENDING}
STATUSES = {"active": rules.ACTIVE, "blocked": rules.BLOCKED, "replaced": rules.REPLACED}
WINDOWS = {"day": 0, "week": 1, "month": 2}
EVENT_KINDS = ("pay", "tap", "remove", "power_cut", "boot", "reboot", "cancel", "void", "rtc_lost", "clock_skew")
SITE_EVENT_KINDS = ("broker", "backend")  # {"at": 5, "broker": "down"} ... {"at": 40, "broker": "up"}
# Time (docs/time.md): the site's SNTP server silent / answering again ({"at": 5, "ntp_down": true}),
# lying by N s ({"clock_skew": N}; 0 honest again), the world's time moved forward ({"advance": s}).
# With "terminal", `clock_skew` makes that terminal's battery RTC lie instead; `rtc_lost` empties its cell.
TIME_SITE_KINDS = ("ntp_down", "ntp_up", "clock_skew", "advance")

# Every key the spec names, per kind of object.
TOP_KEYS = ("name", "start", "site", "uplink", "terminals", "accounts", "cards", "unknown_uids", "events", "rush")
TERMINAL_KEYS = ("id", "place", "kind", "no", "rtc", "mdb")
MDB_KEYS = ("level", "always_idle")
VEND_OUTCOMES = ("success", "failure", "cancel", "reset")
ACCOUNT_KEYS = ("account", "balance", "places", "limits", "topup_kr")
CARD_KEYS = ("uid", "number", "account", "status")
EVENT_KEYS = ("at", "terminal", "item", "hold", "outcome") + EVENT_KINDS + SITE_EVENT_KINDS + TIME_SITE_KINDS
RUSH_KEYS = ("terminal", "count", "from", "every", "seed", "amounts", "items", "cards", "hold")


class ScenarioError(ValueError):
    pass


class _Obj(dict):
    """A JSON object that knows the line it starts on (None when built in Python)."""
    line = None


def _line(obj):
    return getattr(obj, "line", None)


def _fail(obj, where, msg):
    line = _line(obj)
    raise ScenarioError("%s%s: %s" % ("line %d: " % line if line else "", where, msg))


def _suggest(word, options):
    near = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return " (did you mean %r?)" % near[0] if near else ""


def _only(obj, allowed, where):
    if not isinstance(obj, dict):
        raise ScenarioError("%s: must be an object, got %s" % (where, json.dumps(obj)))
    for k in obj:
        if k not in allowed:
            _fail(obj, where, "unknown key %r%s; known keys: %s" % (k, _suggest(k, allowed), ", ".join(allowed)))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _need(d, key, what, kind=None):
    if key not in d:
        _fail(d, what, "missing %r" % key)
    v = d[key]
    if kind is int and not _is_int(v):
        _fail(d, what, "%r must be a whole number, got %s" % (key, json.dumps(v)))
    if kind is not None and kind is not int and not isinstance(v, kind):
        _fail(d, what, "%r must be %s, got %s" % (key, {str: "text", list: "a list"}.get(kind, kind.__name__),
                                                    json.dumps(v)))
    return v


def _num(d, key, what, default, lo=0.0, positive=False):
    v = d.get(key, default)
    if not _is_num(v) or v < lo or (positive and v <= 0):
        _fail(d, what, "%r must be a %s number of seconds, got %s" % (
            key, "positive" if positive else "non-negative", json.dumps(v)))
    return float(v)


def _flag(e, kind, where):
    if e[kind] is not True:
        _fail(e, where, "%r must be true, got %s" % (kind, json.dumps(e[kind])))


def _uid_bytes(text):
    """The UID that hex `text` spells, or None unless it is hex of a 4-, 7- or 10-byte UID."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) in UID_LENGTHS else None


class Scenario:
    def __init__(self, d):
        _only(d, TOP_KEYS, "scenario")
        self.name = d.get("name", "scenario")
        if not isinstance(self.name, str):
            _fail(d, "scenario", "'name' must be text")
        self.start = int(_need(d, "start", "scenario", int))
        if self.start <= 0:
            _fail(d, "scenario", "'start' must be UTC seconds after 1970")
        self.site = d.get("site", "sim")
        if not messages.valid_site(self.site):
            _fail(d, "scenario", "site must be 1-32 of a-z, 0-9 and '-', got %r" % (self.site,))
        self.uplink = d.get("uplink", True)
        if not isinstance(self.uplink, bool):
            _fail(d, "scenario", "uplink must be true or false")
        self._terminals(d)
        self._accounts(d)
        self._cards(d)
        self.events = self._expand(d)

    # -- who ---------------------------------------------------------------------------
    def _terminals(self, d):
        self.terminals = []
        nos = set()
        for i, t in enumerate(_need(d, "terminals", "scenario", list)):
            where = "terminals[%d]" % i
            _only(t, TERMINAL_KEYS, where)
            tid = _need(t, "id", where, str)
            where = "terminal %s" % tid
            place, kind = t.get("place", "school"), t.get("kind", "till")
            if place not in PLACES:
                _fail(t, where, "place must be school or club, got %r%s" % (place, _suggest(place, PLACES)))
            if kind not in KINDS:
                _fail(t, where, "kind must be till or vending, got %r%s" % (kind, _suggest(kind, KINDS)))
            no = t.get("no", i + 1)
            if not _is_int(no) or not 1 <= no <= 9999:
                _fail(t, where, "no must be a number 1..9999")
            if tid in [x["id"] for x in self.terminals] or no in nos:
                _fail(t, where, "a second terminal with this id or no")
            nos.add(no)
            rtc = t.get("rtc", False)
            if not isinstance(rtc, bool):
                _fail(t, where, "rtc (a battery-backed DS3231) must be true or false")
            self.terminals.append({"id": tid, "no": no, "place": place, "kind": kind, "rtc": rtc,
                                   "mdb": self._mdb(t, where, kind)})
        self.terminal_ids = [t["id"] for t in self.terminals]

    def _terminal(self, tid):
        return [t for t in self.terminals if t["id"] == tid][0]

    @staticmethod
    def _mdb(t, where, kind):
        """`"mdb": {"level": 1-3, "always_idle": bool}`: a vending machine on MDB (docs/mdb.md)."""
        m = t.get("mdb")
        if m is None:
            return None
        _only(m, MDB_KEYS, where + ".mdb")
        if kind != "vending":
            _fail(t, where, "mdb needs kind vending")
        level, idle = m.get("level", 3), m.get("always_idle", True)
        if level not in (1, 2, 3) or not _is_int(level):
            _fail(m, where, "mdb.level must be 1, 2 or 3, got %s" % json.dumps(level))
        if not isinstance(idle, bool) or (idle and level < 3):
            _fail(m, where, "mdb.always_idle must be true or false, and true needs level 3")
        return {"level": level, "always_idle": idle}

    def _accounts(self, d):
        self.accounts = {}
        for i, a in enumerate(_need(d, "accounts", "scenario", list) if "accounts" in d else []):
            _only(a, ACCOUNT_KEYS, "accounts[%d]" % i)
            acc = _need(a, "account", "accounts[%d]" % i, int)
            where = "account %d" % acc
            if acc in self.accounts:
                _fail(a, where, "a second account with this number")
            places = 0
            for p in a.get("places", ["school", "club"]):
                if p not in PLACES:
                    _fail(a, where, "unknown place %r%s" % (p, _suggest(p, PLACES)))
                places |= 1 << PLACES[p]
            limits = [rules.NO_LIMIT] * 6
            lim = a.get("limits", {})
            if not isinstance(lim, dict):
                _fail(a, where, "'limits' must be an object {place: {window: øre}}")
            for p, ws in lim.items():
                if p not in PLACES:
                    _fail(lim, where, "limits: unknown place %r%s" % (p, _suggest(p, PLACES)))
                if not isinstance(ws, dict):
                    _fail(lim, where, "limits.%s must be an object {window: øre}" % p)
                for w, v in ws.items():
                    if w not in WINDOWS:
                        _fail(ws, where, "limits.%s: unknown window %r%s" % (p, w, _suggest(w, WINDOWS)))
                    if not _is_int(v) or v < 0:
                        _fail(ws, where, "limits.%s.%s must be whole non-negative øre, got %s" % (p, w, json.dumps(v)))
                    limits[rules.slot(PLACES[p], WINDOWS[w])] = v
            balance, topup = a.get("balance", 0), a.get("topup_kr", 0)
            if not _is_int(balance) or balance < 0:
                _fail(a, where, "'balance' must be whole non-negative øre, got %s" % json.dumps(balance))
            if not _is_int(topup) or topup < 0:
                _fail(a, where, "'topup_kr' must be whole non-negative kroner, got %s" % json.dumps(topup))
            self.accounts[acc] = {"account": acc, "balance": balance, "places": places,
                                  "limits": limits, "topup_kr": topup}

    def _cards(self, d):
        self.cards = []
        self.card_by_number = {}
        self.card_by_uid = {}
        for i, c in enumerate(_need(d, "cards", "scenario", list) if "cards" in d else []):
            _only(c, CARD_KEYS, "cards[%d]" % i)
            uid = _need(c, "uid", "cards[%d]" % i, str)
            raw = self._uid(c, "card %s" % uid, uid)
            acc = _need(c, "account", "card %s" % uid, int)
            if acc not in self.accounts:
                _fail(c, "card %s" % uid, "unknown account %d%s" % (acc, _suggest(acc, self.accounts)))
            status = c.get("status", "active")
            if status not in STATUSES:
                _fail(c, "card %s" % uid, "status must be active/blocked/replaced, got %r%s"
                      % (status, _suggest(status, STATUSES)))
            number = c.get("number", uid)
            if not isinstance(number, str) or not number:
                _fail(c, "card %s" % uid, "'number' must be text")
            if raw in self.card_by_uid or number in self.card_by_number:
                _fail(c, "card %s" % uid, "a second card with this uid or number")
            card = {"uid": raw, "number": number, "account": acc, "status": STATUSES[status]}
            self.cards.append(card)
            self.card_by_number[number] = card
            self.card_by_uid[raw] = card
        self.unknown_uids = []
        for u in _need(d, "unknown_uids", "scenario", list) if "unknown_uids" in d else []:
            raw = self._uid(d, "unknown_uids", u)
            if raw in self.card_by_uid:
                _fail(d, "unknown_uids", "%s is a card's uid" % u)
            self.unknown_uids.append(raw)

    @staticmethod
    def _uid(obj, where, text):
        raw = _uid_bytes(text) if isinstance(text, str) else None
        if raw is None:
            _fail(obj, where, "uid %s must be 4, 7 or 10 bytes in hex" % json.dumps(text))
        return raw

    def card_uid(self, ref, obj=None, where="tap"):
        """A tap names a card by its number or UID hex, or one of `unknown_uids`."""
        card = self.card_by_number.get(ref) if isinstance(ref, str) else None
        if card:
            return card["uid"]
        raw = _uid_bytes(ref) if isinstance(ref, str) else None
        if raw is not None and (raw in self.card_by_uid or raw in self.unknown_uids):
            return raw
        names = list(self.card_by_number) + [u.hex().upper() for u in list(self.card_by_uid) + self.unknown_uids]
        _fail(obj, where, "card %s is no card's number or uid, nor in unknown_uids%s"
              % (json.dumps(ref), _suggest(ref, names)))

    # -- what happens -----------------------------------------------------------------
    def _event(self, e, i):
        where = "events[%d]" % i
        _only(e, EVENT_KEYS, where)
        at = _num(e, "at", where, None)
        timed = [k for k in TIME_SITE_KINDS if k in e]
        if timed and "terminal" not in e:
            extra = [k for k in e if k not in ("at",) + TIME_SITE_KINDS]
            if len(timed) != 1 or extra:
                _fail(e, where, "a time event is {\"at\": s, and one of %s}, nothing else (got %s)"
                      % (", ".join(TIME_SITE_KINDS), ", ".join(sorted(e))))
            k, v = timed[0], e[timed[0]]
            if k in ("ntp_down", "ntp_up"):
                _flag(e, k, where)
            elif k == "advance" and (not _is_num(v) or v <= 0):
                _fail(e, where, "'advance' must be a positive number of seconds, got %s" % json.dumps(v))
            elif k == "clock_skew" and not _is_int(v):
                _fail(e, where, "'clock_skew' must be whole seconds (negative: behind), got %s" % json.dumps(v))
            return {"at": at, "terminal": None, "kind": k, "state": v, "line": _line(e)}
        site = [k for k in SITE_EVENT_KINDS if k in e]
        if site:
            extra = [k for k in e if k not in ("at",) + SITE_EVENT_KINDS]
            if len(site) != 1 or extra:
                _fail(e, where, "a site event is {\"at\": s, \"broker\" or \"backend\": \"down\"/\"up\"}, "
                                "nothing else (got %s)" % ", ".join(sorted(e)))
            if e[site[0]] not in ("down", "up"):
                _fail(e, where, "%r must be \"down\" or \"up\", got %s" % (site[0], json.dumps(e[site[0]])))
            if not self.uplink:
                _fail(e, where, "%s events need the uplink (\"uplink\": true)" % site[0])
            return {"at": at, "terminal": None, "kind": site[0], "state": e[site[0]], "line": _line(e)}
        if e.get("terminal") not in self.terminal_ids:
            _fail(e, where, "unknown terminal %s%s" % (json.dumps(e.get("terminal")),
                                                       _suggest(e.get("terminal"), self.terminal_ids)))
        kinds = [k for k in EVENT_KINDS if k in e]
        if len(kinds) != 1:
            _fail(e, where, "needs exactly one of %s" % ", ".join(EVENT_KINDS))
        ev = {"at": at, "terminal": e["terminal"], "kind": kinds[0], "line": _line(e)}
        if "outcome" in e and (kinds[0] != "pay" or e["outcome"] not in VEND_OUTCOMES):
            _fail(e, where, "'outcome' belongs to a pay event at an MDB vending machine: one of %s"
                  % ", ".join(VEND_OUTCOMES))
        if "item" in e and kinds[0] != "pay":
            _fail(e, where, "'item' belongs to a pay event")
        if "hold" in e and kinds[0] != "tap":
            _fail(e, where, "'hold' belongs to a tap event")
        if ev["kind"] == "pay":
            if not _is_int(e["pay"]) or e["pay"] <= 0:
                _fail(e, where, "pay must be positive whole øre, got %s" % json.dumps(e["pay"]))
            if not isinstance(e.get("item", ""), str):
                _fail(e, where, "'item' must be text")
            ev["amount"], ev["item"] = e["pay"], e.get("item", "")
            ev["outcome"] = e.get("outcome", "success")
        elif ev["kind"] == "tap":
            ev["uid"] = self.card_uid(e["tap"], e, where)
            ev["hold"] = _num(e, "hold", where, 0.3, positive=True)
        elif ev["kind"] == "clock_skew":
            if not _is_int(e["clock_skew"]):
                _fail(e, where, "'clock_skew' must be whole seconds, got %s" % json.dumps(e["clock_skew"]))
            if not self._terminal(e["terminal"])["rtc"]:
                _fail(e, where, "clock_skew of %s's battery RTC: it has none (\"rtc\": true)" % e["terminal"])
            ev["seconds"] = e["clock_skew"]
        elif ev["kind"] == "rtc_lost" and not self._terminal(e["terminal"])["rtc"]:
            _fail(e, where, "rtc_lost of %s: it has no battery RTC (\"rtc\": true)" % e["terminal"])
        else:
            _flag(e, ev["kind"], where)
        return ev

    def _rush(self, r, i):
        where = "rush[%d]" % i
        _only(r, RUSH_KEYS, where)
        tid = r.get("terminal")
        if tid not in self.terminal_ids:
            _fail(r, where, "unknown terminal %s%s" % (json.dumps(tid), _suggest(tid, self.terminal_ids)))
        count = r.get("count", 10)
        if not _is_int(count) or count < 1:
            _fail(r, where, "'count' must be a whole number >= 1")
        t = _num(r, "from", where, 1.0)
        every = _num(r, "every", where, 0.6, positive=True)
        hold = _num(r, "hold", where, 0.25, positive=True)
        amounts, items = r.get("amounts", [2500]), r.get("items", ["1x Frokost"])
        if not isinstance(amounts, list) or not amounts or not all(_is_int(a) and a > 0 for a in amounts):
            _fail(r, where, "'amounts' must be a list of positive whole øre")
        if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
            _fail(r, where, "'items' must be a list of texts")
        seed = r.get("seed", 0)
        if not _is_int(seed):
            _fail(r, where, "'seed' must be a whole number")
        rnd = random.Random(seed)
        pool = r.get("cards") or [c["number"] for c in self.cards]
        if not isinstance(pool, list):
            _fail(r, where, "'cards' must be a list of card numbers or UIDs")
        pool = pool + [u.hex() for u in self.unknown_uids]
        if not pool:
            _fail(r, where, "no cards to draw from")
        uids = {c: self.card_uid(c, r, where + ".cards") for c in pool}
        events, last = [], None
        for _ in range(count):
            card = rnd.choice(pool)
            while card == last and len(set(pool)) > 1:  # the next customer, not the same card again
                card = rnd.choice(pool)
            last = card
            events.append({"at": t, "terminal": tid, "kind": "pay", "amount": rnd.choice(amounts),
                           "item": rnd.choice(items), "line": _line(r)})
            events.append({"at": t + 0.05, "terminal": tid, "kind": "tap", "uid": uids[card], "hold": hold,
                           "line": _line(r)})
            t += every
        return events

    def _expand(self, d):
        raw = _need(d, "events", "scenario", list) if "events" in d else []
        events = [self._event(e, i) for i, e in enumerate(raw)]
        self._check_power(events, raw)
        for i, r in enumerate(_need(d, "rush", "scenario", list) if "rush" in d else []):
            events += self._rush(r, i)
        events.sort(key=lambda e: e["at"])  # stable: events at one time keep the file's order
        return events

    def _check_power(self, events, raw):
        """A power cut of a terminal that is off, or a boot of one that is on, cannot happen:
        the scenario's author has lost track of the terminal (every terminal starts on)."""
        on = {tid: True for tid in self.terminal_ids}
        order = sorted(range(len(events)), key=lambda k: events[k]["at"])
        for k in order:
            ev = events[k]
            if ev["kind"] == "power_cut" and not on[ev["terminal"]]:
                _fail(raw[k], "events[%d]" % k, "power cut of %s at %g s, which is already off"
                      % (ev["terminal"], ev["at"]))
            if ev["kind"] == "boot" and on[ev["terminal"]]:
                _fail(raw[k], "events[%d]" % k, "boot of %s at %g s, which is on (a reset is \"reboot\")"
                      % (ev["terminal"], ev["at"]))
            if ev["kind"] in ("power_cut", "boot"):
                on[ev["terminal"]] = ev["kind"] == "boot"


def loads(text):
    """Parse JSON text; every object knows the line it starts on (for error messages)."""
    starts = [0]
    p = text.find("\n")
    while p >= 0:
        starts.append(p + 1)
        p = text.find("\n", p + 1)

    def pairs(p):
        seen = set()
        for k, _ in p:
            if k in seen:
                raise ScenarioError("key %r twice in one object" % k)
            seen.add(k)
        return p

    def parse_object(s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo=None):
        s, end = s_and_end
        try:
            kv, new_end = json.decoder.JSONObject(s_and_end, strict, scan_once, None, pairs, memo)
        except ScenarioError as e:
            if str(e).startswith("line "):
                raise
            raise ScenarioError("line %d: %s" % (bisect.bisect_right(starts, end - 1), e))
        o = _Obj(kv)
        o.line = bisect.bisect_right(starts, end - 1)
        return o, new_end

    dec = json.JSONDecoder()
    dec.parse_object = parse_object
    dec.scan_once = json.scanner.py_make_scanner(dec)
    return dec.decode(text)


def load(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        d = loads(text)
    except ScenarioError as e:
        raise ScenarioError("%s: %s" % (path, e))
    except ValueError as e:
        raise ScenarioError("%s: not valid JSON (%s)" % (path, e))
    try:
        return Scenario(d)
    except ScenarioError as e:
        raise ScenarioError("%s: %s" % (path, e))
