"""The `cpos` technician CLI against a virtual terminal, through the real mpremote.

Each test starts simulator/virtual_device.py (a pty speaking the raw REPL over the
MicroPython unix port, with the ESP32 partitions as files) and runs the installed
`cpos` command as a technician would. Bad input must end in one line on stderr,
a non-zero exit and an untouched device.
"""
import hashlib
import json
import os
import pwd
import re
import socket
import subprocess
import sys

import pytest

from cpos import config
from cpos.net import mqtt
from cpos.net import messages
from cpos.blockfile import BlockFile
from cpos.journal import Journal
from host_tools import bundle, deploy, partitions
from runtimes import DEVICE_TESTS
from backend import broker_users
from backend.ledger import Ledger
from simulator.terminal import free_port

SITE = "skole-nord"


class VirtualTerminal:
    def __init__(self, folder, *args):
        self.folder = str(folder)
        self.fs = os.path.join(self.folder, "fs")
        self.parts = os.path.join(self.folder, "partitions")
        self.proc = subprocess.Popen([sys.executable, "-m", "simulator.virtual_device", self.folder] + list(args),
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.port = line.split()[1]

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()

    def tree(self):
        """Every file on the device's filesystem with its content hash."""
        out = {}
        for d, _, files in os.walk(self.fs):
            for f in files:
                p = os.path.join(d, f)
                out[os.path.relpath(p, self.fs)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
        return out

    def read(self, path):
        with open(os.path.join(self.fs, path)) as f:
            return f.read()


@pytest.fixture
def plug(tmp_path):
    """plug(name, *options): a virtual terminal in tmp_path/name (plug it again: same flash)."""
    live = []

    def make(name="dev", *args):
        v = VirtualTerminal(tmp_path / name, *args)
        live.append(v)
        return v

    yield make
    for v in live:
        v.close()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for v in ("v1", "v2", "v3"):
        bundle.build("esp32_uart", str(root / v), v)
        out[v] = str(root / v)
    return out


def cpos(*args, timeout=120):
    return subprocess.run([bundle.tool("cpos")] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


def failed_in_one_line(p, *words):
    assert p.returncode != 0, p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def site_init(tmp_path):
    """The site folder and ledger, made as a technician makes them: `cpos site init` (once)."""
    site = tmp_path / "site"
    if not os.path.exists(site / "site_key"):
        p = cpos("site", "init", "--site-dir", site, "--ledger", site / "ledger.sqlite")
        assert p.returncode == 0, p.stderr
    return site


def provision_args(v, tmp_path, number=7, *extra):
    site = site_init(tmp_path)
    return ["provision", "-p", v.port, "--terminal", number, "--site", SITE, "--place", "school", "--kind", "till",
            "--broker-host", "127.0.0.1", "--site-dir", site, "--ledger", site / "ledger.sqlite",
            "--set", "mqtt.port=%d" % free_port(), "--plain"] + list(extra)  # a loopback broker: password login


def folder_state(path):
    """Every file under `path` with its bytes (a site folder before and after a refusal)."""
    out = {}
    for d, dirs, files in os.walk(path):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), path)] = "folder"
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, path)] = ("-> " + os.readlink(p)) if os.path.islink(p) else open(p, "rb").read()
    return out


# -- help ----------------------------------------------------------------------------

def test_help_lists_every_command_with_an_example():
    p = cpos("--help")
    assert p.returncode == 0
    for c in ("build", "flash", "deploy", "site", "provision", "status", "logs", "rescue"):
        assert c in p.stdout
        sub = cpos(c, "--help")
        assert sub.returncode == 0 and "example:" in sub.stdout and "cpos " + c in sub.stdout


# -- deploy --------------------------------------------------------------------------

def test_deploy_verifies_on_the_device_then_switches(plug, bundles):
    v = plug()
    p = cpos("deploy", "-p", v.port, bundles["v1"])
    assert p.returncode == 0, p.stderr
    assert v.read("active") == "v1"
    manifest = json.load(open(os.path.join(bundles["v1"], "manifest.json")))
    tree = v.tree()
    for path, digest in manifest["files"].items():
        assert tree["bundles/v1/" + path] == digest
    assert tree["boot.py"] == manifest["files"]["boot.py"]
    # after a reset, boot.py runs the active version: status comes from its cpos
    s = json.loads(cpos("status", "-p", v.port, "--json").stdout)
    assert s["version"] == s["active"] == "v1"
    assert cpos("deploy", "-p", v.port, bundles["v2"]).returncode == 0
    assert v.read("active") == "v2"
    assert cpos("deploy", "-p", v.port, bundles["v3"]).returncode == 0
    assert sorted(os.listdir(os.path.join(v.fs, "bundles"))) == ["v2", "v3"]  # the previous one is kept
    again = cpos("deploy", "-p", v.port, bundles["v3"])
    assert again.returncode == 0 and "already the active version" in again.stdout


def test_interrupted_deploy_leaves_the_old_version_running(plug, bundles):
    v = plug("dev")
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    v.close()
    cut = plug("dev", "--hangup-after", "40000")  # the cable comes out in the middle of the copy
    p = cpos("deploy", "-p", cut.port, bundles["v2"])
    failed_in_one_line(p, "interrupted", "still runs v1", "run cpos deploy again")
    assert cut.read("active") == "v1"
    assert os.path.isdir(os.path.join(cut.fs, "bundles", "v2"))  # a partial copy, never switched to
    cut.close()
    back = plug("dev")
    s = json.loads(cpos("status", "-p", back.port, "--json").stdout)
    assert s["version"] == "v1"
    assert cpos("deploy", "-p", back.port, bundles["v2"]).returncode == 0
    assert back.read("active") == "v2"


