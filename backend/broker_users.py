"""The site broker's identities: one mosquitto user and ACL block per terminal, one for the backend.

Owns what a site's mosquitto must be told so that one terminal's credentials reach only
its own topics (invariant 9): a terminal may publish only under
`cpos/v1/<site>/<its id>/up/...` and read only its own `.../down/...`; the backend user
reads every uplink and writes every downlink. Passwords are hashed with
`mosquitto_passwd -U` (Debian package `mosquitto`). `cpos provision` writes these
entries for a real site; the simulator's broker (simulator/broker.py) writes the same
ones for a test site.
"""
import os
import secrets
import shutil

BACKEND_USER = "backend"
# The backend's second connection (sync requests, health, status: backend.service), the same
# password: the broker binds each client id to its login, so a second session needs a second login.
BACKEND_CONTROL_USER = BACKEND_USER + "-ctl"


def control_user(user):
    """The login of the backend's second connection for backend login `user`."""
    return user + "-ctl"


def find_tool(name):
    """A mosquitto program: Debian's sbin/bin folders first, then PATH."""
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    p = shutil.which(name)
    if p:
        return p
    raise RuntimeError("%s not found: run `make test` (scripts/ensure-mosquitto.sh installs it)" % name)


def new_password():
    """A fresh random password (each broker run gets its own credentials). Never starts with
    '-': passed as `--password PW` on a command line, argparse would take it for an option."""
    while True:
        pw = secrets.token_urlsafe(18)
        if pw[0] != "-":
            return pw


def backend_acl(user=BACKEND_USER):
    """The backend's ACL blocks: its login reads every uplink and writes every downlink; its
    control login (the second connection) only reads the uplink."""
    return ("user %s\ntopic read cpos/v1/+/+/up/#\ntopic write cpos/v1/+/+/down/#\n\n" % user +
            "user %s\ntopic read cpos/v1/+/+/up/#\n\n" % control_user(user))


def terminal_acl(site, tid):
    """One terminal's ACL block: publish only its own uplink, read only its own downlink."""
    return "user %s\ntopic write cpos/v1/%s/%s/up/#\ntopic read cpos/v1/%s/%s/down/#\n\n" % (tid, site, tid, site, tid)
