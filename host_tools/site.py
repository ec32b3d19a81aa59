"""A site's folder and ledger: made once by `cpos site init`, checked by every command that uses them.

Owns the rule that a site is created only on purpose. The site folder holds what the
site's broker and backend read: `site_key` (32 random bytes in hex, the site's master
secret: every terminal's own keys are derived from it, backend/site_keys.py; made here,
replaced only by a master rotation), `passwd` (mosquitto's password file: the backend's
loopback login), `acl` (the backend's block here; each terminal's block is added by
`cpos provision`), the site's CA and the broker's TLS certificate (host_tools/site_pki.py),
the revocation list `crl.pem`, `certs/` (each terminal's current client certificate,
public) and `mosquitto.conf` (backend/broker_conf.py, docs/broker.md). Every secret
file is created mode 0600. The ledger is the reference backend's SQLite file
(backend/ledger.py). `cpos provision` and `cpos rescue` refuse a folder or a ledger
that does not exist or is not one, naming `cpos site init`: a mistyped path must not
quietly start a second site with its own key and broker logins, nor send rescued
purchases to a ledger nobody reads.
"""
import os
import secrets
import sqlite3
import urllib.parse

from backend import broker_users

KEY_FILE = "site_key"
# tables every ledger has (backend/ledger.py SCHEMA); a file without them is no ledger
_LEDGER_TABLES = ("terminals", "uplink", "accounts")


class SiteError(Exception):
    """A site folder or ledger is missing or is not one; the message is one line."""


def _init_hint(site_dir=None, ledger=None):
    return "create the site with `cpos site init --site-dir %s --ledger %s`" % (site_dir or "DIR", ledger or "FILE")


def check_site(site_dir, ledger=None):
    """The site's key (hex), or SiteError if `site_dir` is not a site folder made by `cpos site init`."""
    if not os.path.isdir(site_dir):
        what = "is a file, not a folder" if os.path.exists(site_dir) else "does not exist"
        raise SiteError("site folder %s %s: check --site-dir, or %s" % (site_dir, what, _init_hint(site_dir, ledger)))
    path = os.path.join(site_dir, KEY_FILE)
    try:
        with open(path) as f:
            key = f.read().strip()
    except OSError as e:
        if not os.path.exists(path):
            raise SiteError("%s is not a site folder (no %s): check --site-dir, or %s"
                            % (site_dir, KEY_FILE, _init_hint(site_dir, ledger)))
        raise SiteError("cannot read %s (%s)" % (path, e.strerror))
    try:
        if len(bytes.fromhex(key)) != 32:
            raise ValueError
    except ValueError:
        raise SiteError("%s is not 64 hex digits: it is not a site key made by cpos site init; "
                        "fix or restore it (never replace a live site's key)" % path)
    if not os.access(site_dir, os.W_OK):
        raise SiteError("site folder %s is not writable: provisioning adds the terminal's broker login there" % site_dir)
    return key


def check_ledger(path, site_dir=None):
    """Nothing, or SiteError if `path` is not an existing CPOS ledger. Opens it read-only."""
    if os.path.isdir(path):
        raise SiteError("ledger %s is a folder: give the ledger's SQLite file (--ledger)" % path)
    if not os.path.exists(path):
        raise SiteError("no ledger %s: check --ledger, or %s" % (path, _init_hint(site_dir, path)))
    try:
        # immutable: a read of the schema that leaves no -shm/-wal files behind (the schema is old news)
        db = sqlite3.connect("file:%s?mode=ro&immutable=1" % urllib.parse.quote(os.path.abspath(path)), uri=True)
        try:
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    except sqlite3.Error as e:
        raise SiteError("%s is not a ledger (%s): check --ledger" % (path, e))
    missing = [t for t in _LEDGER_TABLES if t not in names]
    if missing:
        raise SiteError("%s is an SQLite file but not a CPOS ledger (no %s table): check --ledger"
                        % (path, missing[0]))


def has_tls(site_dir):
    from host_tools import site_pki

    return os.path.exists(os.path.join(site_dir, site_pki.CA_KEY))


def record_client_cert(site_dir, tid, cert_pem):
    """Keep `tid`'s new client certificate in certs/ and revoke the one it replaces (the
    site's CRL). Returns the revoked serial, or None."""
    from host_tools import site_pki

    d = os.path.join(site_dir, "certs")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, tid + ".crt")
    revoked = None
    if os.path.exists(path):
        with open(path, "rb") as f:
            revoked, _ = site_pki.serial_and_cn(f.read())
        with open(os.path.join(site_dir, "revoked"), "a") as f:
            f.write("%x %s\n" % (revoked, tid))
    with open(path + ".new", "wb") as f:
        f.write(cert_pem)
    os.replace(path + ".new", path)
    serials = []
    rpath = os.path.join(site_dir, "revoked")
    if os.path.exists(rpath):
        serials = [int(line.split()[0], 16) for line in open(rpath) if line.strip()]
    site_pki.write_crl(site_dir, serials)
    return revoked


