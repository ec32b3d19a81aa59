"""The config's `mdb` section (docs/config.md, docs/mdb.md): checked, with defaults.

    s = Settings({"link": "tcp", "host": "0.0.0.0", "port": 7201, "level": 3})

Owns what the reader states in READER CONFIG and PERIPHERAL ID (level, currency,
scale, decimals, maximum response time) and its session timeout, plus the link spec
(`cpos.mdb.link.make_link`). Raises ValueError naming the field; `cpos.config`
turns it into a ConfigError.
"""
from cpos.compat import const

DKK = const(0x1208)  # ISO 4217 numeric 208 as BCD with a leading 1
_LINKS = ("tcp", "uart")
_KEYS = ("link", "host", "port", "uart", "tx", "rx", "level", "currency", "scale", "decimals",
         "max_response_s", "session_timeout_s", "serial", "state",
         "invert")


def _int(d, key, lo, hi, default):
    v = d.get(key, default)
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError("mdb.%s must be a whole number %d..%d, got %r" % (key, lo, hi, v))
    return v


class Settings:
    def __init__(self, d):
        if type(d) is not dict:
            raise ValueError("mdb must be an object {...}")
        for k in d:
            if k not in _KEYS:
                raise ValueError("mdb.%s is not a known setting (known: %s)" % (k, ", ".join(_KEYS)))
        self.link = d.get("link")
        if self.link not in _LINKS:
            raise ValueError("mdb.link must be one of %s, got %r" % ("/".join(_LINKS), self.link))
        if self.link == "tcp":
            if type(d.get("host")) is not str or not d["host"]:
                raise ValueError("mdb.host must be non-empty text")
            _int(d, "port", 1, 65535, None)
        else:
            for k in ("uart", "tx", "rx"):  # the board's PINS["mdb"] supplies what is absent
                if k in d:
                    _int(d, k, 0, 40, None)
        if d.get("invert", "none") not in ("none", "tx", "rx", "both"):
            raise ValueError("mdb.invert must be none, tx, rx or both, got %r" % (d["invert"],))
        self.spec = d
        self.level = _int(d, "level", 1, 3, 3)
        self.currency = _int(d, "currency", 0, 0xFFFF, DKK)
        self.scale = _int(d, "scale", 1, 255, 1)
        self.decimals = _int(d, "decimals", 0, 2, 2)
        self.unit_ore = self.scale * (1, 10, 100)[2 - self.decimals]  # øre per unit on the bus
        self.max_response_s = _int(d, "max_response_s", 1, 255, 5)
        self.session_timeout_ms = _int(d, "session_timeout_s", 1, 600, 30) * 1000
        self.state = d.get("state")  # the vend log's flash (cpos.mdb.vendlog): {"partition"} or {"file", "size"}
        if self.state is not None and (type(self.state) is not dict or not ("partition" in self.state or "file" in self.state)):
            raise ValueError("mdb.state needs either \"partition\" (ESP32) or \"file\" and \"size\"")
        serial = d.get("serial", "")
        if type(serial) is not str or len(serial) > 12:
            raise ValueError("mdb.serial must be text of at most 12 characters")
        self.manufacturer = b"CPS"
        self.serial = (serial + " " * 12)[:12].encode()
        self.model = b"CPOS Terminal"[:12]
        self.version = 0x0100  # BCD 01.00
