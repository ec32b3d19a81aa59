"""`cpos`: the technician's command line (build, flash, deploy, site init, provision, status, logs, rescue).

Owns the commands, their options and their errors: every failure a technician can
cause (wrong port, not a CPOS terminal, damaged bundle, cut cable, invalid config,
a missing or wrong file, a mistyped command or option) ends with one line on stderr
saying what to do and a non-zero exit, never a traceback, and every command checks
all it can before it writes anything. The work is done by
host_tools.{bundle,partitions,deploy,site,provision,rescue} and, on the device,
through the real `mpremote` (host_tools/device.py) and `esptool`.

The port: `-p PORT` before or after the command, else $CPOS_PORT, else the one USB
serial port there is (pyserial's list_ports; none or several: the technician is
asked for -p). `cpos flash` erases a chip and takes only -p (or --dry-run).
"""
import argparse
import ast
import difflib
import json
import os
import re
import sqlite3
import subprocess
import sys

from host_tools import bundle, deploy, device, partitions, provision, rescue
from host_tools import site as sites

EXAMPLES = {
    "build": "cpos build --board esp32_uart --out build/esp32_uart   (--frozen: for a frozen image)",
    "flash": "cpos flash -p /dev/ttyUSB0 --image ESP32_GENERIC-v1.25.0.bin\n"
             "  cpos flash --image ESP32_GENERIC-v1.25.0.bin --dry-run   (print the esptool commands)",
    "deploy": "cpos deploy -p /dev/ttyUSB0 build/esp32_uart",
    "site": "cpos site init --site-dir site/ --ledger site/ledger.sqlite   (once per site)",
    "provision": "cpos provision -p /dev/ttyUSB0 --terminal 7 --site skole-nord --place school --kind till \\\n"
                 "      --board esp32_uart --broker-host 10.0.0.2 --site-dir site/ --ledger site/ledger.sqlite \\\n"
                 "      --set mqtt.keepalive=30",
    "status": "cpos status -p /dev/ttyUSB0        (add --json for the raw figures)",
    "logs": "cpos logs -p /dev/ttyUSB0 -n 50",
    "rescue": "cpos rescue -p /dev/ttyUSB0 --ledger site/ledger.sqlite\n"
              "  esptool read-flash 0x260000 0x40000 dump.bin && \\\n"
              "  cpos rescue --dump dump.bin --site skole-nord --terminal 7 --ledger site/ledger.sqlite",
}

_LOG_TAIL = """
import json
from cpos import devlog
import board
print("CPOS-LOG " + json.dumps(devlog.read(board.log_path(), marks=True)[-%d:]))
"""


class Fail(Exception):
    pass


