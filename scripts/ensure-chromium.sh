#!/bin/sh
# Make sure a headless Chromium is installed: the simulator's report test opens report.html
# in a real browser and checks that its images render. Installs Debian's `chromium` and
# `chromium-driver` packages when missing and we are root (CI and the dev machines);
# otherwise says what to do and fails. Debian's build, never a browser download of its own.
set -eu
found() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ]
}
if found chromium && found chromedriver; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "chromium is missing: run 'sudo apt-get install -y chromium chromium-driver' (Debian packages)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium chromium-driver; }
found chromium && found chromedriver