def test_bundle_with_a_bad_hash_is_refused_before_the_device_is_touched(plug, bundles, tmp_path):
    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    bad = tmp_path / "bad"
    subprocess.run(["cp", "-r", bundles["v2"], str(bad)], check=True)
    with open(bad / "cpos" / "rules.mpy", "ab") as f:
        f.write(b"\0")
    before = v.tree()
    failed_in_one_line(cpos("deploy", "-p", v.port, bad), "cpos/rules.mpy", "rebuild")
    assert v.tree() == before


def test_a_file_damaged_on_the_device_is_caught_by_the_device_check(plug, bundles):
    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    manifest = json.load(open(os.path.join(bundles["v1"], "manifest.json")))
    wanted = {"/bundles/v1/" + p: h for p, h in manifest["files"].items()}
    assert deploy.verify_on_device(v.port, wanted) == []
    with open(os.path.join(v.fs, "bundles", "v1", "cpos", "journal.mpy"), "r+b") as f:
        f.write(b"\x00\x00")
    assert deploy.verify_on_device(v.port, wanted) == ["/bundles/v1/cpos/journal.mpy"]
    # redeploying the same damaged version is refused rather than patched in place
    failed_in_one_line(cpos("deploy", "-p", v.port, bundles["v1"]), "damaged", "new version")


# -- wrong ports and wrong devices ------------------------------------------------------

def test_wrong_port_says_so(bundles):
    for args in (["status"], ["logs"], ["deploy", bundles["v1"]]):
        p = cpos(args[0], "-p", "/dev/ttyCPOS-none", *args[1:])
        failed_in_one_line(p, "cannot open /dev/ttyCPOS-none", "port name")


def test_wrong_port_for_provision_and_rescue_writes_nothing(tmp_path):
    site = site_init(tmp_path)
    before = folder_state(site)
    p = cpos("provision", "-p", "/dev/ttyCPOS-none", "--terminal", 7, "--site", SITE, "--place", "school",
             "--kind", "till", "--broker-host", "127.0.0.1", "--site-dir", site, "--ledger", site / "ledger.sqlite")
    failed_in_one_line(p, "cannot open /dev/ttyCPOS-none", "port name")
    failed_in_one_line(cpos("rescue", "-p", "/dev/ttyCPOS-none", "--ledger", site / "ledger.sqlite"),
                       "cannot open /dev/ttyCPOS-none", "port name")
    assert folder_state(site) == before  # no broker login or ledger entry for a terminal never reached


def test_a_board_without_the_cpos_layout_is_not_a_terminal(plug, bundles, tmp_path):
    v = plug("plain", "--no-partitions")
    before = v.tree()
    failed_in_one_line(cpos("deploy", "-p", v.port, bundles["v1"]), "not a CPOS terminal", "cpos flash")
    failed_in_one_line(cpos(*provision_args(v, tmp_path)), "not a CPOS terminal")
    assert v.tree() == before
    assert [l.split(":")[0] for l in open(tmp_path / "site" / "passwd").read().splitlines()] == ["backend", "backend-ctl"]


def test_a_port_without_micropython_is_not_a_terminal(plug, bundles):
    v = plug("mute", "--mute")
    failed_in_one_line(cpos("deploy", "-p", v.port, bundles["v1"], timeout=60), "does not answer as MicroPython")
    assert v.tree() == {}


# -- provision -------------------------------------------------------------------------