def _writable_folder(path, what):
    """Fail unless a file or folder can be created at `path` (its nearest existing parent is writable)."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise Fail("cannot write %s %s: %s is not a writable folder; choose another place" % (what, path, parent))


def cmd_build(a):
    out = a.out.rstrip("/") or a.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise Fail("--out %s is a file: give a folder for the bundle" % out)
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, "manifest.json")):
        raise Fail("--out %s is a folder that is not a bundle (no manifest.json) and it would be replaced: "
                   "choose an empty or new folder" % out)
    _writable_folder(out, "the bundle")
    if os.path.isdir(out) and not os.access(out, os.W_OK):
        raise Fail("cannot replace the bundle %s: it is not writable" % out)
    bundle.board_file(a.board)
    bundle.mpy_cross()
    try:
        m = bundle.build(a.board, out, a.version, a.frozen)
    except OSError as e:
        raise Fail("cannot write the bundle %s (%s): choose another --out" % (out, e.strerror or e))
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
    if not a.port and not a.dry_run:
        raise Fail("flash erases the whole chip: name its port with -p PORT ($CPOS_PORT and auto-detection are "
                   "not used for flash), or add --dry-run to only write the image and print the commands")
    if a.port and not a.dry_run and os.sep in a.port and not os.path.exists(a.port):
        raise Fail("cannot open %s: check the USB cable and the port name (ls /dev/ttyUSB* /dev/ttyACM*)" % a.port)
    if os.path.isdir(a.image):
        raise Fail("--image %s is a folder: give the MicroPython .bin" % a.image)
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
    csv_path = os.path.splitext(out)[0] + "-partitions.csv"
    if os.path.isdir(out):
        raise Fail("--out %s is a folder: give a file name for the image" % out)
    _writable_folder(out, "the image")
    cmds = esptool_commands(a.port or "PORT", a.baud, out)
    try:
        with open(out, "wb") as f:
            f.write(patched)
        with open(csv_path, "w") as f:
            f.write(partitions.csv())
    except OSError as e:
        raise Fail("cannot write the image %s (%s): choose another --out" % (out, e.strerror or e))
    if a.dry_run:
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


def cmd_site(a):
    sites.init(a.site_dir, a.ledger, site=a.site, broker_names=a.broker_host)


def cmd_provision(a):
    provision.provision(a.port, a.terminal, a.site, a.place, a.kind, a.board, a.broker_host, a.site_dir,
                        a.ledger, a.set or (), fresh=a.fresh, plain=a.plain, rotate=a.rotate,
                        wifi_password_file=a.wifi_password_file, flash_mb=a.flash_mb, cards=a.cards)


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
        d = j.get("decay")
        if d:
            print("          FLASH DECAY: %d sector headers repaired or placed, %d sectors outside the ring%s"
                  % (d["headers"], d["orphans"], " (run cpos rescue: their purchases are not uploaded)"
                     if d["orphans"] else ""))
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
    if "time_known" in h:  # docs/time.md: which time the terminal used, and each source's word
        if h["time_known"]:
            state = "set by %s" % h.get("time_source")
        else:
            state = "UNKNOWN: stamping with the floor, refusing what needs the time (clock_not_set)"
        print("time      %s; floor %s (%s)" % (state, h.get("time_floor"), h.get("time_floor_from")))
        for name, v in sorted((h.get("time_sources") or {}).items()):
            off = "%+d s" % v["offset"] if isinstance(v.get("offset"), int) else "-"
            age = "%d s before the report" % v["age"] if isinstance(v.get("age"), int) else "never"
            print("          %-7s offset %s, last answer %s, %d accepted, %d refused"
                  % (name, off, age, v.get("accepted", 0), v.get("refused", 0)))
    print("health    %s" % text)


def cmd_logs(a):
    device.require_terminal(a.port)
    for entry in device.run(a.port, _LOG_TAIL % a.lines, "CPOS-LOG"):
        print(_log_stamp(entry[0], entry[2] if len(entry) > 2 else True), entry[1])


def _log_stamp(t, known):
    """A device log line's time for people: UTC, or 'after' it while the clock was not set."""
    import time as _time

    text = _time.strftime("%Y-%m-%d %H:%M:%SZ", _time.gmtime(t))
    return text if known else "after %s (clock not set)" % text


def _journal_or_fail(data, source):
    what = rescue.identify(data)
    if what is not None:
        raise Fail("%s holds no journal: %s; nothing was submitted (the journal partition: %s)"
                   % (source, what, rescue.JOURNAL_READ))


