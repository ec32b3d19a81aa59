"""A real mosquitto broker of a site: free loopback port, generated config, users and ACL.

Used by the simulator (`python -m simulator run` with an uplink) and by every test that
needs a broker (tests/conftest.py `broker` fixture).

Each terminal gets its own username (its terminal id, e.g. `t0001`), password and ACL
block, as backend/broker_users.py writes them for a real site (mosquitto installed by
scripts/ensure-mosquitto.sh); the configuration is a site's own (backend/broker_conf.py:
client id bound to the login, packet size, queues, logging). With `tls=True` it also
has the site's TLS listener (`tls_port`): a CA and broker certificate made here
(host_tools/site_pki.py) and a client certificate per terminal (`terminal_tls(tid)`
gives the config's `mqtt.tls`). Persistence is off unless asked for.
stop()/start()/kill() let a test take the broker away and bring it back on the same port.
"""
import os
import pwd
import signal
import socket
import subprocess
import time

from backend import broker_conf
from backend.broker_users import BACKEND_CONTROL_USER, BACKEND_USER, backend_acl, find_tool, new_password, terminal_acl
from cpos.net.messages import terminal_id
from simulator.terminal import free_port

SITE = "skole-nord"
INJECTOR = "injector"


class Broker:
    def __init__(self, workdir, site=SITE, terminals=(1, 2, 3), persistence=False, port=None, tls=False):
        self.dir = workdir
        self.site = site
        self.port = port or free_port()
        self.tls_port = free_port() if tls else None
        self.tls = {}  # tid -> its config's mqtt.tls (hex DER)
        self.host = "127.0.0.1"
        self.persistence = persistence
        # `injector`: a second login with the backend's rights, for tests that publish as
        # the backend would without taking over the backend's own session (the broker binds
        # the client id to the login: docs/broker.md).
        self.users = {BACKEND_USER: new_password(), INJECTOR: new_password()}
        self.users[BACKEND_CONTROL_USER] = self.users[BACKEND_USER]  # the backend's second connection
        for n in terminals:
            self.users[terminal_id(n)] = new_password()
        self.proc = None
        os.makedirs(workdir, exist_ok=True)
        self.conf = os.path.join(workdir, "mosquitto.conf")
        self.log = os.path.join(workdir, "mosquitto.log")
        self._write_files(terminals)

    def _write_files(self, terminals):
        pw = os.path.join(self.dir, "passwd")
        with os.fdopen(os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            for u, p in self.users.items():
                f.write("%s:%s\n" % (u, p))
        subprocess.run([find_tool("mosquitto_passwd"), "-U", pw], check=True, capture_output=True)
        os.chmod(pw, 0o600)
        acl = os.path.join(self.dir, "acl")
        with open(acl, "w") as f:
            f.write(backend_acl())
            f.write(backend_acl(INJECTOR))
            for n in terminals:
                f.write(terminal_acl(self.site, terminal_id(n)))
        os.chmod(acl, 0o600)
        tls = {}
        if self.tls_port is not None:
            tls = self._make_certs(terminals)
        # Started as root (CI), mosquitto would switch to user `mosquitto`, who cannot
        # read this test's files: stay the user who runs the tests.
        text = broker_conf.conf(self.port, self.log, pw, acl, tls_port=self.tls_port, tls_bind="127.0.0.1",
                                persistence_dir=self.dir if self.persistence else None,
                                run_as=pwd.getpwuid(os.geteuid()).pw_name, **tls)
        with open(self.conf, "w") as f:
            f.write(text)

    def _make_certs(self, terminals):
        from host_tools import site_pki

        d = os.path.join(self.dir, "pki")
        os.makedirs(d, exist_ok=True)
        site_pki.make_ca(d, self.site)
        site_pki.make_broker(d, self.site, ["localhost", "127.0.0.1"])
        self.ca_der = site_pki.der(site_pki.ca_pem(d))
        self.pki = d
        for n in terminals:
            tid = terminal_id(n)
            self.tls[tid] = self.client_tls(tid)
        return {"cafile": os.path.join(d, site_pki.CA_CERT), "certfile": os.path.join(d, site_pki.BROKER_CERT),
                "keyfile": os.path.join(d, site_pki.BROKER_KEY)}

    def client_tls(self, cn):
        """A fresh client certificate for login `cn`, as a config's `mqtt.tls` (hex DER)."""
        from host_tools import site_pki

        cert, key = site_pki.make_client(self.pki, self.site, cn)
        return {"ca": self.ca_der.hex(), "cert": site_pki.der(cert).hex(), "key": site_pki.der_key(key).hex()}

    def terminal_tls(self, tid):
        return self.tls[tid]

    def secret_file(self, name, text):
        """A file of this broker's folder holding a secret (mode 0600): how a test hands the
        backend its password or a site key (never on a command line)."""
        path = os.path.join(self.dir, name)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text + "\n")
        return path

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
