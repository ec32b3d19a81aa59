"""Terminal configuration: load the JSON file and validate it with clear errors.

Owns the schema of `config.json` (docs/config.md). `load(path)` or `validate(dict)`
returns a `Config` whose attributes are checked and typed; anything wrong raises
`ConfigError` naming the field and what it must be, so a technician can fix it
from one line. Unknown top-level keys are refused too: a typo must not be ignored.
"""
import json

from cpos import rules
from cpos.offline import OfflinePolicy


class ConfigError(ValueError):
    """The configuration is missing, unreadable or invalid; the message names the field."""


PLACES = {"school": rules.PLACE_SCHOOL, "club": rules.PLACE_CLUB}
KINDS = {"till": rules.TILL, "vending": rules.VENDING}
PN532_LINKS = ("uart", "i2c", "spi", "tcp")
POS_LINKS = ("uart", "tcp", "none")

_TOP = ("terminal_id", "terminal_no", "site", "place", "kind", "pn532", "pos", "storage",
        "feedback", "topup_threshold_ore", "removal_window_ms", "watchdog_ms", "mqtt", "wifi", "board", "offline",
        "site_key", "refund_window_s", "time", "mdb", "keys")
_MQTT = ("host", "port", "user", "password", "keepalive", "batch", "ack_timeout_ms", "window", "backoff_max_ms",
         "tls")
_TLS = ("ca", "cert", "key", "server_name")


def _fail(field, must):
    raise ConfigError("config %s: %s" % (field, must))


def _get(d, key, kind, field, default=None, required=True):
    if key not in d:
        if required:
            _fail(field, "is missing")
        return default
    v = d[key]
    if kind is int and (type(v) is not int):
        _fail(field, "must be a whole number, got %r" % (v,))
    if kind is str and (type(v) is not str or not v):
        _fail(field, "must be non-empty text, got %r" % (v,))
    if kind is dict and type(v) is not dict:
        _fail(field, "must be an object {...}")
    if kind is bool and type(v) is not bool:
        _fail(field, "must be true or false")
    return v


def _int_in(d, key, field, lo, hi, default=None):
    v = _get(d, key, int, field, default, default is None)
    if not lo <= v <= hi:
        _fail(field, "must be between %d and %d, got %d" % (lo, hi, v))
    return v


def _choice(d, key, field, choices, default=None):
    v = _get(d, key, str, field, default, default is None)
    if v not in choices:
        _fail(field, "must be one of %s, got %r" % ("/".join(sorted(choices)), v))
    return v


def _ident(v, field):
    for ch in v:
        if not (ch.isalpha() or ch.isdigit() or ch in "-_"):
            _fail(field, "may hold only letters, digits, '-' and '_' (it is part of MQTT topics), got %r" % v)
    if len(v) > 32:
        _fail(field, "must be at most 32 characters")
    return v


def _link(d, field, links):
    """A PN532 or POS link: `link` plus its settings, as `cpos.reader.link.make_link` (PN532)
    or `cpos.pos.link.make_link` (POS) takes them.

    tcp needs `host` and `port`; the hardware links take pin numbers and bus settings,
    all whole numbers (uart: uart, tx, rx, baud; i2c: i2c, scl, sda, freq, addr;
    spi: spi, sck, mosi, miso, cs, baud; any: reset).
    """
    link = _choice(d, "link", field + ".link", links)
    if "wait_ms" in d:  # PN532: a pending poll's length, 0 = plain polling (docs/pn532.md)
        _int_in(d, "wait_ms", field + ".wait_ms", 0, 60000)
    if link == "tcp":
        _get(d, "host", str, field + ".host")
        _int_in(d, "port", field + ".port", 1, 65535)
        return d
    for key in d:
        if key != "link":
            _int_in(d, key, "%s.%s" % (field, key), 0, 10000000)
    if "baud" in d and not 9600 <= d["baud"] <= 5000000:
        _fail(field + ".baud", "must be between 9600 and 5000000")
    return d


def _storage(d):
    out = {}
    for part in ("journal", "cardtable"):
        s = _get(d, part, dict, "storage." + part)
        if "partition" in s:
            _get(s, "partition", str, "storage.%s.partition" % part)
        elif "file" in s:
            _get(s, "file", str, "storage.%s.file" % part)
            size = _int_in(s, "size", "storage.%s.size" % part, 4 * 4096, 64 * 1024 * 1024)
            if size % 4096:
                _fail("storage.%s.size" % part, "must be a multiple of 4096 (flash sectors)")
        else:
            _fail("storage." + part, "needs either \"partition\" (ESP32) or \"file\" and \"size\"")
        out[part] = s
    return out


