"""Scenario files: who the cards and terminals are, and what happens when.

Owns loading, validating and expanding a scenario (docs/simulator.md is the spec)
into a sorted list of timed events. A scenario is JSON:

    {"name": "...", "start": 1764068400,            # UTC seconds the terminals' clocks start at
     "site": "skole-nord", "uplink": true,          # default true: broker + backend (simulator/site.py)
     "terminals": [{"id": "till1", "place": "school", "kind": "till"}, ...],
     "accounts":  [{"account": 1, "balance": 20000, "places": ["school"],
                    "limits": {"school": {"day": 2500}}, "topup_kr": 200}, ...],
     "cards":     [{"uid": "04A1B2C3", "number": "884263sae", "account": 1,
                    "status": "active"}, ...],
     "events":    [{"at": 0.5, "terminal": "till1", "pay": 4500, "item": "1x Sandwich"},
                   {"at": 0.6, "terminal": "till1", "tap": "884263sae", "hold": 0.4},
                   {"at": 9.0, "terminal": "till1", "power_cut": true},
                   {"at": 9.5, "terminal": "till1", "boot": true},
                   {"at": 12.0, "broker": "down"}, {"at": 40.0, "broker": "up"}],  # site events
     "rush":      [{"terminal": "till1", "count": 100, "from": 1.0, "every": 0.6,
                    "amounts": [1500, 2500], "items": ["1x Pasta"], "seed": 1}]}

`rush` entries expand into PAY (or VEND) + tap pairs with cards drawn at random
(seeded, so a scenario always expands the same way).
"""
import json
import random

from cpos import rules
from cpos.uid import UID_LENGTHS
from cpos.net import messages

PLACES = {"school": rules.PLACE_SCHOOL, "club": rules.PLACE_CLUB}
KINDS = {"till": rules.TILL, "vending": rules.VENDING}
STATUSES = {"active": rules.ACTIVE, "blocked": rules.BLOCKED, "replaced": rules.REPLACED}
WINDOWS = {"day": 0, "week": 1, "month": 2}
EVENT_KINDS = ("pay", "tap", "remove", "power_cut", "boot", "reboot", "cancel")
SITE_EVENT_KINDS = ("broker", "backend")  # {"at": 5, "broker": "down"} ... {"at": 40, "broker": "up"}


class ScenarioError(ValueError):
    pass


def _need(d, key, what, kind=None):
    if key not in d:
        raise ScenarioError("%s: missing %r" % (what, key))
    if kind is not None and not isinstance(d[key], kind):
        raise ScenarioError("%s: %r must be %s" % (what, key, kind.__name__))
    return d[key]


