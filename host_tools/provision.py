"""Provision a terminal: its identity, config.json, broker login and backend entry.

Owns what makes a board terminal `t%04d` of a site. The site folder (`--site-dir`)
holds what the site's broker and backend read: `site_key` (32 random bytes, hex, made
once per site: the HMAC key of downlink messages), `passwd` (mosquitto password file,
hashed with `mosquitto_passwd -U`) and `acl` (each terminal publishes only its own
uplink and reads only its own downlink: simulator/broker.py). The config is built
from the board's needs plus `--set` overrides, validated by the firmware's own
cpos.config.validate before anything is written, and written to the device as
/config.json.new renamed over /config.json (a cut leaves the old one).
"""
import ast
import json
import os
import re
import secrets
import subprocess
import tempfile

from cpos import config
from cpos.net import messages as protocol
from host_tools import device
from host_tools.bundle import source_dirs
from backend import broker_users

MQTT_DEFAULTS = {"port": 1883}

_WRITE = """
import os, json
with open("/config.json.new", "w") as f:
    f.write(%r)
try:
    os.rename("/config.json.new", "/config.json")
except OSError:
    try:
        os.remove("/config.json")
    except OSError:
        pass
    os.rename("/config.json.new", "/config.json")
with open("/config.json") as f:
    print("CPOS-CONFIG " + json.dumps(len(f.read())))
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


def site_key(site_dir):
    """The site's downlink key (hex) if the site has one yet, else None."""
    path = os.path.join(site_dir, "site_key")
    return open(path).read().strip() if os.path.exists(path) else None


def _save_site_key(site_dir, key):
    fd = os.open(os.path.join(site_dir, "site_key"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")


def _set(cfg, assignment):
    key, sep, value = assignment.partition("=")
    if not sep:
        raise ProvisionError("--set %s: write KEY=VALUE, e.g. --set mqtt.keepalive=30" % assignment)
    try:
        value = json.loads(value)
    except ValueError:
        pass  # plain text
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def build_config(number, site, place, kind, board, broker_host, password, key, sets=()):
    """The config dict for this terminal, validated; ProvisionError (one line) if invalid."""
    tid = protocol.terminal_id(number)
    cfg = {"terminal_id": tid, "terminal_no": number, "site": site, "place": place, "kind": kind,
           "board": board, "pn532": {"link": board_link(board)},
           "storage": {"journal": {"partition": "journal"}, "cardtable": {"partition": "cardtable"}},
           "mqtt": dict(MQTT_DEFAULTS, host=broker_host, user=tid, password=password),
           "site_key": key}
    for s in sets:
        _set(cfg, s)
    try:
        config.validate(cfg)
    except config.ConfigError as e:
        if not str(e).startswith("config site_key: is not a known setting"):
            raise ProvisionError("%s: fix it with --set, nothing was written" % e)
        del cfg["site_key"]  # this firmware does not take the key yet; it stays in the site folder
        try:
            config.validate(cfg)
        except config.ConfigError as e:
            raise ProvisionError("%s: fix it with --set, nothing was written" % e)
    return cfg


def _replace_entry(path, user, text, start):
    """Replace `user`'s entry in a passwd or acl file (or add it); keeps everything else."""
    old = open(path).read() if os.path.exists(path) else ""
    if start == "acl":
        blocks = [b for b in old.split("\n\n") if b.strip() and b.strip().splitlines()[0] != "user " + user]
        new = "".join(b.strip("\n") + "\n\n" for b in blocks) + text
    else:
        lines = [l for l in old.splitlines() if l and not l.startswith(user + ":")]
        new = "".join(l + "\n" for l in lines) + text
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        f.write(new)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def broker_entries(site_dir, site, tid, password):
    """Add or replace the terminal's login (hashed) and ACL in the site's broker files."""
    fd, tmp = tempfile.mkstemp(dir=site_dir)
    with os.fdopen(fd, "w") as f:
        f.write("%s:%s\n" % (tid, password))
    try:
        subprocess.run([broker_users.find_tool("mosquitto_passwd"), "-U", tmp], check=True, capture_output=True)
        hashed = open(tmp).read()
    finally:
        os.remove(tmp)
    _replace_entry(os.path.join(site_dir, "passwd"), tid, hashed, "passwd")
    acl = os.path.join(site_dir, "acl")
    if not os.path.exists(acl):
        _replace_entry(acl, broker_users.BACKEND_USER, broker_users.backend_acl(), "acl")
    _replace_entry(acl, tid, broker_users.terminal_acl(site, tid), "acl")


def write_config(port, cfg):
    text = json.dumps(cfg, indent=1, sort_keys=True)
    got = device.run(port, _WRITE % (text,), "CPOS-CONFIG")
    if got != len(text):
        raise ProvisionError("config.json on %s did not read back whole: run cpos provision again" % port)


def provision(port, number, site, place, kind, board, broker_host, site_dir, ledger_path, sets=(), say=print):
    password = broker_users.new_password()
    key = site_key(site_dir)
    new_key = key is None
    if new_key:
        key = secrets.token_hex(32)  # the site's first terminal: its key is made now, kept once written
    cfg = build_config(number, site, place, kind, board, broker_host, password, key, sets)
    device.require_terminal(port)
    write_config(port, cfg)
    os.makedirs(site_dir, exist_ok=True)
    if new_key:
        _save_site_key(site_dir, key)
    tid = cfg["terminal_id"]
    broker_entries(site_dir, site, tid, password)
    from backend.ledger import Ledger

    ledger = Ledger(ledger_path)
    try:
        ledger.add_terminal(number, site, config.PLACES[place], config.KINDS[kind])
    finally:
        ledger.close()
    say("provisioned %s (site %s, %s %s) on %s; broker login and ACL in %s; registered in %s"
        % (tid, site, place, kind, port, site_dir, ledger_path))
    return cfg
