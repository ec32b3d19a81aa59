"""The terminal's status as one JSON object, computed on the device by `cpos status`.

Owns the figures a technician asks for: running version, configuration identity,
journal fill, oldest unacknowledged record and flash decay found (`journal.decay`:
headers repaired or placed, orphan sectors, records repaired), card-table version and state, and what
the last health report of the running app said (uptime at that moment, reader errors,
uplink/broker state, whatever App.health() reported) and the count of boots, errors
and security events in the on-flash log (cpos.devlog), plus Wi-Fi where the board has
it. Runs with the app stopped (mpremote interrupts it): it recovers the journal
read-only in effect, exactly as a boot does, and mounts the card table. `main()`
prints the object with the marker `CPOS-STATUS`.
"""
import json

import board
from cpos import config, devlog

_TABLE_STATES = ("empty", "ok", "broken")


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _journal(cfg, out):
    from cpos import purchase
    from cpos.journal import Journal

    j = Journal(board.block_device(cfg.storage["journal"]))
    j.recover()
    used, total = j.fill()
    out["journal"] = {"used": used, "total": total, "next_seq": j.next_seq, "acked": j.watermark,
                      "pending": j.pending(), "oldest_unacked": j.oldest_unacked()}
    d = j.damage()  # flash decay the recovery found (cpos.journal); records: those read below
    if d["headers"] or d["orphans"]:
        out["journal"]["decay"] = d
    seq = j.oldest_unacked()
    if seq is not None:
        buf = bytearray(64)
        if j.read(seq, buf) is not None:
            out["journal"]["oldest_unacked_t"] = purchase.decode(buf)["t"]


def _table(cfg, out):
    from cpos.cards.table import CardTable

    t = CardTable(board.block_device(cfg.storage["cardtable"]))
    t.mount()
    out["cardtable"] = {"version": t.version, "state": _TABLE_STATES[t.state],
                        "included_seq": t.included_seq, "cards": t.n_cards}


def _wifi(out):
    try:
        import network
    except ImportError:
        return
    w = network.WLAN(network.STA_IF)
    out["wifi"] = {"active": w.active(), "connected": w.isconnected(),
                   "ip": w.ifconfig()[0] if w.isconnected() else None}


def _log(out):
    path = getattr(board, "log_path", None)
    lines = devlog.read(path()) if path else []
    boot = None
    for t, line in lines:
        if line == "I boot":
            boot = t
        elif line.startswith("I health "):
            out["health"] = line[len("I health "):]
            out["health_t"] = t
            if boot is not None:
                out["uptime_s"] = t - boot
    out["boots_logged"] = sum(1 for _, l in lines if l == "I boot")
    out["errors_logged"] = sum(1 for _, l in lines if l.startswith("E "))
    out["security_logged"] = sum(1 for _, l in lines if l.startswith("S "))


def report():
    out = {"cpos": 1, "board": board.NAME, "now": board.now(), "active": _read("/active")}
    manifest = _read("manifest.json")
    out["version"] = json.loads(manifest)["version"] if manifest else None
    try:
        cfg = config.load(board.config_path())
    except config.ConfigError as e:
        out["config_error"] = str(e)
        cfg = None
    if cfg is not None:
        out["terminal_id"], out["site"] = cfg.terminal_id, cfg.site
        for part in (_journal, _table):
            try:
                part(cfg, out)
            except Exception as e:  # noqa: BLE001 - report what can be read, name what cannot
                out[part.__name__[1:] + "_error"] = "%s: %s" % (type(e).__name__, e)
    _log(out)
    _wifi(out)
    return out


def main():
    print("CPOS-STATUS " + json.dumps(report()))