def _uid_bytes(text):
    """The UID that hex `text` spells, or None unless it is hex of a 4-, 7- or 10-byte UID."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) in UID_LENGTHS else None


class Scenario:
    def __init__(self, d):
        self.name = d.get("name", "scenario")
        self.start = int(_need(d, "start", "scenario", int))
        self.site = d.get("site", "sim")
        if not messages.valid_site(self.site):
            raise ScenarioError("site must be 1-32 of a-z, 0-9 and '-', got %r" % (self.site,))
        self.uplink = d.get("uplink", True)
        if not isinstance(self.uplink, bool):
            raise ScenarioError("uplink must be true or false")
        self.terminals = []
        for i, t in enumerate(_need(d, "terminals", "scenario", list)):
            tid = _need(t, "id", "terminal %d" % i, str)
            place, kind = t.get("place", "school"), t.get("kind", "till")
            if place not in PLACES or kind not in KINDS:
                raise ScenarioError("terminal %s: place must be school/club, kind till/vending" % tid)
            no = t.get("no", i + 1)
            if not isinstance(no, int) or not 1 <= no <= 9999:
                raise ScenarioError("terminal %s: no must be a number 1..9999" % tid)
            self.terminals.append({"id": tid, "no": no, "place": place, "kind": kind})
        self.terminal_ids = [t["id"] for t in self.terminals]
        self.accounts = {}
        for a in d.get("accounts", []):
            acc = _need(a, "account", "account", int)
            places = 0
            for p in a.get("places", ["school", "club"]):
                if p not in PLACES:
                    raise ScenarioError("account %d: unknown place %r" % (acc, p))
                places |= 1 << PLACES[p]
            limits = [rules.NO_LIMIT] * 6
            for p, ws in a.get("limits", {}).items():
                for w, v in ws.items():
                    if p not in PLACES or w not in WINDOWS or not isinstance(v, int):
                        raise ScenarioError("account %d: bad limit %s.%s" % (acc, p, w))
                    limits[rules.slot(PLACES[p], WINDOWS[w])] = v
            self.accounts[acc] = {"account": acc, "balance": int(a.get("balance", 0)), "places": places,
                                  "limits": limits, "topup_kr": int(a.get("topup_kr", 0))}
        self.cards = []
        self.card_by_number = {}
        for c in d.get("cards", []):
            uid = _need(c, "uid", "card", str)
            raw = _uid_bytes(uid)
            if raw is None:
                raise ScenarioError("card %s: uid must be 4, 7 or 10 bytes in hex" % uid)
            acc = _need(c, "account", "card %s" % uid, int)
            if acc not in self.accounts:
                raise ScenarioError("card %s: unknown account %d" % (uid, acc))
            status = c.get("status", "active")
            if status not in STATUSES:
                raise ScenarioError("card %s: status must be active/blocked/replaced" % uid)
            card = {"uid": raw, "number": c.get("number", uid), "account": acc, "status": STATUSES[status]}
            self.cards.append(card)
            self.card_by_number[card["number"]] = card
            self.card_by_number[uid.upper()] = card
        self.unknown_uids = [bytes.fromhex(u) for u in d.get("unknown_uids", [])]
        self.events = self._expand(d)

    def card_uid(self, ref):
        """A tap names a card by number or by UID hex; an unknown hex UID is allowed."""
        card = self.card_by_number.get(ref) or self.card_by_number.get(ref.upper())
        if card:
            return card["uid"]
        raw = _uid_bytes(ref)
        if raw is None:
            raise ScenarioError("tap: card %r is neither a known number nor a 4/7/10-byte UID" % ref)
        return raw

    def _event(self, e, i):
        site = [k for k in SITE_EVENT_KINDS if k in e]
        if site:
            if len(site) != 1 or "terminal" in e or e[site[0]] not in ("down", "up"):
                raise ScenarioError("event %d: a site event is {\"at\": s, \"broker\" or \"backend\": "
                                    "\"down\"/\"up\"} without a terminal" % i)
            if not self.uplink:
                raise ScenarioError("event %d: %s events need the uplink (\"uplink\": true)" % (i, site[0]))
            return {"at": float(_need(e, "at", "event %d" % i)), "terminal": None, "kind": site[0],
                    "state": e[site[0]]}
        if "terminal" not in e or e["terminal"] not in self.terminal_ids:
            raise ScenarioError("event %d: unknown terminal %r" % (i, e.get("terminal")))
        kinds = [k for k in EVENT_KINDS if k in e]
        if len(kinds) != 1:
            raise ScenarioError("event %d: needs exactly one of %s" % (i, ", ".join(EVENT_KINDS)))
        ev = {"at": float(_need(e, "at", "event %d" % i)), "terminal": e["terminal"], "kind": kinds[0]}
        if ev["kind"] == "pay":
            if not isinstance(e["pay"], int) or e["pay"] <= 0:
                raise ScenarioError("event %d: pay must be positive øre" % i)
            ev["amount"], ev["item"] = e["pay"], e.get("item", "")
        elif ev["kind"] == "tap":
            ev["uid"], ev["hold"] = self.card_uid(e["tap"]), float(e.get("hold", 0.3))
        return ev

    def _expand(self, d):
        events = [self._event(e, i) for i, e in enumerate(d.get("events", []))]
        for r in d.get("rush", []):
            tid = r.get("terminal")
            if tid not in self.terminal_ids:
                raise ScenarioError("rush: unknown terminal %r" % tid)
            rnd = random.Random(r.get("seed", 0))
            pool = r.get("cards") or [c["number"] for c in self.cards]
            pool = pool + [u.hex() for u in self.unknown_uids]
            t = float(r.get("from", 1.0))
            last = None
            for _ in range(int(r.get("count", 10))):
                card = rnd.choice(pool)
                while card == last and len(set(pool)) > 1:  # the next customer, not the same card again
                    card = rnd.choice(pool)
                last = card
                events.append({"at": t, "terminal": tid, "kind": "pay", "amount": rnd.choice(r.get("amounts", [2500])),
                               "item": rnd.choice(r.get("items", ["1x Frokost"]))})
                events.append({"at": t + 0.05, "terminal": tid, "kind": "tap",
                               "uid": self.card_uid(card), "hold": float(r.get("hold", 0.25))})
                t += float(r.get("every", 0.6))
        events.sort(key=lambda e: e["at"])
        return events


def load(path):
    with open(path) as f:
        try:
            d = json.load(f)
        except ValueError as e:
            raise ScenarioError("%s: not valid JSON (%s)" % (path, e))
    return Scenario(d)
