"""Provision a terminal: its identity, config.json, broker login, keys and backend entry.

Owns what makes a board terminal `t%04d` of a site. The site folder (`--site-dir`,
made once by `cpos site init`, host_tools/site.py) holds what the site's broker and
backend read: `site_key` (the site's master secret), the site CA, `passwd` and `acl`
(each terminal publishes only its own uplink and reads only its own downlink); a folder
or ledger that does not exist is refused, never created. The terminal gets a client
certificate signed by the site CA (its broker login over TLS; `--plain`: a password for
the loopback listener instead) and its own two keys derived from the master for this
provisioning's generation (backend/site_keys.py); the master never leaves the folder.
The config is the terminal's earlier config.json (read from the device: Wi-Fi, POS link
and other settings are kept; --fresh drops them) with provisioning's identity, login
and keys over it and then the `--set` overrides (never a secret: those come from files
or the environment), validated by the firmware's own cpos.config.validate.
Everything is checked (site, ledger, board, device, config) before anything is written;
the device gets /config.json.new (copied as a file: no secret on a command line)
renamed over /config.json (a cut leaves the old one), then the broker files, the
revocation list and the ledger entry with the key generation.
"""
import ast
import hashlib
import json
import os
import re
import subprocess
import tempfile

from cpos import config
from cpos.net import messages as protocol
from host_tools import device
from host_tools import partitions
from host_tools import site as sites
from host_tools.bundle import source_dirs
from backend import broker_users

MQTT_DEFAULTS = {"port": 1883}
TLS_PORT = 8883

_SWITCH = """
import os, json, hashlib, binascii
try:
    os.rename("/config.json.new", "/config.json")
except OSError:
    try:
        os.remove("/config.json")
    except OSError:
        pass
    os.rename("/config.json.new", "/config.json")
with open("/config.json", "rb") as f:
    print("CPOS-CONFIG " + json.dumps(binascii.hexlify(hashlib.sha256(f.read()).digest()).decode()))
"""


class ProvisionError(Exception):
    pass


def board_link(board):
    """The PN532 link a board is wired for, read from its PINS table (boards/<board>/board.py)."""
    path = os.path.join(source_dirs()[1], board, "board.py")
    try:
        text = open(path).read()
    except OSError:
        raise ProvisionError("unknown board %r: use esp32_uart or esp32_i2c (boards/README.md)" % board)
    m = re.search(r"^PINS = (\{.*?^\})", text, re.S | re.M)
    if not m:
        raise ProvisionError("board %s has no PINS table: it cannot be provisioned" % board)
    return ast.literal_eval(m.group(1))["pn532"]["link"]


# Settings that are secrets: never taken from a command line (`ps` shows it to every user).
SECRET_SETTINGS = ("wifi.password", "mqtt.password", "keys", "keys.down", "keys.up", "site_key", "mqtt.tls",
                   "mqtt.tls.key")
WIFI_PASSWORD_ENV = "CPOS_WIFI_PASSWORD"


def _set(cfg, assignment):
    key, sep, value = assignment.partition("=")
    if not sep or not key or "" in key.split("."):
        raise ProvisionError("--set %s: write KEY=VALUE, e.g. --set mqtt.keepalive=30" % assignment)
    if key in SECRET_SETTINGS:
        raise ProvisionError("--set %s: a secret is never taken on the command line (every user can read it in ps)%s; "
                             "nothing was written" % (key, "; use --wifi-password-file FILE or $%s" % WIFI_PASSWORD_ENV
                                                      if key == "wifi.password" else ": cpos provision makes it"))
    try:
        value = json.loads(value)
    except ValueError:
        pass  # plain text
    node = cfg
    parts = key.split(".")
    for i, p in enumerate(parts[:-1]):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ProvisionError("--set %s: %s is not a section" % (assignment, ".".join(parts[:i + 1])))
    node[parts[-1]] = value


