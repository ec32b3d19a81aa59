"""Processes of the downlink tests and benchmark: the backend with a site key and stand-in
sync terminals (tests/device/standin_sync.py on MicroPython or CPython), whose `STATE`
lines a reader thread turns into the latest state, time-stamped on arrival."""
import json
import os
import queue
import subprocess
import sys
import threading
import time

from runtimes import ROOT, DEVICE_TESTS, cpython_env, micropython_cmd, micropython_env

STANDIN = os.path.join(DEVICE_TESTS, "standin_sync.py")
KEY = bytes(range(32))
UID = "04a1b2c3d4e5f6"  # the watched card of every stand-in


def terminal_down_key(master, terminal, generation=0):
    """What terminal `terminal`'s config holds to verify its downlink: its own key, derived
    from the site's master (backend/site_keys.py), never the master itself."""
    from cpos.net import signing

    return signing.derive(master, signing.DOWN, "t%04d" % terminal, generation)


def seed(led, site, terminals=(1,), balance=10000):
    """One account with the watched card and a second card, the terminals registered."""
    acc = led.add_account("Ada", balance)
    led.allow_place(acc, 0)
    led.allow_place(acc, 1)
    led.add_card(UID, "884263sae", acc)
    led.add_card("11223344", "728F9661", acc)
    for n in terminals:
        led.add_terminal(n, site, 0, 0)
    return acc


def start_backend(broker, db, poll_ms=20):
    cmd = [sys.executable, "-m", "backend", "--db", db, "--port", str(broker.port),
           "--password-file", broker.secret_file("backend.password", broker.users["backend"]),
           "--site-key-file", "%s=%s" % (broker.site, broker.secret_file("site_key", KEY.hex())),
           "--poll-ms", str(poll_ms)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=cpython_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "backend up", p.stderr.read()
    return p


class Standin:
    def __init__(self, runtime, workdir, broker, terminal=1, key=KEY, port=None):
        self.dir = os.path.join(workdir, "t%d" % terminal)
        os.makedirs(self.dir, exist_ok=True)
        self.flash = os.path.join(self.dir, "cards.bin")
        self.args = [self.flash, broker.host, str(port or broker.port), broker.site, str(terminal),
                     broker.users["t%04d" % terminal], terminal_down_key(key, terminal).hex(), UID, self.dir]
        self.runtime = runtime
        self.proc = None
        self.start()

    def start(self):
        if self.runtime == "micropython":
            cmd, env = micropython_cmd(STANDIN, *self.args), micropython_env()
        else:
            cmd, env = [sys.executable, STANDIN] + self.args, cpython_env()
        self.state = None
        self.at = 0.0  # when the latest state arrived
        self.logs = []
        self.decisions = queue.Queue()
        self._cv = threading.Condition()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc):
        for line in proc.stdout:
            now = time.monotonic()
            with self._cv:
                if line.startswith("STATE "):
                    self.state = json.loads(line[6:])
                    self.at = now
                elif line.startswith("LOG "):
                    self.logs.append(line[4:].strip())
                elif line.startswith("DECISION "):
                    self.decisions.put(line.split()[1:])
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def wait(self, pred, timeout=20):
        """The first state (from now on, or the current one) for which pred holds."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                if self.state is not None and pred(self.state):
                    return self.state
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError("condition not reached; last state %r; stderr %s" % (
                        self.state, "" if self.proc.poll() is None else self.proc.stderr.read()[-2000:]))
                self._cv.wait(min(left, 0.5))

    def tap(self, amount, timeout=10):
        with open(os.path.join(self.dir, "tap.tmp"), "w") as f:
            f.write(str(amount))
        os.rename(os.path.join(self.dir, "tap.tmp"), os.path.join(self.dir, "tap"))
        reason, ms = self.decisions.get(timeout=timeout)
        return reason, int(ms)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        open(os.path.join(self.dir, "stop"), "w").close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.remove(os.path.join(self.dir, "stop"))

    def kill(self):
        self.proc.kill()
        self.proc.wait()


class Link:
    """A TCP relay between one terminal and the broker whose `cut()` is the terminal's
    Wi-Fi going away (connections dropped, new ones refused) and `restore()` its return;
    the broker and the backend stay up."""

    def __init__(self, broker):
        import socket

        self.target = (broker.host, broker.port)
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.up = True
        self.conns = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket

        while True:
            try:
                a, _ = self.srv.accept()
            except OSError:
                return
            if not self.up:
                a.close()
                continue
            try:
                b = socket.create_connection(self.target)
            except OSError:
                a.close()
                continue
            with self._lock:
                self.conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    def _pipe(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        import socket

        self.up = False
        with self._lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass
            self.conns = []

    def restore(self):
        self.up = True

    def close(self):
        self.cut()
        self.srv.close()


def publish_raw(broker, topic, payload, user="injector"):
    """Publish bytes as `user` (QoS 1) on a connection of its own: the attacker's, or a
    replayer's, tool. The backend user may write every terminal's downlink."""
    import asyncio

    from cpos.net.mqtt import MQTTClient

    async def go():
        c = MQTTClient("injector", broker.host, broker.port, user, broker.users[user], keepalive=10)
        task = asyncio.create_task(c.run())
        assert await c.wait_connected(5000)
        assert await c.publish(topic, payload, qos=1)
        await c.stop()
        task.cancel()

    asyncio.run(asyncio.wait_for(go(), 20))