def init(site_dir, ledger_path, say=print, site=None, broker_names=None, port=1883, tls_port=8883):
    """Create a site: its folder with a fresh key, broker files and the ledger. Refuses to
    touch an existing site's key or a file that is not a ledger; checks everything first."""
    key_path = os.path.join(site_dir, KEY_FILE)
    if os.path.exists(key_path):
        raise SiteError("%s already holds a site (%s exists): nothing changed; a site's key is made once"
                        % (site_dir, KEY_FILE))
    if os.path.exists(site_dir) and not os.path.isdir(site_dir):
        raise SiteError("%s is a file, not a folder: choose another --site-dir" % site_dir)
    ledger_exists = os.path.exists(ledger_path)
    if ledger_exists:
        check_ledger(ledger_path, site_dir)
    parent = _existing(os.path.dirname(os.path.abspath(site_dir)))
    if not os.path.isdir(site_dir) and not (os.path.isdir(parent) and os.access(parent, os.W_OK)):
        raise SiteError("cannot create %s: %s is not a writable folder" % (site_dir, parent))
    if not ledger_exists:
        ldir = os.path.dirname(os.path.abspath(ledger_path))
        if not os.path.isdir(ldir) and os.path.abspath(ldir) != os.path.abspath(site_dir):
            raise SiteError("cannot create the ledger %s: the folder %s does not exist" % (ledger_path, ldir))
        if os.path.isdir(ldir) and not os.access(ldir, os.W_OK):
            raise SiteError("cannot create the ledger %s: %s is not writable" % (ledger_path, ldir))
    os.makedirs(site_dir, exist_ok=True)
    if not os.access(site_dir, os.W_OK):
        raise SiteError("site folder %s is not writable" % site_dir)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    acl = os.path.join(site_dir, "acl")
    if not os.path.exists(acl):
        _write_new(acl, broker_users.backend_acl())
    passwd = os.path.join(site_dir, "passwd")
    if not os.path.exists(passwd):
        _write_new(passwd, "")
    _make_tls_and_broker(site_dir, site or os.path.basename(os.path.abspath(site_dir)), broker_names, port, tls_port)
    if not ledger_exists:
        from backend.ledger import Ledger

        Ledger(ledger_path).close()
    say("site created in %s (site_key, site CA and broker certificate, mosquitto.conf, broker passwd and acl)%s %s; "
        "now provision terminals with cpos provision --site-dir %s --ledger %s"
        % (site_dir, "; kept the ledger" if ledger_exists else "; new ledger", ledger_path, site_dir, ledger_path))


def default_broker_names():
    import socket

    names = [socket.getfqdn(), "localhost", "127.0.0.1"]
    return [n for i, n in enumerate(names) if n and n not in names[:i]]


def _make_tls_and_broker(site_dir, site, names, port, tls_port):
    """The CA, the broker's certificate, an empty CRL, the backend's broker login (its
    password in `backend.password`, mode 0600) and mosquitto.conf."""
    from backend import broker_conf
    from host_tools import site_pki

    names = list(names or default_broker_names())
    d = os.path.abspath(site_dir)
    site_pki.make_ca(d, site)
    site_pki.make_broker(d, site, names)
    site_pki.write_crl(d, [])
    pw = broker_users.new_password()
    site_pki.write_secret(os.path.join(d, "backend.password"), pw + "\n")
    from host_tools.provision import hashed_login, _replace_entry

    for user in (broker_users.BACKEND_USER, broker_users.BACKEND_CONTROL_USER):  # its two connections
        _replace_entry(os.path.join(d, "passwd"), user, hashed_login(d, user, pw), "passwd")
    text = broker_conf.conf(port, os.path.join(d, "mosquitto.log"), os.path.join(d, "passwd"), os.path.join(d, "acl"),
                            tls_port=tls_port, cafile=os.path.join(d, site_pki.CA_CERT),
                            certfile=os.path.join(d, site_pki.BROKER_CERT), keyfile=os.path.join(d, site_pki.BROKER_KEY),
                            crlfile=os.path.join(d, site_pki.CRL), persistence_dir=os.path.join(d, "broker-data"))
    os.makedirs(os.path.join(d, "broker-data"), mode=0o700, exist_ok=True)
    with open(os.path.join(d, "mosquitto.conf"), "w") as f:
        f.write(text)


def _existing(path):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return path or "."


def _write_new(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