def build_config(number, site, place, kind, board, broker_host, password, keys, sets=(), old=None, tls=None,
                 wifi_password=None):
    """The config dict for this terminal, validated; ProvisionError (one line) if invalid.
    `old`: the terminal's earlier config, whose other settings are kept (identity, broker
    login and keys are provisioning's own; then the --set overrides). `keys`: this
    terminal's own (down, up) keys. `tls`: the config's `mqtt.tls` (the site CA and this
    terminal's client certificate, which is its login: no password then)."""
    tid = protocol.terminal_id(number)
    base = {"pn532": {"link": board_link(board)}, "mqtt": dict(MQTT_DEFAULTS),
            "storage": {"journal": {"partition": "journal"}, "cardtable": {"partition": "cardtable"}}}
    kept = {k: v for k, v in (old or {}).items() if k not in OWNED}
    if isinstance(kept.get("mqtt"), dict):  # an earlier login is never kept: the new one replaces it
        kept["mqtt"] = {k: v for k, v in kept["mqtt"].items() if k not in ("password", "tls", "port")}
    cfg = _merge(base, kept)
    mqtt = {"host": broker_host, "user": tid}
    if tls is not None:
        mqtt["tls"] = tls
        mqtt["port"] = TLS_PORT
    else:
        mqtt["password"] = password
    cfg = _merge(cfg, {"terminal_id": tid, "terminal_no": number, "site": site, "place": place, "kind": kind,
                       "board": board, "pn532": {"link": board_link(board)}, "mqtt": mqtt,
                       "keys": {"down": keys[0].hex(), "up": keys[1].hex()}})
    for s in sets:
        _set(cfg, s)
    if wifi_password is not None:
        if not isinstance(cfg.get("wifi"), dict):
            raise ProvisionError("a Wi-Fi password needs a network: add --set wifi.ssid=NAME; nothing was written")
        cfg["wifi"]["password"] = wifi_password
    try:
        config.validate(cfg)
    except config.ConfigError as e:
        raise ProvisionError("%s: fix it with --set, nothing was written" % e)
    return cfg


def _replace_entry(path, user, text, start):
    """Replace `user`'s entry in a passwd or acl file (or add it); keeps everything else."""
    old = open(path).read() if os.path.exists(path) else ""
    if start == "acl":  # every block `text` brings replaces the old one of its user
        ours = set([ln for ln in text.splitlines() if ln.startswith("user ")] + ["user " + user])
        blocks = [b for b in old.split("\n\n") if b.strip() and b.strip().splitlines()[0] not in ours]
        new = "".join(b.strip("\n") + "\n\n" for b in blocks) + text
    else:
        lines = [l for l in old.splitlines() if l and not l.startswith(user + ":")]
        new = "".join(l + "\n" for l in lines) + text
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        f.write(new)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def broker_entries(site_dir, site, tid, hashed):
    """Add or replace the terminal's login (`hashed`: its passwd line) and ACL in the site's broker files."""
    _replace_entry(os.path.join(site_dir, "passwd"), tid, hashed, "passwd")
    acl = os.path.join(site_dir, "acl")
    if not os.path.exists(acl):
        _replace_entry(acl, broker_users.BACKEND_USER, broker_users.backend_acl(), "acl")
    _replace_entry(acl, tid, broker_users.terminal_acl(site, tid), "acl")


def write_config(port, cfg):
    """Copy the config to /config.json.new as a file (it holds the broker and Wi-Fi passwords:
    never on mpremote's command line, which any user can read), then rename it over
    /config.json on the device and check its hash there."""
    text = json.dumps(cfg, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix="cpos-config-", suffix=".json")  # mode 0600: it holds the terminal's keys
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        device.mpremote(port, "fs", "cp", tmp, ":/config.json.new")
    finally:
        os.remove(tmp)
    got = device.run(port, _SWITCH, "CPOS-CONFIG")
    if got != hashlib.sha256(text.encode()).hexdigest():
        raise ProvisionError("config.json on %s did not read back whole: run cpos provision again" % port)


_READ = """
try:
    with open("/config.json") as f:
        text = f.read()
except OSError:
    text = None
import json
print("CPOS-OLDCONFIG " + json.dumps(text))
"""

