"""Device libraries the project uses but does not keep: fetched by name and version, pinned by hash.

Owns one pinned copy: micropython-lib's `ssd1306` OLED driver, as micropython-lib
published it on PyPI (`micropython-ssd1306` 0.3, MIT licence, one file `ssd1306.py`).
A firmware build freezes the same driver straight from micropython-lib
(`require("ssd1306")` in boards/esp32_*/manifest.py); this copy is for what runs off
the build: the tests and benchmark that drive it on the MicroPython unix port, and
an ESP32 bundle deployed onto a MicroPython image without it (host_tools/bundle.py).

`pip download` refuses the archive (an sdist with no setup.py, so pip cannot read its
metadata), so it is fetched the way pip finds files: the registry's simple index
(PEP 691 JSON) names the archive and its sha256; the archive is downloaded, checked
against the hash pinned below (the index's word is not enough) and the one file is
extracted to build/vendor/. Nothing of it is committed to this repository.

    python -m host_tools.vendor      # fetch (once) and print the path
"""
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENDOR = os.path.join(ROOT, "build", "vendor")
INDEX = "https://pypi.org/simple/"

SSD1306 = {
    "project": "micropython-ssd1306",
    "version": "0.3",
    "archive": "micropython-ssd1306-0.3.tar.gz",
    "sha256": "d00cae1ff680e6ae504e258e700f002874b0d924b1a604253b6ea63144b58289",
    "member": "micropython-ssd1306-0.3/ssd1306.py",
    "licence": "MIT (micropython-lib)",
}


class VendorError(Exception):
    pass


def _get(url, accept=None, timeout=60):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def fetch(pkg=SSD1306, dest=VENDOR):
    """The path of the pinned file, fetching it once; VendorError with one line when it cannot."""
    folder = os.path.join(dest, "%s-%s" % (pkg["project"], pkg["version"]))
    path = os.path.join(folder, os.path.basename(pkg["member"]))
    if os.path.isfile(path):
        return path
    try:
        index = json.loads(_get(INDEX + pkg["project"] + "/", "application/vnd.pypi.simple.v1+json"))
        files = {f["filename"]: f["url"] for f in index.get("files", [])}
        if pkg["archive"] not in files:
            raise VendorError("%s: the registry does not list %s" % (pkg["project"], pkg["archive"]))
        data = _get(files[pkg["archive"]])
    except (OSError, ValueError) as e:
        raise VendorError("%s %s: cannot fetch from the registry: %s" % (pkg["project"], pkg["version"], e))
    digest = hashlib.sha256(data).hexdigest()
    if digest != pkg["sha256"]:
        raise VendorError("%s: sha256 %s is not the pinned %s: refused" % (pkg["archive"], digest, pkg["sha256"]))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = tar.extractfile(pkg["member"])
        if member is None:
            raise VendorError("%s holds no %s" % (pkg["archive"], pkg["member"]))
        text = member.read()
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(text)
    os.replace(tmp, path)  # several test workers may fetch at once
    return path


def ssd1306_dir():
    """The folder holding `ssd1306.py`, for a MICROPYPATH."""
    return os.path.dirname(fetch(SSD1306))


if __name__ == "__main__":
    try:
        print(fetch())
    except VendorError as e:
        print("vendor: %s" % e, file=sys.stderr)
        sys.exit(1)