def _mosquitto(site_dir, port):
    conf = os.path.join(site_dir, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write("user %s\nlistener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\nacl_file %s\n"
                "persistence false\n" % (pwd.getpwuid(os.geteuid()).pw_name, port, os.path.join(site_dir, "passwd"), os.path.join(site_dir, "acl")))
    proc = subprocess.Popen([broker_users.find_tool("mosquitto"), "-c", conf], stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            subprocess.run(["sleep", "0.02"])
    proc.kill()
    raise AssertionError("mosquitto did not start")


def _pub(port, user, password):
    """The broker's CONNACK return code for this login (0 accepted; 4/5 refused)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(mqtt.connect_packet(user, user, password))
        ack = b""
        while len(ack) < 4:
            more = s.recv(4 - len(ack))
            if not more:
                return -1
            ack += more
    assert ack[0] == 0x20
    return ack[3]


def test_provision_writes_config_broker_login_and_backend_entry(plug, bundles, tmp_path):
    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    p = cpos(*provision_args(v, tmp_path, 7, "--set", "removal_window_ms=800"))
    assert p.returncode == 0, p.stderr
    cfg = json.loads(v.read("config.json"))
    c = config.validate(cfg)
    assert (c.terminal_id, c.terminal_no, c.site, c.removal_window_ms) == ("t0007", 7, SITE, 800)
    assert cfg["storage"]["journal"] == {"partition": "journal"} and cfg["pn532"]["link"] == "uart"
    key = open(tmp_path / "site" / "site_key").read().strip()
    assert len(bytes.fromhex(key)) == 32
    acl = open(tmp_path / "site" / "acl").read()
    assert broker_users.terminal_acl(SITE, "t0007") in acl and broker_users.backend_acl() in acl
    led = Ledger(str(tmp_path / "site" / "ledger.sqlite"))
    assert led.db.execute("SELECT tid, site, place, kind FROM terminals").fetchall() == [("t0007", SITE, 0, 0)]
    led.close()
    # the broker takes the password the device got; provisioning again replaces it
    port = cfg["mqtt"]["port"]
    broker = _mosquitto(str(tmp_path / "site"), port)
    try:
        assert _pub(port, "t0007", cfg["mqtt"]["password"]) == 0
        assert _pub(port, "t0007", cfg["mqtt"]["password"] + "x") != 0
    finally:
        broker.kill()
        broker.wait()
    assert cpos(*provision_args(v, tmp_path, 7, "--set", "mqtt.port=%d" % port)).returncode == 0
    cfg2 = json.loads(v.read("config.json"))
    assert cfg2["mqtt"]["password"] != cfg["mqtt"]["password"]
    assert cfg2["removal_window_ms"] == 800  # the earlier --set is kept
    passwd = open(tmp_path / "site" / "passwd").read().splitlines()
    assert [l.split(":")[0] for l in passwd] == ["backend", "backend-ctl", "t0007"]  # the backend's two loopback logins, made at init
    assert open(tmp_path / "site" / "site_key").read().strip() == key  # one key per site
    broker = _mosquitto(str(tmp_path / "site"), port)
    try:
        assert _pub(port, "t0007", cfg2["mqtt"]["password"]) == 0
        assert _pub(port, "t0007", cfg["mqtt"]["password"]) != 0
    finally:
        broker.kill()
        broker.wait()


def test_a_config_that_fails_validation_writes_nothing(plug, bundles, tmp_path):
    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    before = v.tree()
    args = provision_args(v, tmp_path, 7, "--set", "removal_window_ms=5")
    site = folder_state(tmp_path / "site")
    p = cpos(*args)
    failed_in_one_line(p, "config removal_window_ms: must be between 100 and 5000", "--set")
    assert v.tree() == before
    assert folder_state(tmp_path / "site") == site  # no login, ACL or ledger entry either


# -- status, logs, rescue ----------------------------------------------------------------

def _purchases(v, n, acked, terminal=7):
    """n purchases in the terminal's journal partition (the device's own format), `acked` acknowledged."""
    dev = BlockFile(os.path.join(v.parts, "journal.bin"))
    j = Journal(dev)
    j.recover()
    for i in range(n):
        j.append(1700000000 + 60 * i, bytes([1, 2, 3, 4 + i % 4]), 1000 + i % 4, 2500, 0, 0, terminal,
                 "Sandwich %d" % i, 50000 - 2500 * i, 0, False)
    if acked:
        j.ack(acked)
    dev.close()


def test_status_and_logs_report_journal_table_and_last_health(plug, bundles, tmp_path):
    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    assert cpos(*provision_args(v, tmp_path)).returncode == 0
    _purchases(v, 12, 5)
    # the running app's log, as firmware/main.py makes it on the device: boot, then health
    code = ("from cpos import devlog, log\nimport board\nt=[5000]\n"
            "l = log.Log(devlog.FileSink(lambda s: None, board.log_path(), lambda: t[0]))\n"
            "t[0] = 5090\nl.info('health %r' % ({'reader_ok': True, 'reader_errors': 2, 'reader_reinits': 1,"
            " 'broker_connected': False, 'broker_connects': 3, 'broker_error': 'ECONNREFUSED',"
            " 'uplink_acked': 5, 'uplink_batches': 2, 'uplink_resends': 0, 'last_contact': board.now() - 120},))\n"
            "l.error('reader: no answer')\n")
    assert subprocess.run([bundle.tool("mpremote"), "connect", v.port, "exec", code], capture_output=True).returncode == 0
    s = json.loads(cpos("status", "-p", v.port, "--json").stdout)
    assert s["terminal_id"] == "t0007" and s["version"] == "v1"
    assert s["journal"]["pending"] == 7 and s["journal"]["oldest_unacked"] == 6 and s["journal"]["next_seq"] == 13
    assert s["journal"]["oldest_unacked_t"] == 1700000000 + 60 * 5
    assert s["cardtable"] == {"version": 0, "state": "empty", "included_seq": 0, "cards": 0}
    assert s["uptime_s"] == 90 and "'reader_errors': 2" in s["health"] and s["errors_logged"] == 1
    text = cpos("status", "-p", v.port)
    assert text.returncode == 0
    assert "7 pending, oldest unacked: seq 6" in text.stdout and "uptime    90 s" in text.stdout
    assert "reader    ok, 2 errors, 1 re-inits" in text.stdout
    assert "broker    DOWN (ECONNREFUSED), 3 connects; uplink acked to seq 5" in text.stdout
    # the card table's age: the sync's last authentic news, as the last health report gave it
    assert 120 <= s["cardtable_age_s"] < 180
    age = re.search(r"last news from the backend (\d+) s ago \(table age", text.stdout)
    assert age and 120 <= int(age.group(1)) < 180, text.stdout
    logs = cpos("logs", "-p", v.port)
    assert logs.returncode == 0
    assert logs.stdout.splitlines()[-1] == "1970-01-01 01:24:50Z E reader: no answer"  # 5090 s, in UTC


# What runs on the device: the firmware's own pieces wired as firmware/main.py and firmware/app.py
# wire them (Log over devlog.FileSink on board.log_path(), MQTTClient, Sync on the card-table
# partition), with one stand-in, the socket: the client reads the broker's bytes from WIRE
# through tests/device/broker_wire.py's Wire, whose source is sent ahead of this.
_DOWNLINK_ON_THE_DEVICE = """
import asyncio, binascii, board
from cpos import config, devlog, log
from cpos.cards import table as cardtable
from cpos.net.mqtt import MQTTClient
from cpos.net.sync import Sync
cfg = config.load(board.config_path())
lg = log.Log(devlog.FileSink(board.log, board.log_path(), board.now))
m = cfg.mqtt
c = MQTTClient(cfg.terminal_id, m["host"], m["port"], m["user"], m["password"], log=lg)
t = cardtable.CardTable(board.block_device(cfg.storage["cardtable"]), card_slots=32)
s = Sync(t, c, cfg.site, cfg.terminal_id, cfg.site_key, log=lg, clock=board.now)
c._reader = Wire(binascii.unhexlify(WIRE))
asyncio.run(c._reader_loop(None))
print("REFUSED", s.rejected, sorted(s.why.items()))
"""


def test_a_forged_and_a_replayed_downlink_message_show_in_cpos_logs(plug, bundles, tmp_path):
    from cpos.cards import delta as carddelta
    from cpos.net import signing

    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    assert cpos(*provision_args(v, tmp_path)).returncode == 0
    key = signing.Key(bytes.fromhex(json.loads(v.read("config.json"))["keys"]["down"]))  # the terminal's own
    topic = messages.topic(SITE, "t0007", messages.SYNC_DOWN)
    # Unblocking a card without the site key; then a genuine "you are current" answer to a
    # request the terminal never made (an old one, recorded and sent again).
    forged = signing.encode(signing.Key(b"\x01" * 32), topic, signing.DELTA, 1,
                            carddelta.encode(1, 0, carddelta.UNBLOCK, uid=b"\x04\xa1\xb2\xc3"))
    replayed = signing.encode(key, topic, signing.CURRENT, 3, arg=12345)
    wire = b"".join(mqtt.publish_header(topic, len(p), qos=0) + p for p in (forged, replayed))
    with open(os.path.join(DEVICE_TESTS, "broker_wire.py")) as f:
        code = "WIRE = %r\n" % wire.hex() + f.read() + _DOWNLINK_ON_THE_DEVICE
    p = subprocess.run([bundle.tool("mpremote"), "connect", v.port, "exec", code], capture_output=True, text=True)
    assert p.returncode == 0 and "REFUSED 2 [('bad tag', 1), ('replayed', 1)]" in p.stdout, p.stdout + p.stderr
    logs = cpos("logs", "-p", v.port)
    assert logs.returncode == 0, logs.stderr
    stamp = r"^(after )?\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ( \(clock not set\))? "
    assert all(re.match(stamp, line) for line in logs.stdout.splitlines()), logs.stdout
    lines = [re.sub(stamp, "", line) for line in logs.stdout.splitlines()]
    assert lines[-3:] == ["I boot", "S sync: refused message: bad tag",
                          "S sync: refused message: replayed"], logs.stdout
    status = cpos("status", "-p", v.port)
    assert "log       1 boots, 0 errors, 2 security events logged" in status.stdout, status.stdout


def test_status_reports_a_decayed_journal_header(plug, bundles, tmp_path):
    """Two bits of a journal sector header gone (beyond a one-bit repair): the recovery places
    the sector from its records, nothing pending is lost, and `cpos status` says so."""
    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    assert cpos(*provision_args(v, tmp_path)).returncode == 0
    _purchases(v, 150, 0)
    with open(os.path.join(v.parts, "journal.bin"), "r+b") as f:
        for at, mask in ((4096 + 4, 0x01), (4096 + 10, 0x40)):
            f.seek(at)
            b = f.read(1)[0]
            f.seek(at)
            f.write(bytes([b ^ mask]))
    s = json.loads(cpos("status", "-p", v.port, "--json").stdout)
    assert s["journal"]["pending"] == 150 and s["journal"]["oldest_unacked"] == 1 and s["journal"]["next_seq"] == 151
    assert s["journal"]["decay"] == {"headers": 1, "orphans": 0, "records_repaired": 0}
    text = cpos("status", "-p", v.port).stdout
    assert "FLASH DECAY: 1 sector headers repaired or placed, 0 sectors outside the ring" in text, text


def test_status_of_a_terminal_with_no_firmware_says_deploy(plug):
    v = plug()
    failed_in_one_line(cpos("status", "-p", v.port), "no CPOS firmware deployed", "cpos deploy")


def test_rescue_from_the_terminal_and_from_a_dump_is_idempotent(plug, bundles, tmp_path):
    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    assert cpos(*provision_args(v, tmp_path)).returncode == 0
    _purchases(v, 30, 10)
    ledger_path = tmp_path / "site" / "ledger.sqlite"
    led = Ledger(str(ledger_path))  # the accounts and cards the purchases name (the backend books no others)
    for k in range(4):
        led.add_account("A%d" % k, account_id=1000 + k)
        led.add_card(bytes([1, 2, 3, 4 + k]).hex(), "card%d" % k, 1000 + k)
    led.close()
    p = cpos("rescue", "-p", v.port, "--ledger", ledger_path)
    assert p.returncode == 0, p.stderr
    assert "rescued 20 records of t0007" in p.stdout and "20 new" in p.stdout
    led = Ledger(str(ledger_path))
    assert led.received_seqs(7) == list(range(11, 31))
    assert led.watermark(7) == 0  # 1..10 never reached this ledger: the watermark waits for them
    led.close()
    again = cpos("rescue", "-p", v.port, "--ledger", ledger_path)
    assert again.returncode == 0 and "0 new" in again.stdout and "20 already there" in again.stdout
    dump = os.path.join(v.parts, "journal.bin")
    p = cpos("rescue", "--dump", dump, "--site", SITE, "--terminal", 7, "--ledger", ledger_path, "--all")
    assert p.returncode == 0 and "rescued 30 records" in p.stdout and "10 new" in p.stdout
    led = Ledger(str(ledger_path))
    assert led.received_seqs(7) == list(range(1, 31)) and led.watermark(7) == 30
    led.close()
    wrong = cpos("rescue", "--dump", dump, "--site", SITE, "--terminal", 8, "--ledger", ledger_path)
    failed_in_one_line(wrong, "terminal 7, not 8")


# -- flash -----------------------------------------------------------------------------

MICROPYTHON_4MB = (("nvs", partitions.DATA, "nvs", 0x9000, 0x6000), ("phy_init", partitions.DATA, "phy", 0xF000, 0x1000),
                   ("factory", partitions.APP, "factory", 0x10000, 0x1F0000),
                   ("vfs", partitions.DATA, "fat", 0x200000, 0x200000))


def _stock_image(app_bytes=300000):
    """A combined image laid out as MicroPython's ESP32_GENERIC .bin (from 0x1000)."""
    boot = (b"\xe9" + bytes(range(256)) * 112)[:0x7000]
    app = b"\xe9" + b"\x5a" * (app_bytes - 1)
    return boot + partitions.binary(MICROPYTHON_4MB) + b"\xff" * (0xF000 - 0x7000 - partitions.TABLE_SIZE) + app


def test_partition_table_follows_the_documented_format():
    b = partitions.binary()
    assert len(b) == 0xC00
    entries = []
    for i in range(0, 0xC00, 32):
        if b[i:i + 2] != b"\xaa\x50":
            break
        entries.append(b[i:i + 32])
    assert b[len(entries) * 32:len(entries) * 32 + 16] == b"\xeb\xeb" + b"\xff" * 14
    assert b[len(entries) * 32 + 16:len(entries) * 32 + 32] == hashlib.md5(b"".join(entries)).digest()
    assert set(b[len(entries) * 32 + 32:]) == {0xFF}
    by_label = {e[12:28].rstrip(b"\0").decode(): e for e in entries}
    assert set(by_label) >= {"factory", "vfs", "journal", "cardtable"}
    j = by_label["journal"]
    assert j[2] == 1 and int.from_bytes(j[4:8], "little") == 0x260000 and int.from_bytes(j[8:12], "little") == 0x40000
    # the journal dump command in the docs and the CLI help reads exactly this partition
    assert "read-flash 0x260000 0x40000" in open(os.path.join(bundle.ROOT, "docs", "technician.md")).read()


def test_flash_writes_the_cpos_table_into_the_image_and_runs_esptool(tmp_path):
    img = tmp_path / "ESP32_GENERIC.bin"
    stock = _stock_image()
    img.write_bytes(stock)
    p = cpos("flash", "--image", img, "--dry-run")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "ESP32_GENERIC-cpos.bin"
    patched = out.read_bytes()
    assert patched[:0x7000] == stock[:0x7000] and patched[0x7C00:] == stock[0x7C00:]
    assert [e[0] for e in partitions.parse(patched[0x7000:0x7C00])] == [e[0] for e in partitions.LAYOUT_4MB]
    assert "erase-flash" in p.stdout and "write-flash -z 0x1000 %s" % out in p.stdout
    # esptool itself accepts the image and the command line (no board: it stops at the port)
    merged = tmp_path / "merged.bin"
    m = subprocess.run([bundle.tool("esptool"), "--chip", "esp32", "merge-bin", "-o", str(merged), "0x1000", str(out)],
                       capture_output=True, text=True)
    assert m.returncode == 0, m.stdout + m.stderr
    assert merged.read_bytes()[0x8000:0x8C00] == partitions.binary()
    failed_in_one_line(cpos("flash", "-p", "/dev/ttyCPOS-none", "--image", img), "cannot open /dev/ttyCPOS-none")


def test_flash_refuses_an_image_that_is_not_micropython(tmp_path):
    img = tmp_path / "random.bin"
    img.write_bytes(os.urandom(100000))
    failed_in_one_line(cpos("flash", "--image", img, "--dry-run"), "not a combined MicroPython ESP32 image")
    big = tmp_path / "big.bin"
    big.write_bytes(_stock_image(app_bytes=0x1F0001))
    failed_in_one_line(cpos("flash", "--image", big, "--dry-run"), "does not fit")
    failed_in_one_line(cpos("flash", "--image", tmp_path / "missing.bin", "--dry-run"), "cannot read the image")


def test_frozen_manifests_name_every_bundle_module():
    """`cpos build` and a frozen image (boards/<board>/manifest.py) carry the same code."""
    for board in ("esp32_uart", "esp32_i2c"):
        text = open(os.path.join(bundle.ROOT, "boards", board, "manifest.py")).read()
        mods = {dst for _, dst, compiled in bundle.sources(board) if compiled}
        assert 'package("cpos", base_path="../../lib")' in text
        for m in mods - {m for m in mods if m.startswith("cpos/")}:
            named = '"%s.py"' % m[:-4] in text or 'require("%s")' % m[:-4] in text  # micropython-lib's
            assert named, (board, m)
    assert messages.terminal_id(7) == "t0007"


def test_a_frozen_bundle_carries_only_boot_and_main(plug, tmp_path):
    out = tmp_path / "frozen"
    p = cpos("build", "--board", "esp32_i2c", "--frozen", "--out", out, "--version", "f1")
    assert p.returncode == 0, p.stderr
    manifest = json.load(open(out / "manifest.json"))
    assert sorted(manifest["files"]) == ["boot.py", "main.py"] and manifest["frozen"] is True
    assert sorted(os.listdir(out)) == ["boot.py", "main.py", "manifest.json"]
    v = plug()
    assert cpos("deploy", "-p", v.port, out).returncode == 0
    assert sorted(os.listdir(os.path.join(v.fs, "bundles", "f1"))) == ["boot.py", "main.py", "manifest.json"]
    assert v.read("active") == "f1"


# -- a CLI that protects the technician ---------------------------------------------------

def _journal_dump(path, n=3, terminal=7):
    dev = BlockFile(str(path), 4 * 4096)
    j = Journal(dev)
    j.recover()
    for i in range(n):
        j.append(1700000000 + 60 * i, bytes([1, 2, 3, 4]), 1000, 2500, 0, 0, terminal, "Sandwich", 50000, 0, False)
    dev.close()
    return path


def test_every_command_fails_in_one_line_on_bad_input(tmp_path, bundles):
    """Missing and unreadable files, folders, wrong kinds of file, unwritable outputs and wrong
    ports: each is one line on stderr, a non-zero exit, no traceback, and nothing written."""
    site = site_init(tmp_path)
    ledger = site / "ledger.sqlite"
    a_file = tmp_path / "note.txt"
    a_file.write_text("not a folder\n")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(3 * 4096))
    blank = tmp_path / "blank.bin"
    blank.write_bytes(b"\xff" * 0x40000)
    plain_db = tmp_path / "other.sqlite"
    import sqlite3
    c = sqlite3.connect(str(plain_db))
    c.execute("CREATE TABLE t (x)")
    c.close()
    dump = _journal_dump(tmp_path / "journal.bin")
    img = tmp_path / "ESP32_GENERIC.bin"
    img.write_bytes(_stock_image())
    dangling = tmp_path / "dangling.bin"
    os.symlink(tmp_path / "gone", dangling)
    under_a_file = a_file / "out"
    nobody = "/dev/ttyCPOS-none"
    prov = ["--terminal", 7, "--site", SITE, "--place", "school", "--kind", "till", "--broker-host", "127.0.0.1"]
    dump_args = ["--site", SITE, "--terminal", 7]
    cases = [
        (["rescue", "--dump", tmp_path / "missing.bin", "--ledger", ledger] + dump_args, ["cannot read", "missing.bin"]),
        (["rescue", "--dump", dangling, "--ledger", ledger] + dump_args, ["cannot read", "dangling.bin"]),
        (["rescue", "--dump", tmp_path, "--ledger", ledger] + dump_args, ["is a folder"]),
        (["rescue", "--dump", junk, "--ledger", ledger] + dump_args, ["holds no journal", "no journal sector header"]),
        (["rescue", "--dump", blank, "--ledger", ledger] + dump_args, ["holds no journal", "all 0xFF"]),
        (["rescue", "--dump", img, "--ledger", ledger] + dump_args, ["holds no journal"]),
        (["rescue", "--dump", dump, "--ledger", tmp_path / "ledgr.sqlite"] + dump_args, ["no ledger", "cpos site init"]),
        (["rescue", "--dump", dump, "--ledger", junk] + dump_args, ["is not a ledger"]),
        (["rescue", "--dump", dump, "--ledger", plain_db] + dump_args, ["not a CPOS ledger"]),
        (["rescue", "--dump", dump, "--ledger", tmp_path] + dump_args, ["is a folder"]),
        (["rescue", "--dump", dump, "--ledger", ledger], ["--site and --terminal"]),
        (["rescue", "-p", nobody, "--ledger", ledger], ["cannot open " + nobody]),
        (["build", "--out", under_a_file], ["cannot write", "not a writable folder"]),
        (["build", "--out", a_file], ["is a file"]),
        (["build", "--out", site], ["not a bundle", "would be replaced"]),
        (["build", "--board", "esp33", "--out", tmp_path / "b"], ["unknown board 'esp33'"]),
        (["flash", "--image", tmp_path / "missing.bin", "--dry-run"], ["cannot read the image"]),
        (["flash", "--image", tmp_path, "--dry-run"], ["is a folder"]),
        (["flash", "--image", junk, "--dry-run"], ["not a combined MicroPython ESP32 image"]),
        (["flash", "--image", img, "--out", under_a_file, "--dry-run"], ["cannot write the image"]),
        (["flash", "--image", img, "--out", tmp_path, "--dry-run"], ["is a folder"]),
        (["flash", "--image", img], ["-p PORT", "--dry-run"]),
        (["flash", "-p", nobody, "--image", img], ["cannot open " + nobody]),
        (["deploy", "-p", nobody, bundles["v1"]], ["cannot open " + nobody]),
        (["deploy", "-p", nobody, tmp_path / "nobundle"], ["not a bundle"]),
        (["deploy", "-p", nobody, a_file], ["not a bundle"]),
        (["status", "-p", nobody], ["cannot open " + nobody]),
        (["logs", "-p", nobody], ["cannot open " + nobody]),
        (["provision", "-p", nobody] + prov + ["--site-dir", tmp_path / "sit", "--ledger", ledger],
         ["site folder", "does not exist", "cpos site init", "nothing was written"]),
        (["provision", "-p", nobody] + prov + ["--site-dir", a_file, "--ledger", ledger], ["is a file"]),
        (["provision", "-p", nobody] + prov + ["--site-dir", tmp_path, "--ledger", ledger], ["no site_key", "cpos site init"]),
        (["provision", "-p", nobody] + prov + ["--site-dir", site, "--ledger", site / "ledgr.sqlite"],
         ["no ledger", "cpos site init"]),
        (["provision", "-p", nobody] + prov + ["--site-dir", site, "--ledger", junk], ["is not a ledger"]),
        (["provision", "-p", nobody] + prov + ["--site-dir", site, "--ledger", ledger, "--board", "esp33"],
         ["unknown board"]),
        (["provision", "-p", nobody] + prov + ["--site-dir", site, "--ledger", ledger, "--set", "wifi"], ["KEY=VALUE"]),
        (["provision", "-p", nobody] + prov + ["--site-dir", site, "--ledger", ledger], ["cannot open " + nobody]),
        (["site", "init", "--site-dir", site, "--ledger", ledger], ["already holds a site", "nothing changed"]),
        (["site", "init", "--site-dir", tmp_path / "new", "--ledger", junk], ["is not a ledger"]),
        (["site", "init", "--site-dir", under_a_file, "--ledger", tmp_path / "l.sqlite"], ["cannot create"]),
    ]
    before = folder_state(tmp_path)
    for args, words in cases:
        p = cpos(*args)
        try:
            failed_in_one_line(p, *words)
        except AssertionError as e:
            raise AssertionError("cpos %s: %s" % (" ".join(map(str, args)), e))
        assert p.stdout == "", (args, p.stdout)
    assert folder_state(tmp_path) == before  # nothing written anywhere, not even a half-built bundle