def cmd_rescue(a):
    from backend.ledger import Ledger

    if a.dump:
        if a.site is None or a.terminal is None:
            raise Fail("a dump names no terminal: give --site and --terminal")
        try:
            data = rescue.read_dump(a.dump)
        except ValueError as e:
            raise Fail(str(e))
        _journal_or_fail(data, a.dump)
        sites.check_ledger(a.ledger)
        site, number = a.site, a.terminal
    else:
        sites.check_ledger(a.ledger)
        device.require_terminal(a.port)
        data, cfg = rescue.read_device(a.port)
        if cfg is None and (a.site is None or a.terminal is None):
            raise Fail("the terminal has no readable config.json: give --site and --terminal")
        _journal_or_fail(data, "the journal partition of %s" % a.port)
        site = a.site or cfg["site"]
        number = a.terminal or cfg["terminal_no"]
    from backend.trust import RecordChecks

    ledger = Ledger(a.ledger, checks=RecordChecks(max_age_s=None))  # a rescued journal may be old
    try:
        sent, new, dup, conflicts, refused = rescue.submit(ledger, site, number, data, a.all)
    except ValueError as e:
        raise Fail(str(e))
    finally:
        ledger.close()
    print("rescued %d records of t%04d (site %s): %d new in the ledger, %d already there, %d conflicting"
          % (sent, number, site, new, dup, conflicts))
    if conflicts:
        print("cpos rescue: %d record(s) reuse a seq the ledger holds with a different purchase (a wiped or "
              "replaced journal): kept, not booked; list them with python -m backend conflicts --ledger %s "
              "--terminal %d" % (conflicts, a.ledger, number), file=sys.stderr)
    if refused:
        print("cpos rescue: %d record(s) failed the backend's checks (unknown account, a card not the account's, "
              "amount, time): kept, not booked; list them with python -m backend refused --ledger %s --terminal %d"
              % (refused, a.ledger, number), file=sys.stderr)


def version_text():
    """cpos's package version, and the version of the firmware sources it builds."""
    from importlib import metadata

    try:
        pkg = metadata.version("cpos-terminal")
    except metadata.PackageNotFoundError:
        pkg = "unknown"
    return "cpos %s (firmware sources %s)" % (pkg, bundle.source_version())


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print cpos's version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def _close(word, choices):
    got = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return got[0] if got else None