# What provisioning derives itself; everything else in a terminal's earlier config.json
# (Wi-Fi, POS link, timings, ...) is kept when it is provisioned again, unless --fresh.
OWNED = ("terminal_id", "terminal_no", "site", "place", "kind", "board", "site_key", "keys")


def read_config(port):
    """The terminal's current config.json as a dict, None if it has none; ProvisionError if
    it is there but unreadable (the technician decides: --fresh replaces it)."""
    text = device.run(port, _READ, "CPOS-OLDCONFIG")
    if text is None:
        return None
    try:
        cfg = json.loads(text)
    except ValueError:
        cfg = None
    if not isinstance(cfg, dict):
        raise ProvisionError("the config.json on %s is not a JSON object, so its settings (Wi-Fi, POS link) "
                             "cannot be kept: give --fresh to replace it, nothing was written" % port)
    return cfg


def kept_settings(old, cfg):
    """Top-level settings of an earlier config that the new one keeps as they were (sorted
    names; provisioning's own sections and what --set changed are not listed)."""
    return sorted(k for k in (old or {}) if k not in OWNED + ("mqtt", "pn532", "storage") and cfg.get(k) == old[k])


def _merge(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def hashed_login(site_dir, tid, password):
    """The passwd line for this login, hashed by mosquitto_passwd (nothing kept on disk)."""
    try:
        tool = broker_users.find_tool("mosquitto_passwd")
    except RuntimeError as e:
        raise ProvisionError(str(e))
    fd, tmp = tempfile.mkstemp(dir=site_dir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write("%s:%s\n" % (tid, password))
        p = subprocess.run([tool, "-U", tmp], capture_output=True, text=True)
        if p.returncode:
            raise ProvisionError("mosquitto_passwd could not hash the login: %s" % (p.stderr.strip() or p.returncode))
        with open(tmp) as f:
            return f.read()
    finally:
        os.remove(tmp)


def site_cards(ledger_path):
    """How many cards the site's ledger holds (every one goes into each terminal's table)."""
    from backend.ledger import Ledger

    ledger = Ledger(ledger_path)
    try:
        return ledger.db.execute("SELECT COUNT(*) FROM cards").fetchone()[0]
    finally:
        ledger.close()


def check_card_room(ledger_path, flash_mb, cards=None):
    """ProvisionError unless the site's cards (or `cards`, planned) fit the card table of
    a `flash_mb` MB module (host_tools/partitions.py); the number of cards it holds."""
    n = site_cards(ledger_path) if cards is None else cards
    try:
        return partitions.check_cards(n, flash_mb)
    except ValueError as e:
        raise ProvisionError("%s; nothing was written" % e)


def provision(port, number, site, place, kind, board, broker_host, site_dir, ledger_path, sets=(), say=print,
              fresh=False, plain=False, rotate=False, wifi_password_file=None, flash_mb=4, cards=None):
    """Check everything (site folder and key, ledger, the site's card count against the
    module's card table, board, the device, the merged config), then write: the device's config.json, the broker login and ACL, the ledger
    entry and the terminal's key generation. A site must exist (`cpos site init`).

    Every provisioning gives the terminal a new login (client certificate, or password
    with `plain`: a terminal on the broker's own machine) and the next generation of its
    keys; the keys it held stay accepted for its uplink until the new ones are used, so
    purchases pending in its journal are neither lost nor booked twice (docs/technician.md
    "Rotating"). `rotate`: the terminal must have been provisioned before, and its old
    client certificate is revoked (the site's CRL; restart the broker to apply it)."""
    from backend import site_keys as sk
    from backend.ledger import Ledger

    try:
        master_hex = sites.check_site(site_dir, ledger_path)
        sites.check_ledger(ledger_path, site_dir)
    except sites.SiteError as e:
        raise ProvisionError("%s; nothing was written" % e)
    check_card_room(ledger_path, flash_mb, cards)
    master = bytes.fromhex(master_hex)
    tid = protocol.terminal_id(number)
    tls_site = sites.has_tls(site_dir)
    if not plain and not tls_site:
        raise ProvisionError("site folder %s has no CA (made before TLS): give --plain for a terminal on the "
                             "broker's own machine, or make a new site; nothing was written" % site_dir)
    wifi_password = _wifi_password(wifi_password_file)
    board_link(board)
    for s in sets:  # a mistyped --set or board is found before the device is touched
        _set({}, s)
    row, known = _key_entry(ledger_path, number)  # read-only: nothing is written before the device answers
    if rotate and not known:
        raise ProvisionError("--rotate: %s was never provisioned at this site; provision it without --rotate; "
                             "nothing was written" % tid)
    generation = (row[1] + 1) if row is not None else 1
    device.require_terminal(port)
    old = None if fresh else read_config(port)
    password = broker_users.new_password() if plain else None
    tls = None
    if not plain:
        from host_tools import site_pki

        cert, key = site_pki.make_client(site_dir, site, tid)
        tls = {"ca": site_pki.der(site_pki.ca_pem(site_dir)).hex(), "cert": site_pki.der(cert).hex(),
               "key": site_pki.der_key(key).hex(), "server_name": broker_host}
    keys = sk.terminal_keys(master, tid, generation)
    cfg = build_config(number, site, place, kind, board, broker_host, password, keys, sets, old, tls=tls,
                       wifi_password=wifi_password)
    hashed = hashed_login(site_dir, tid, password) if plain else None
    write_config(port, cfg)
    # The device holds its new login and keys: now the site learns them.
    if plain:
        broker_entries(site_dir, site, tid, hashed)
    else:
        acl = os.path.join(site_dir, "acl")
        if not os.path.exists(acl):
            _replace_entry(acl, broker_users.BACKEND_USER, broker_users.backend_acl(), "acl")
        _replace_entry(acl, tid, broker_users.terminal_acl(site, tid), "acl")
        _remove_entry(os.path.join(site_dir, "passwd"), tid)  # no password login beside the certificate
        revoked = sites.record_client_cert(site_dir, tid, cert)
        if revoked:
            say("revoked %s's previous certificate (serial %x): restart the broker to apply the CRL" % (tid, revoked))
    led = Ledger(ledger_path)
    try:
        led.add_terminal(number, site, config.PLACES[place], config.KINDS[kind])
        sk.ensure_schema(led.db)
        with led._tx():
            got = sk.rotate(led.db, number, master)
        assert got == generation
    finally:
        led.close()
    say("provisioned %s (site %s, %s %s) on %s; %s; keys generation %d; registered in %s"
        % (tid, site, place, kind, port, "broker password login (loopback) in %s" % site_dir if plain
           else "client certificate for %s (TLS, port %d)" % (broker_host, TLS_PORT), generation, ledger_path))
    kept = kept_settings(old, cfg)
    if kept:
        say("kept from the terminal's earlier config: %s (--fresh drops them)" % ", ".join(kept))
    return cfg


def _key_entry(ledger_path, number):
    """(the terminal's terminal_keys row or None, whether the ledger knows the terminal), read-only."""
    import sqlite3
    import urllib.parse

    db = sqlite3.connect("file:%s?mode=ro&immutable=1" % urllib.parse.quote(os.path.abspath(ledger_path)), uri=True)
    try:
        known = db.execute("SELECT 1 FROM terminals WHERE number = ?", (number,)).fetchone() is not None
        try:
            row = db.execute("SELECT cur_master, cur_gen, old_master, old_gen FROM terminal_keys WHERE terminal = ?",
                             (number,)).fetchone()
        except sqlite3.OperationalError:  # a ledger from before per-terminal keys
            row = None
    finally:
        db.close()
    return row, known


def _wifi_password(path):
    """The Wi-Fi password from a file or $CPOS_WIFI_PASSWORD (never a command line), or None."""
    if path:
        try:
            with open(path) as f:
                return f.read().strip("\r\n")
        except OSError as e:
            raise ProvisionError("cannot read the Wi-Fi password file %s (%s); nothing was written" % (path, e.strerror))
    return os.environ.get(WIFI_PASSWORD_ENV) or None


def _remove_entry(path, user):
    if not os.path.exists(path):
        return
    lines = [l for l in open(path).read().splitlines() if l and not l.startswith(user + ":")]
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        f.write("".join(l + "\n" for l in lines))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