def test_a_mistyped_command_or_option_gets_one_line_with_a_suggestion(tmp_path):
    for args, words in ((["provison"], ["unknown command 'provison'", "did you mean provision?"]),
                        (["stauts", "-p", "x"], ["did you mean status?"]),
                        (["site", "int"], ["did you mean init?"]),
                        (["provision", "--sitedir", "x"], ["unknown option --sitedir", "did you mean --site-dir?"]),
                        (["rescue", "--dumb", "x", "--ledger", "l"], ["did you mean --dump?"]),
                        (["provision", "--place", "scool"], ["invalid choice: 'scool'", "did you mean school?"]),
                        (["provision", "--terminal", "7"], ["required", "--site"]),
                        (["provision", "--site", "s", "--place", "club", "--kind", "till", "--broker-host", "h",
                          "--site-dir", "d", "--ledger", "l"], ["required: --terminal"]),
                        (["build"], ["required", "--out"])):
        p = cpos(*args)
        assert p.returncode == 2, (args, p.stderr)
        failed_in_one_line(p, *words)
    v = cpos("--version")
    assert v.returncode == 0 and re.match(r"cpos \d+\.\d+\.\d+ \(firmware sources \S+\)$", v.stdout.strip()), v.stdout


def test_site_init_makes_a_site_once(tmp_path):
    site = tmp_path / "site"
    p = cpos("site", "init", "--site-dir", site, "--ledger", site / "ledger.sqlite")
    assert p.returncode == 0, p.stderr
    key = open(site / "site_key").read().strip()
    assert len(bytes.fromhex(key)) == 32 and oct(os.stat(site / "site_key").st_mode & 0o777) == "0o600"
    assert open(site / "acl").read() == broker_users.backend_acl()
    assert [l.split(":")[0] for l in open(site / "passwd").read().splitlines()] == ["backend", "backend-ctl"]
    led = Ledger(str(site / "ledger.sqlite"))
    assert led.db.execute("SELECT count(*) FROM terminals").fetchone() == (0,)
    led.close()
    before = folder_state(site)
    failed_in_one_line(cpos("site", "init", "--site-dir", site, "--ledger", tmp_path / "other.sqlite"),
                       "already holds a site")
    assert folder_state(site) == before and not os.path.exists(tmp_path / "other.sqlite")
    # a new site may take an existing ledger (the backend's own), which is kept as it is
    p = cpos("site", "init", "--site-dir", tmp_path / "site2", "--ledger", site / "ledger.sqlite")
    assert p.returncode == 0 and "kept the ledger" in p.stdout, p.stderr
    assert open(tmp_path / "site2" / "site_key").read().strip() != key


