"""Where the backend's secrets come from: files and the environment, never the command line.

Owns reading the backend's broker password (`--password-file FILE`, or the environment
variable CPOS_BROKER_PASSWORD) and each site's master secret (`--site-key-file SITE=FILE`:
the site folder's `site_key`, and `FILE.previous` while a master rotation is under way).
A command line is readable by every user of the machine (`ps`); a file is checked to be
readable by its owner only (mode 0600), so a secret left world-readable is refused, not
used. Every failure is one line naming the file and the fix.
"""
import os
import stat

ENV_PASSWORD = "CPOS_BROKER_PASSWORD"


class SecretError(ValueError):
    pass


def read_secret(path, what):
    """The stripped text of a secret file; SecretError if missing or readable by others."""
    try:
        st = os.stat(path)
    except OSError:
        raise SecretError("%s file %s does not exist" % (what, path))
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError("%s file %s is readable by other users (mode %03o): chmod 600 %s"
                          % (what, path, st.st_mode & 0o777, path))
    with open(path) as f:
        text = f.read().strip()
    if not text:
        raise SecretError("%s file %s is empty" % (what, path))
    return text


def broker_password(path):
    if path:
        return read_secret(path, "password")
    pw = os.environ.get(ENV_PASSWORD)
    if not pw:
        raise SecretError("no broker password: give --password-file FILE (mode 0600) or set $%s" % ENV_PASSWORD)
    return pw


def _master(path):
    text = read_secret(path, "site key")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SecretError("site key file %s does not hold 64 hex digits" % path)
    return key


def site_masters(specs):
    """{site: [current master, previous master?]} from `SITE=FILE` specs."""
    out = {}
    for spec in specs:
        site, sep, path = spec.partition("=")
        if not sep or not site or not path:
            raise SecretError("--site-key-file %s: write SITE=FILE, e.g. skole-nord=/srv/cpos/site/site_key" % spec)
        keys = [_master(path)]
        if os.path.exists(path + ".previous"):
            keys.append(_master(path + ".previous"))
        out[site] = keys
    return out
