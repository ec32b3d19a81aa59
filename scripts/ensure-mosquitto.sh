#!/bin/sh
# Make sure the mosquitto broker (and mosquitto_passwd) are installed: the uplink tests
# start their own broker on a loopback port. Installs the Debian package when it is missing
# and we are root (CI and the dev machines); otherwise says what to do and fails.
set -eu
found() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}
if found mosquitto && found mosquitto_passwd; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "mosquitto is missing: run 'sudo apt-get install -y mosquitto' (Debian package)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q mosquitto >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q mosquitto; }
# The package enables a system-wide broker on port 1883; the tests never use it. Stop it where
# a service manager runs (in a container there is none, and nothing was started).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl stop mosquitto || true
    systemctl disable mosquitto >/dev/null 2>&1 || true
fi
found mosquitto && found mosquitto_passwd