def test_provision_refuses_a_mistyped_site_or_ledger_and_writes_nothing(plug, bundles, tmp_path):
    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    args = provision_args(v, tmp_path)
    site = tmp_path / "site"
    state = folder_state(tmp_path)
    device = v.tree()

    def swap(flag, value):
        out = list(args)
        out[out.index(flag) + 1] = value
        return out

    failed_in_one_line(cpos(*swap("--site-dir", tmp_path / "sitee")), "does not exist", "cpos site init")
    failed_in_one_line(cpos(*swap("--ledger", site / "leger.sqlite")), "no ledger", "cpos site init")
    not_a_db = tmp_path / "ledger.txt"
    not_a_db.write_text("accounts\n")
    state[os.path.relpath(not_a_db, tmp_path)] = not_a_db.read_bytes()
    failed_in_one_line(cpos(*swap("--ledger", not_a_db)), "is not a ledger")  # it crashed after writing, once
    # more cards than the module's card table holds (host_tools/partitions.py)
    failed_in_one_line(cpos(*(args + ["--cards", "50000"])), "50000 cards do not fit", "4 MB", "module of 8 MB")
    failed_in_one_line(cpos(*(args + ["--cards", "240000", "--flash-mb", "16"])), "no module here holds")
    assert v.tree() == device and folder_state(tmp_path) == state  # no new site, key, login, config
    assert cpos(*(args + ["--cards", "23000"])).returncode == 0


