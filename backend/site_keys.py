"""The backend's keys: each site's master secret and every terminal's keys derived from it.

Owns which key signs a terminal's downlink and which keys its uplink batches may be signed
with (docs/security.md "Per-terminal keys"). A site has a master secret (the site
folder's `site_key`; during a master rotation also `site_key.previous`), known by its id
(the first 16 hex digits of its SHA-256). A terminal holds only
`derive(master, "down"/"up", tid, generation)` (cpos.net.signing.derive).

The ledger table `terminal_keys` says, per terminal, which master and generation its
config.json holds now (`cur_*`) and which it held before its last rotation (`old_*`).
The downlink is signed with the current keys. An uplink batch is accepted under the
current keys, or under the old ones until the first batch under the current ones
arrives (a terminal whose new config.json is not on it yet keeps uploading; nothing is
lost in a rotation, and the old keys die as soon as the new ones are used). A terminal
without a row (provisioned before per-terminal keys) uses the current master, generation 0.
"""
import hashlib

from cpos.net import signing

SCHEMA = """
CREATE TABLE IF NOT EXISTS terminal_keys (      -- which derived keys each terminal holds
    terminal INTEGER PRIMARY KEY,
    cur_master TEXT NOT NULL, cur_gen INTEGER NOT NULL,
    old_master TEXT, old_gen INTEGER               -- accepted for uplink until cur_* is used once
);
"""


def master_id(master):
    return hashlib.sha256(master).hexdigest()[:16]


def ensure_schema(db):
    """Create the table (outside any transaction: executescript commits first)."""
    db.executescript(SCHEMA)


def entry(db, number):
    """(cur_master, cur_gen, old_master, old_gen) of a terminal, or None (table made by ensure_schema)."""
    return db.execute("SELECT cur_master, cur_gen, old_master, old_gen FROM terminal_keys WHERE terminal = ?",
                      (number,)).fetchone()


def rotate(db, number, master):
    """Give terminal `number` the next generation of keys under `master` (bytes); the keys
    it held stay accepted for uplink until the new ones are used. Returns the new
    generation. The caller has run ensure_schema and commits."""
    mid = master_id(master)
    row = entry(db, number)
    if row is None:
        gen = 1
        db.execute("INSERT INTO terminal_keys VALUES (?, ?, ?, NULL, NULL)", (number, mid, gen))
    else:
        gen = row[1] + 1
        db.execute("UPDATE terminal_keys SET cur_master = ?, cur_gen = ?, old_master = ?, old_gen = ? "
                   "WHERE terminal = ?", (mid, gen, row[0], row[1], number))
    return gen


def terminal_keys(master, tid, generation):
    """(down, up) key bytes of one terminal: what its config.json's `keys` holds."""
    return (signing.derive(master, signing.DOWN, tid, generation),
            signing.derive(master, signing.UP, tid, generation))


class SiteKeys:
    """`masters`: {site: [master bytes, ...]} (current first, then a previous one during a
    master rotation). Reads `terminal_keys` from `db` (the ledger's connection) each time,
    so a terminal provisioned or rotated by another process counts at once."""

    def __init__(self, masters, db):
        self.db = db
        self.masters = {}
        for site, ms in masters.items():
            ms = [ms] if isinstance(ms, (bytes, bytearray)) else list(ms)
            self.masters[site] = dict((master_id(m), bytes(m)) for m in ms)
            self.masters[site]["current"] = bytes(ms[0])
        ensure_schema(db)
        self._cache = {}

    def __contains__(self, site):
        return site in self.masters

    def _key(self, site, mid, purpose, tid, gen):
        k = (site, mid, purpose, tid, gen)
        key = self._cache.get(k)
        if key is None:
            m = self.masters[site].get(mid)
            if m is None:
                return None  # a master this backend was not given (rotated away)
            key = self._cache[k] = signing.Key(signing.derive(m, purpose, tid, gen))
        return key

    def _entry(self, site, tid):
        from cpos.net import messages

        row = entry(self.db, messages.terminal_number(tid))
        if row is None:
            return ("current", 0, None, None)
        return row

    def down(self, site, tid):
        """The Key that signs `tid`'s downlink (its current keys)."""
        cur_m, cur_g, _, _ = self._entry(site, tid)
        key = self._key(site, cur_m, signing.DOWN, tid, cur_g)
        if key is None:
            raise KeyError("%s holds keys of a master this backend does not have" % tid)
        return key

    def check_uplink(self, site, tid, topic, payload):
        """The batch without its tag if it carries `tid`'s valid uplink tag; else
        signing.DownlinkError saying why. Retires the old keys once the current ones are used."""
        cur_m, cur_g, old_m, old_g = self._entry(site, tid)
        key = self._key(site, cur_m, signing.UP, tid, cur_g)
        err = None
        if key is not None:
            try:
                out = signing.open_json(key, topic, payload)
            except signing.DownlinkError as e:
                err = e
            else:
                if old_m is not None:
                    from cpos.net import messages

                    self.db.execute("UPDATE terminal_keys SET old_master = NULL, old_gen = NULL WHERE terminal = ?",
                                    (messages.terminal_number(tid),))
                    self.db.commit()
                return out
        if old_m is not None:
            key = self._key(site, old_m, signing.UP, tid, old_g)
            if key is not None:
                return signing.open_json(key, topic, payload)
        raise err or signing.DownlinkError("no key")


def rotate_master(site_dir, db):
    """Start or finish a rotation of the site's master secret (`python -m backend
    rotate-master`). Start: the current `site_key` becomes `site_key.previous` and a new
    one is made (mode 0600); terminals keep the keys they hold (derived from the previous
    master, which the restarted backend still has) until each is re-provisioned with
    `cpos provision --rotate`. Finish (`site_key.previous` exists): refused while a
    terminal still holds keys of the previous master; else the previous master is deleted.
    Returns a line for the operator."""
    import os
    import secrets

    key = os.path.join(site_dir, "site_key")
    prev = key + ".previous"
    ensure_schema(db)
    if os.path.exists(prev):
        with open(prev) as f:
            old = master_id(bytes.fromhex(f.read().strip()))
        left = [r[0] for r in db.execute("SELECT terminal FROM terminal_keys WHERE cur_master = ? OR old_master = ? "
                                         "ORDER BY terminal", (old, old))]
        if left:
            raise ValueError("the previous master is still held by %s: run cpos provision --rotate for them first"
                             % ", ".join("t%04d" % n for n in left))
        os.remove(prev)
        return "master rotation finished: the previous master is deleted; restart the backend"
    os.replace(key, prev)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return ("new master made, the old one kept as site_key.previous: restart the backend, re-provision every "
            "terminal with cpos provision --rotate, then run rotate-master again to finish")