def _mqtt(d, terminal_id, terminal_no, site):
    """The broker connection and uplink settings (docs/protocol.md). Topic levels and the
    broker's ACL use the terminal id `t%04d` of the terminal number, and a site of
    lower-case letters, digits and '-', so the config must agree with them."""
    from cpos.net import messages

    for key in d:
        if key not in _MQTT:
            _fail("mqtt." + key, "is not a known setting (known: %s)" % ", ".join(_MQTT))
    tls = _tls(_get(d, "tls", dict, "mqtt.tls", None, False))
    out = {
        "host": _get(d, "host", str, "mqtt.host"),
        "port": _int_in(d, "port", "mqtt.port", 1, 65535, 8883 if tls else 1883),
        "user": _get(d, "user", str, "mqtt.user", terminal_id, False),
        # with a client certificate the certificate is the login: no password needed
        "password": _get(d, "password", str, "mqtt.password", None, not (tls and "cert" in tls)),
        "tls": tls,
        "keepalive": _int_in(d, "keepalive", "mqtt.keepalive", 5, 600, 30),
        "batch": _int_in(d, "batch", "mqtt.batch", 1, messages.MAX_BATCH_RECORDS, messages.RECOMMENDED_BATCH),
        "ack_timeout_ms": _int_in(d, "ack_timeout_ms", "mqtt.ack_timeout_ms", 1000, 600000, 15000),
        "window": _int_in(d, "window", "mqtt.window", 1, 16, 4),
        "backoff_max_ms": _int_in(d, "backoff_max_ms", "mqtt.backoff_max_ms", 1000, 600000, 30000),
    }
    user = out["user"]
    if terminal_id != messages.terminal_id(terminal_no):
        _fail("terminal_id", "must be %r (t + the 4-digit terminal_no) when mqtt is set, got %r"
              % (messages.terminal_id(terminal_no), terminal_id))
    if user != terminal_id:
        _fail("mqtt.user", "must be the terminal id %r (the broker's ACL is per terminal)" % terminal_id)
    if not messages.valid_site(site):
        _fail("site", "must be 1-32 of a-z, 0-9 and '-' when mqtt is set (it is a topic level), got %r" % site)
    return out


def _tls(d):
    """The broker link's TLS (docs/security.md): `ca` the site CA, `cert` and `key` the
    terminal's own client certificate and key, all DER in hex; `server_name` the name
    the broker's certificate carries when it is not `mqtt.host`."""
    if d is None:
        return None
    for key in d:
        if key not in _TLS:
            _fail("mqtt.tls." + key, "is not a known setting (known: %s)" % ", ".join(_TLS))
    for key in ("ca", "cert", "key"):
        if key in d or key == "ca":
            v = _get(d, key, str, "mqtt.tls." + key)
            if len(v) % 2 or len(v) < 64:
                _fail("mqtt.tls." + key, "must be a DER object in hex (cpos provision writes it)")
            for ch in v:
                if ch not in "0123456789abcdefABCDEF":
                    _fail("mqtt.tls." + key, "must be a DER object in hex (cpos provision writes it)")
    if ("cert" in d) != ("key" in d):
        _fail("mqtt.tls", "needs both cert and key, or neither")
    if "server_name" in d:
        _get(d, "server_name", str, "mqtt.tls.server_name")
    return d


def _keys(d):
    """This terminal's own keys (docs/security.md "Per-terminal keys"): `down` verifies the
    backend's downlink messages and acks, `up` signs its uplink batches; each 64 hex
    digits, derived by the backend from the site's master secret and this terminal's id.
    (None, None) when absent. The site's master never comes here: a `site_key` (the old
    shared key, which let one terminal forge for all) is refused."""
    if "site_key" in d:
        _fail("site_key", "is the old shared site key and is no longer accepted: re-provision the terminal "
                          "(cpos provision --rotate) to get its own keys")
    k = d.get("keys")
    if k is None:
        return None, None
    if type(k) is not dict:
        _fail("keys", "must be an object {\"down\": ..., \"up\": ...}")
    from cpos.net.signing import key_from_hex

    out = []
    for name in ("down", "up"):
        try:
            out.append(key_from_hex(k.get(name)))
        except ValueError:
            _fail("keys." + name, "must be 64 hex digits (this terminal's key, written by cpos provision)")
    for name in k:
        if name not in ("down", "up"):
            _fail("keys." + name, "is not a known key (known: down, up)")
    return out[0], out[1]


def _wifi(d):
    for key in d:
        if key not in ("ssid", "password"):
            _fail("wifi." + key, "is not a known setting (known: ssid, password)")
    _get(d, "ssid", str, "wifi.ssid")
    if "password" in d and type(d["password"]) is not str:
        _fail("wifi.password", "must be text")
    return d


def _offline(d):
    """The offline-exposure policy (docs/offline.md), or None when the key is absent."""
    if d is None:
        return None
    for key in d:
        if key not in ("threshold_s", "allowance_ore"):
            _fail("offline." + key, "is not a known setting (known: threshold_s, allowance_ore)")
    return OfflinePolicy(_int_in(d, "threshold_s", "offline.threshold_s", 0, 7 * 86400),
                         _int_in(d, "allowance_ore", "offline.allowance_ore", 0, 10000000))