def test_reprovisioning_keeps_earlier_settings_unless_told(plug, bundles, tmp_path):
    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    pos = '{"link": "uart", "uart": 1, "tx": 32, "rx": 33, "baud": 115200}'
    wifi = tmp_path / "wifi.txt"
    wifi.write_text("test-only\n")
    p = cpos(*provision_args(v, tmp_path, 7, "--set", "wifi.ssid=Kantine", "--wifi-password-file", wifi,
                             "--set", "pos=" + pos, "--set", "removal_window_ms=700"))
    assert p.returncode == 0, p.stderr
    first = json.loads(v.read("config.json"))
    p = cpos(*provision_args(v, tmp_path, 9, "--set", "removal_window_ms=900"))
    assert p.returncode == 0, p.stderr
    assert "kept from the terminal's earlier config: pos, wifi (--fresh drops them)" in p.stdout
    again = json.loads(v.read("config.json"))
    assert again["wifi"] == {"ssid": "Kantine", "password": "test-only"} and again["pos"] == json.loads(pos)
    assert again["removal_window_ms"] == 900 and again["terminal_id"] == "t0009"  # told: changed
    assert again["mqtt"]["password"] != first["mqtt"]["password"]
    p = cpos(*provision_args(v, tmp_path, 9, "--fresh"))
    assert p.returncode == 0 and "kept" not in p.stdout, p.stdout + p.stderr
    fresh = json.loads(v.read("config.json"))
    assert "wifi" not in fresh and "pos" not in fresh and "removal_window_ms" not in fresh
    # a config.json that is not JSON is not silently replaced
    with open(os.path.join(v.fs, "config.json"), "w") as f:
        f.write("{broken")
    before = v.tree()
    failed_in_one_line(cpos(*provision_args(v, tmp_path, 9)), "not a JSON object", "--fresh")
    assert v.tree() == before


