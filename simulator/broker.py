"""A real mosquitto broker of a site: free loopback port, generated config, users and ACL.

Used by the simulator (`python -m simulator run` with an uplink) and by every test that
needs a broker (tests/conftest.py `broker` fixture).

Each terminal gets its own username (its terminal id, e.g. `t0001`), password and ACL
block, as backend/broker_users.py writes them for a real site (mosquitto installed by
scripts/ensure-mosquitto.sh). Persistence is off unless asked for. stop()/start()/kill()
let a test take the broker away and bring it back on the same port.
"""
import os
import pwd
import signal
import socket
import subprocess
import time

from backend.broker_users import BACKEND_USER, backend_acl, find_tool, new_password, terminal_acl
from cpos.net.messages import terminal_id
from simulator.terminal import free_port

SITE = "skole-nord"


class Broker:
    def __init__(self, workdir, site=SITE, terminals=(1, 2, 3), persistence=False, port=None):
        self.dir = workdir
        self.site = site
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.persistence = persistence
        self.users = {BACKEND_USER: new_password()}
        for n in terminals:
            self.users[terminal_id(n)] = new_password()
        self.proc = None
        os.makedirs(workdir, exist_ok=True)
        self.conf = os.path.join(workdir, "mosquitto.conf")
        self.log = os.path.join(workdir, "mosquitto.log")
        self._write_files(terminals)

    def _write_files(self, terminals):
        pw = os.path.join(self.dir, "passwd")
        with open(pw, "w") as f:
            for u, p in self.users.items():
                f.write("%s:%s\n" % (u, p))
        subprocess.run([find_tool("mosquitto_passwd"), "-U", pw], check=True, capture_output=True)
        os.chmod(pw, 0o600)
        acl = os.path.join(self.dir, "acl")
        with open(acl, "w") as f:
            f.write(backend_acl())
            for n in terminals:
                f.write(terminal_acl(self.site, terminal_id(n)))
        os.chmod(acl, 0o600)
        lines = [
            # Started as root (CI), mosquitto would switch to user `mosquitto`, who cannot
            # read this test's files: stay the user who runs the tests.
            "user " + pwd.getpwuid(os.geteuid()).pw_name,
            "listener %d 127.0.0.1" % self.port,
            "allow_anonymous false",
            "password_file " + pw,
            "acl_file " + acl,
            "log_dest file " + self.log,
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_inflight_messages 20",
            "max_queued_messages 100000",
        ]
        if self.persistence:
            lines += ["persistence true", "persistence_location " + self.dir + "/",
                      "autosave_interval 1"]
        else:
            lines.append("persistence false")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=10):
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen([find_tool("mosquitto"), "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited: %s" % self.proc.stderr.read().decode())
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not listen on %d" % self.port)

    def stop(self):
        """Graceful stop (SIGTERM): connections close, in-memory state is lost unless persisted."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self):
        self.stop()
        return self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None