class CposParser(argparse.ArgumentParser):
    """argparse whose mistakes are one line, with "did you mean" for a mistyped command,
    choice or option."""

    argv = ()  # the command line being parsed (main sets it)
    commands = None  # on the top parser: {name: subparser}

    def _known(self, token, parser):
        name = token.split("=", 1)[0]
        strings = list(parser._option_string_actions) + list(self.top._option_string_actions)
        return name in strings or (name.startswith("--") and any(s.startswith(name) for s in strings))

    def error(self, message):
        top = self.top
        parser = self
        for t in CposParser.argv:
            if top.commands and t in top.commands:
                parser = top.commands[t]
                sub = getattr(parser, "commands", None)
                if sub:
                    for u in CposParser.argv:
                        if u in sub:
                            parser = sub[u]
                break
        unknown = [t for t in CposParser.argv if t.startswith("-") and len(t) > 1 and not t[1:2].isdigit()
                   and not self._known(t, parser)]
        if unknown:
            name = unknown[0].split("=", 1)[0]
            options = [o for o in parser._option_string_actions if o.startswith("--")
                       and parser._option_string_actions[o].help != argparse.SUPPRESS]
            guess = _close(name, options)
            message = "unknown option %s%s" % (name, ": did you mean %s?" % guess if guess else "")
        else:
            m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
            if m:
                guess = _close(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
                if message.startswith("argument COMMAND:") or message.startswith("argument ACTION:"):
                    message = "unknown %s '%s' (%s)" % ("command" if "COMMAND" in message else "action",
                                                      m.group(1), m.group(2).replace("'", ""))
                if guess:
                    message += ": did you mean %s?" % guess
        self.exit(2, "%s: %s (%s --help)\n" % (parser.prog, message, parser.prog))


def _alias(p, old, dest):
    """A hidden old spelling of an option (kept for scripts and old notes)."""
    p.add_argument(old, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS,
                   type=p._option_string_actions["--" + dest.replace("_", "-")].type)


def parser():
    ap = CposParser(
        prog="cpos", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="CPOS Terminal technician tools (docs/technician.md). No hardware? Start the virtual device: "
                    "python -m simulator.virtual_device DIR",
        epilog="the port: -p PORT (before or after the command), else $CPOS_PORT, else the only USB serial "
               "port there is\n\nexamples:\n" + "\n".join("  " + e for e in EXAMPLES.values()))
    ap.top = ap
    ap.add_argument("-p", "--port", help="serial port of the terminal, e.g. /dev/ttyUSB0 (default: $CPOS_PORT, "
                                         "else the only USB serial port)")
    ap.add_argument("--version", action=_Version)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=CposParser)
    ap.commands = {}

    def add(name, help_text, port=True):
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog="example:\n  " + EXAMPLES[name], formatter_class=argparse.RawDescriptionHelpFormatter)
        p.top = ap
        ap.commands[name] = p
        if port:
            p.add_argument("-p", "--port", default=argparse.SUPPRESS,
                           help="serial port of the terminal, e.g. /dev/ttyUSB0 (default: $CPOS_PORT, else the "
                                "only USB serial port)" if port != "explicit" else
                                "serial port of the board to erase and flash (required unless --dry-run)")
        return p

    p = add("build", "compile lib/ and firmware/ with mpy-cross into a versioned bundle with file hashes", port=False)
    p.add_argument("--board", default="esp32_uart", help="boards/<name> (esp32_uart, esp32_i2c, unix)")
    p.add_argument("--out", required=True, help="bundle folder to write (an earlier bundle there is replaced)")
    p.add_argument("--version", help="version name (default: git describe)")
    p.add_argument("--frozen", action="store_true",
                   help="boot.py and main.py only, for an image with the modules frozen in (WROOM)")
    p = add("flash", "erase the ESP32 and write MicroPython with the CPOS partition layout (esptool)", port="explicit")
    p.add_argument("--image", required=True, help="MicroPython ESP32_GENERIC .bin (the one flashed at 0x1000)")
    p.add_argument("--out", help="where to write the image with the CPOS partition table")
    p.add_argument("--baud", type=int, default=460800)
    p.add_argument("--dry-run", action="store_true", help="only write the image and print the esptool commands")
    p = add("deploy", "copy a bundle, verify every hash on the device, then switch to it")
    p.add_argument("bundle", help="bundle folder from cpos build")
    p = add("site", "create a site: its folder (site key, broker passwd and acl) and its ledger", port=False)
    site_sub = p.add_subparsers(dest="site_cmd", required=True, metavar="ACTION", parser_class=CposParser)
    p.commands = {}
    s = site_sub.add_parser("init", help="create the site folder and ledger (refuses an existing site)",
                            description="create the site folder (site_key, CA and broker certificate, mosquitto.conf, passwd, acl) and the ledger; "
                                        "refuses an existing site",
                            epilog="example:\n  " + EXAMPLES["site"], formatter_class=argparse.RawDescriptionHelpFormatter)
    s.top = ap
    p.commands["init"] = s
    s.add_argument("--site-dir", required=True, help="the site folder to create")
    s.add_argument("--ledger", required=True, help="the reference backend's ledger (SQLite): created, or an "
                                                   "existing ledger kept")
    s.add_argument("--site", help="the site's name, for its CA (default: the folder's name)")
    s.add_argument("--broker-host", action="append",
                   help="a name or address terminals reach the broker by, put in its TLS certificate "
                        "(repeatable; default: this machine's name, localhost, 127.0.0.1)")
    p = add("provision", "give a terminal its identity, config.json, broker login and backend entry")
    p.add_argument("--terminal", type=int, help="terminal number (its id is t%%04d); required")
    _alias(p, "--number", "terminal")
    p.add_argument("--site", required=True)
    p.add_argument("--place", choices=["school", "club"], required=True)
    p.add_argument("--kind", choices=["till", "vending"], required=True)
    p.add_argument("--board", default="esp32_uart")
    p.add_argument("--broker-host", required=True, help="the site broker's address as the terminal reaches it")
    p.add_argument("--site-dir", required=True, help="site folder from cpos site init: site_key, broker passwd and acl")
    p.add_argument("--ledger", required=True, help="the reference backend's ledger (SQLite), from cpos site init")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. mqtt.port=8883")
    p.add_argument("--rotate", action="store_true",
                   help="new login and keys for a terminal provisioned before; its old certificate is revoked and "
                        "its old keys die once the new ones are used (pending purchases are kept)")
    p.add_argument("--plain", action="store_true",
                   help="a password login on the broker's loopback listener instead of TLS with a client "
                        "certificate (only for a terminal on the broker's own machine)")
    p.add_argument("--wifi-password-file", metavar="FILE",
                   help="the Wi-Fi password (or $CPOS_WIFI_PASSWORD); never --set wifi.password=")
    p.add_argument("--fresh", action="store_true",
                   help="drop the settings of the terminal's earlier config.json (Wi-Fi, POS link, ...) "
                        "instead of keeping them")
    p.add_argument("--flash-mb", type=int, choices=sorted(partitions.LAYOUTS), default=4,
                   help="the module's flash size: the site's cards must fit its card table (4 MB: %d cards)"
                        % partitions.card_capacity())
    p.add_argument("--cards", type=int, help="check this many cards instead of the ledger's count "
                                             "(a site that is still being filled)")
    p = add("status", "version, journal, card table, last health report, Wi-Fi")
    p.add_argument("--json", action="store_true")
    p = add("logs", "the terminal's logged warnings, security events, errors, boots and health reports")
    p.add_argument("-n", "--lines", type=int, default=40)
    p = add("rescue", "submit a terminal's journal (live, or an esptool dump) to the backend, idempotently")
    p.add_argument("--dump", help="journal partition image (esptool read-flash 0x260000 0x40000 FILE)")
    p.add_argument("--site", help="the terminal's site (with --dump; live: from its config.json)")
    p.add_argument("--terminal", type=int, help="the terminal's number (with --dump; live: from its config.json)")
    _alias(p, "--number", "terminal")
    p.add_argument("--ledger", required=True, help="the reference backend's ledger (SQLite), from cpos site init")
    p.add_argument("--all", action="store_true", help="also records the terminal saw acknowledged")
    return ap