def test_the_port_before_or_after_the_command_or_from_cpos_port(plug, bundles):
    v = plug()
    assert cpos("-p", v.port, "deploy", bundles["v1"]).returncode == 0
    s = json.loads(cpos("-p", v.port, "status", "--json").stdout)
    assert s["version"] == "v1"
    env = dict(os.environ, CPOS_PORT=v.port)
    p = subprocess.run([bundle.tool("cpos"), "status", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0 and json.loads(p.stdout)["version"] == "v1", p.stderr
    # -p wins over CPOS_PORT; a wrong CPOS_PORT is named in the one line
    env = dict(os.environ, CPOS_PORT="/dev/ttyCPOS-none")
    p = subprocess.run([bundle.tool("cpos"), "status", "-p", v.port, "--json"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([bundle.tool("cpos"), "logs"], capture_output=True, text=True, env=env, timeout=120)
    failed_in_one_line(p, "cannot open /dev/ttyCPOS-none")
    # flash takes no port from the environment: it erases a chip
    p = subprocess.run([bundle.tool("cpos"), "flash", "--image", "x.bin"], capture_output=True, text=True, env=env,
                       timeout=120)
    failed_in_one_line(p, "-p PORT", "CPOS_PORT and auto-detection are not used")


class _Port:
    def __init__(self, device, vid):
        self.device, self.vid = device, vid


def test_the_only_usb_serial_port_is_found_by_itself(plug, bundles, monkeypatch, capsys):
    from serial.tools import list_ports
    from host_tools import cli

    v = plug()
    monkeypatch.delenv("CPOS_PORT", raising=False)
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    monkeypatch.setattr(list_ports, "comports", lambda: [_Port("/dev/ttyS0", None), _Port(v.port, 0x10C4)])
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v1"
    monkeypatch.setattr(list_ports, "comports", lambda: [_Port("/dev/ttyS0", None)])
    assert cli.main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cpos status: no port given and no USB serial port found") and "-p PORT" in err
    monkeypatch.setattr(list_ports, "comports", lambda: [_Port("/dev/ttyUSB1", 0x10C4), _Port("/dev/ttyACM0", 0x303A)])
    assert cli.main(["logs"]) == 1
    err = capsys.readouterr().err
    assert "2 USB serial ports found (/dev/ttyACM0, /dev/ttyUSB1): choose one with -p" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setattr(list_ports, "comports", lambda: [_Port(v.port, 0x10C4)])
    assert cli.main(["flash", "--image", "x.bin"]) == 1  # never auto-detected for flash
    assert "-p PORT" in capsys.readouterr().err


def test_old_option_names_still_work_but_are_not_shown(tmp_path):
    site = site_init(tmp_path)
    dump = _journal_dump(tmp_path / "journal.bin")
    p = cpos("rescue", "--dump", dump, "--site", SITE, "--number", 7, "--ledger", site / "ledger.sqlite")
    assert p.returncode == 0 and "rescued 3 records of t0007" in p.stdout, p.stderr
    for c in ("rescue", "provision"):
        h = cpos(c, "--help").stdout
        assert "--terminal" in h and "--number" not in h


def test_provision_puts_no_password_on_a_command_line(plug, bundles, tmp_path, monkeypatch, capsys):
    """The config (broker password, Wi-Fi password, site key) reaches the device as a file, not
    as code on mpremote's command line, where any user of the laptop can read it (ps)."""
    from host_tools import cli, device as dev

    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    seen = []
    real = subprocess.run

    def spy(cmd, *a, **kw):
        seen.append(" ".join(map(str, cmd)))
        return real(cmd, *a, **kw)

    monkeypatch.setattr(dev.subprocess, "run", spy)
    wifi = tmp_path / "wifi.txt"
    wifi.write_text("wifi-secret-123\n")
    args = [str(x) for x in provision_args(v, tmp_path, 7, "--set", "wifi.ssid=Kantine",
                                           "--wifi-password-file", wifi)]
    assert cli.main(args) == 0, capsys.readouterr().err
    cfg = json.loads(v.read("config.json"))
    assert seen and any(" fs cp " in c for c in seen)
    assert cfg["wifi"]["password"] == "wifi-secret-123"
    for secret in (cfg["mqtt"]["password"], "wifi-secret-123", cfg["keys"]["down"], cfg["keys"]["up"]):
        assert not [c for c in seen if secret in c]


def test_live_rescue_of_a_terminal_whose_journal_is_erased_says_so(plug, bundles, tmp_path):
    """A terminal that never recorded a purchase (or whose journal partition is blank) is not
    reported as "rescued 0 records": the technician learns that no journal was there."""
    v = plug()
    assert cpos("deploy", "-p", v.port, bundles["v1"]).returncode == 0
    assert cpos(*provision_args(v, tmp_path)).returncode == 0
    ledger = tmp_path / "site" / "ledger.sqlite"
    before = folder_state(tmp_path / "site")
    p = cpos("rescue", "-p", v.port, "--ledger", ledger)
    failed_in_one_line(p, "the journal partition of %s holds no journal" % v.port, "all 0xFF", "nothing was submitted")
    assert folder_state(tmp_path / "site") == before
    _purchases(v, 2, 0)
    p = cpos("rescue", "-p", v.port, "--ledger", ledger)
    assert p.returncode == 0 and "rescued 2 records of t0007" in p.stdout, p.stderr
