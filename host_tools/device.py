"""Talking to a terminal over USB through the real `mpremote`: run code, copy files.

Owns the host's side of every device command: one `mpremote connect PORT ...` per
step, its failures turned into one line that says what to do (`DeviceError`), and
the check that the board is a CPOS terminal (MicroPython with the `journal` and
`cardtable` data partitions that `cpos flash` lays out). Device code sent here prints
one line `MARKER json` so that boot chatter never confuses the answer.
"""
import json
import subprocess

from host_tools.bundle import tool


class DeviceError(Exception):
    """A device step failed; the message is one line saying what to do."""


_PROBE = """
import sys, json
try:
    import esp32
    labels = [p.info()[4] for p in esp32.Partition.find(esp32.Partition.TYPE_DATA)]
except ImportError:
    labels = []
def _rd(p):
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError:
        return None
print("CPOS-PROBE " + json.dumps({"impl": sys.implementation.name, "platform": sys.platform,
      "partitions": labels, "active": _rd("/active"), "configured": _rd("/config.json") is not None}))
"""


def _explain(port, text):
    low = text.lower()
    if "failed to access" in low or "no such file" in low or "could not open port" in low:
        return "cannot open %s: check the USB cable and the port name (ls /dev/ttyUSB* /dev/ttyACM*)" % port
    if "could not enter raw repl" in low:
        return ("%s does not answer as MicroPython: not a CPOS terminal, or its app holds the port; "
                "hold BOOT while pressing EN (maintenance mode), or flash it with `cpos flash`" % port)
    if "disconnected" in low or "input/output error" in low or "readiness to read" in low or "ioerror" in low:
        return "lost the connection to %s (cable pulled or board reset): reconnect and run the command again" % port
    last = [l for l in text.strip().splitlines() if l.strip()]
    return "%s: %s" % (port, last[-1].strip() if last else "mpremote failed")


def mpremote(port, *args, timeout=300):
    """Run `mpremote connect PORT args...`; returns stdout or raises DeviceError."""
    try:
        p = subprocess.run([tool("mpremote"), "connect", port] + list(args),
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # mpremote waits for a silent port for ever
        raise DeviceError("%s does not answer as MicroPython within %d s: not a CPOS terminal, or it hangs; "
                          "press EN (reset) and try again" % (port, timeout))
    if p.returncode:
        raise DeviceError(_explain(port, p.stderr + "\n" + p.stdout))
    return p.stdout


PROBE_TIMEOUT = 15  # s: a board answers its first command in well under a second


def run(port, code, marker, timeout=300):
    """Execute `code` on the device; returns the JSON after the line `marker`."""
    out = mpremote(port, "exec", code, timeout=timeout)
    for line in out.splitlines():
        if line.startswith(marker + " "):
            return json.loads(line[len(marker) + 1:])
    raise DeviceError("%s gave no answer (%s): is it a CPOS terminal? output: %s"
                      % (port, marker, out.strip().splitlines()[-1:] or "nothing"))


def probe(port):
    return run(port, _PROBE, "CPOS-PROBE", timeout=PROBE_TIMEOUT)


def require_terminal(port):
    """The probe of a CPOS terminal, or DeviceError saying why this board is not one."""
    info = probe(port)
    if info["impl"] != "micropython":
        raise DeviceError("%s runs %s, not MicroPython: flash it with `cpos flash`" % (port, info["impl"]))
    missing = [p for p in ("journal", "cardtable") if p not in info["partitions"]]
    if missing:
        raise DeviceError("%s is not a CPOS terminal (no %s partition): flash the CPOS layout with `cpos flash`"
                          % (port, " or ".join(missing)))
    return info