def detect_port():
    """The only USB serial port there is; Fail if there is none or several."""
    try:
        from serial.tools import list_ports
    except ImportError:
        raise Fail("no port given: use -p PORT or set CPOS_PORT (auto-detection needs pyserial)")
    ports = sorted(p.device for p in list_ports.comports() if p.vid is not None)
    if not ports:
        raise Fail("no port given and no USB serial port found: plug the terminal in (with a data cable), "
                   "or give -p PORT or set CPOS_PORT")
    if len(ports) > 1:
        raise Fail("no port given and %d USB serial ports found (%s): choose one with -p PORT or CPOS_PORT"
                   % (len(ports), ", ".join(ports)))
    return ports[0]


_NEEDS_PORT = ("deploy", "provision", "status", "logs")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = parser()
    CposParser.argv = argv
    a = ap.parse_args(argv)
    if a.cmd == "provision" and a.terminal is None:
        ap.commands["provision"].error("the following arguments are required: --terminal")
    name = "site " + a.site_cmd if a.cmd == "site" else a.cmd
    try:
        if a.cmd in _NEEDS_PORT or (a.cmd == "rescue" and not a.dump):
            a.port = a.port or os.environ.get("CPOS_PORT") or detect_port()
        globals()["cmd_" + a.cmd](a)
    except (Fail, bundle.BundleError, device.DeviceError, deploy.DeployError, provision.ProvisionError,
            sites.SiteError) as e:
        print("cpos %s: %s" % (name, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cpos %s: interrupted; the terminal keeps its previous state (run the command again)" % name,
              file=sys.stderr)
        return 130
    except (OSError, sqlite3.Error) as e:  # a file or database problem no check above foresaw: still one line
        print("cpos %s: %s" % (name, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