def _time(d):
    """Time sources and bounds (docs/time.md, cpos.timekeeper); {} when the key is absent."""
    from cpos import timekeeper

    known = ("sntp", "ds3231", "step_s", "ahead_s", "sntp_every_s", "retry_s", "rtc_every_s", "backend_every_s")
    for key in d:
        if key not in known:
            _fail("time." + key, "is not a known setting (known: %s)" % ", ".join(known))
    out = {"step_s": _int_in(d, "step_s", "time.step_s", 1, 86400, timekeeper.STEP_S),
           "ahead_s": _int_in(d, "ahead_s", "time.ahead_s", 60, 3650 * 86400, timekeeper.AHEAD_S),
           "sntp_every_s": _int_in(d, "sntp_every_s", "time.sntp_every_s", 10, 86400, 3600),
           "retry_s": _int_in(d, "retry_s", "time.retry_s", 1, 600, 5),
           "rtc_every_s": _int_in(d, "rtc_every_s", "time.rtc_every_s", 10, 86400, 3600),
           "backend_every_s": _int_in(d, "backend_every_s", "time.backend_every_s", 10, 86400, 3600)}
    if "sntp" in d:
        c = _get(d, "sntp", dict, "time.sntp")
        for key in c:
            if key not in ("host", "port", "timeout_ms"):
                _fail("time.sntp." + key, "is not a known setting (known: host, port, timeout_ms)")
        out["sntp"] = {"host": _get(c, "host", str, "time.sntp.host"),
                       "port": _int_in(c, "port", "time.sntp.port", 1, 65535, 123),
                       "timeout_ms": _int_in(c, "timeout_ms", "time.sntp.timeout_ms", 100, 10000, 1500)}
    if "ds3231" in d:
        c = _get(d, "ds3231", dict, "time.ds3231")
        for key in c:  # the board's I2C bus and pins (boards/README.md `battery_rtc`)
            _int_in(c, key, "time.ds3231." + key, 0, 10000000)
        out["ds3231"] = c
    return out


class Config:
    """A validated configuration. Attributes mirror docs/config.md."""

    def __init__(self, d):
        if type(d) is not dict:
            raise ConfigError("config: must be a JSON object {...}")
        for key in d:
            if key not in _TOP:
                _fail(key, "is not a known setting (known: %s)" % ", ".join(_TOP))
        self.terminal_id = _ident(_get(d, "terminal_id", str, "terminal_id"), "terminal_id")
        self.terminal_no = _int_in(d, "terminal_no", "terminal_no", 1, 0xFFFFFFFF)
        self.site = _ident(_get(d, "site", str, "site"), "site")
        self.place = PLACES[_choice(d, "place", "place", PLACES)]
        self.kind = KINDS[_choice(d, "kind", "kind", KINDS)]
        self.topup_threshold = _int_in(d, "topup_threshold_ore", "topup_threshold_ore", 0, 10000000,
                                       rules.DEFAULT_TOPUP_THRESHOLD)
        self.removal_window_ms = _int_in(d, "removal_window_ms", "removal_window_ms", 100, 5000, 500)
        self.watchdog_ms = _int_in(d, "watchdog_ms", "watchdog_ms", 1000, 60000, 8000)
        self.board = _get(d, "board", str, "board", "unix", False)
        self.pn532 = _link(_get(d, "pn532", dict, "pn532"), "pn532", PN532_LINKS)
        self.pos = _link(_get(d, "pos", dict, "pos", {"link": "none"}, False), "pos", POS_LINKS)
        self.storage = _storage(_get(d, "storage", dict, "storage"))
        self.feedback = _get(d, "feedback", dict, "feedback", {}, False)
        self.mqtt = _get(d, "mqtt", dict, "mqtt", None, False)
        if self.mqtt is not None:
            self.mqtt = _mqtt(self.mqtt, self.terminal_id, self.terminal_no, self.site)
        # site_key: the key that verifies this terminal's downlink (its own `keys.down`)
        self.site_key, self.up_key = _keys(d)
        self.wifi = _get(d, "wifi", dict, "wifi", None, False)
        if self.wifi is not None:
            self.wifi = _wifi(self.wifi)
        self.profile = rules.Profile(self.place, self.kind, self.topup_threshold)
        self.offline = _offline(_get(d, "offline", dict, "offline", None, False))
        self.refund_window_s = _int_in(d, "refund_window_s", "refund_window_s", 1, 86400, 900)
        self.time = _time(_get(d, "time", dict, "time", {}, False))
        self.mdb = _mdb(d.get("mdb"), self.kind)


def validate(d):
    """Check a configuration dict; returns a Config or raises ConfigError."""
    return Config(d)


def load(path):
    """Read and validate a JSON configuration file."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("config: cannot read %s (provision the terminal first)" % path)
    try:
        d = json.loads(text)
    except ValueError:
        raise ConfigError("config: %s is not valid JSON" % path)
    return Config(d)


def _mdb(d, kind):
    """The MDB cashless reader (docs/mdb.md), or None when the key is absent."""
    if d is None:
        return None
    if kind != rules.VENDING:
        _fail("mdb", "needs \"kind\": \"vending\" (a till has no vending machine controller)")
    from cpos.mdb.settings import Settings

    try:
        return Settings(d)
    except ValueError as e:
        raise ConfigError("config %s" % e)
