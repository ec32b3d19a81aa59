"""Deploy a bundle to a terminal: copy, verify every hash on the device, then switch.

Owns the on-device layout of versions. A bundle (host_tools/bundle.py) is copied to
/bundles/<version>/ next to the running one; the device then hashes every file itself
and only if all match does the small file /active change, written to /active.new and
renamed over (one atomic step on the ESP32's littlefs). firmware/boot.py reads /active
at the next reset. So a deploy that fails or is cut at any point leaves /active, and
the version it names, as they were. Old versions beyond the previous one are removed
after a switch (the previous one stays for a quick switch back).
"""
import hashlib
import json
import os
import re

from host_tools import bundle, device

BASE = "/bundles"

_MKDIRS = """
import os
for d in %r:
    try:
        os.mkdir(d)
    except OSError:
        pass
print("CPOS-MKDIR 1")
"""

_VERIFY = """
import hashlib, binascii, json
bad = []
for p, h in %r.items():
    d = hashlib.sha256()
    try:
        with open(p, "rb") as f:
            while True:
                b = f.read(1024)
                if not b:
                    break
                d.update(b)
    except OSError:
        bad.append(p)
        continue
    if binascii.hexlify(d.digest()).decode() != h:
        bad.append(p)
print("CPOS-VERIFY " + json.dumps(bad))
"""

_SWITCH = """
import os
def _put(new, path):
    try:
        os.rename(new, path)
    except OSError:  # a filesystem whose rename does not replace (FAT)
        os.remove(path)
        os.rename(new, path)
_put("/boot.py.new", "/boot.py")
with open("/active.new", "w") as f:
    f.write(%r)
_put("/active.new", "/active")
def _rm(p):
    try:
        for e in os.ilistdir(p):
            _rm(p + "/" + e[0])
        os.rmdir(p)
    except OSError:
        os.remove(p)
for e in os.ilistdir(%r):
    if e[0] not in %r:
        _rm(%r + "/" + e[0])
import json
with open("/active") as f:
    print("CPOS-SWITCH " + json.dumps(f.read()))
"""


class DeployError(Exception):
    pass


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def verify_on_device(port, wanted):
    """Device paths whose content on the device does not hash to `wanted[path]`."""
    return device.run(port, _VERIFY % (wanted,), "CPOS-VERIFY")


def deploy(port, bundle_dir, say=print):
    manifest = bundle.verify(bundle_dir)
    version = manifest["version"]
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,47}$", version):
        raise DeployError("bundle version %r cannot name a folder: rebuild with `cpos build --version`" % version)
    info = device.require_terminal(port)
    old = info["active"]
    target = BASE + "/" + version
    files = dict((target + "/" + p, h) for p, h in manifest["files"].items())
    files[target + "/manifest.json"] = _sha(os.path.join(bundle_dir, "manifest.json"))
    if old == version:
        bad = verify_on_device(port, files)
        if bad:
            raise DeployError("%s is running but damaged on the device (%s): build it as a new version "
                              "(cpos build --version ...) and deploy that" % (version, bad[0]))
        say("%s is already the active version on %s (every file checked)" % (version, port))
        return version
    dirs = sorted({BASE, target} | {target + "/" + os.path.dirname(p) for p in manifest["files"] if "/" in p})
    device.run(port, _MKDIRS % (dirs,), "CPOS-MKDIR")
    boot_src = os.path.join(bundle_dir, "boot.py")  # the version switch itself: installed at / too
    args = []
    for dpath in sorted(files):
        local = os.path.join(bundle_dir, dpath[len(target) + 1:])
        args += ["fs", "cp", local, ":" + dpath, "+"]
    args += ["fs", "cp", boot_src, ":/boot.py.new"]
    say("copying %d files to %s:%s ..." % (len(files), port, target))
    try:
        device.mpremote(port, *args)
    except device.DeviceError as e:
        raise DeployError("deploy interrupted while copying (%s); the terminal still runs %s: run cpos deploy again"
                          % (e, old or "its previous files"))
    files["/boot.py.new"] = _sha(boot_src)
    bad = verify_on_device(port, files)
    if bad:
        raise DeployError("%d file(s) arrived damaged on the device (first: %s); the terminal still runs %s: "
                          "run cpos deploy again" % (len(bad), bad[0], old or "its previous files"))
    keep = [version] + ([old] if old else [])
    got = device.run(port, _SWITCH % (version, BASE, keep, BASE), "CPOS-SWITCH")
    if got != version:
        raise DeployError("the switch to %s did not stick (/active reads %r): run cpos deploy again" % (version, got))
    say("deployed %s to %s (was %s); every file checked on the device; reset the terminal to run it"
        % (version, port, old or "none"))
    return version
