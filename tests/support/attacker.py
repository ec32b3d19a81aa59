"""An attacker's MQTT client for the security regression tests (docs/security.md's table).

A deliberately plain, blocking MQTT 3.1.1 client over a raw socket (TLS optional) that
does what a rogue device holding one terminal's credentials would: connect with any
client id, publish anything of any size on any topic, subscribe anywhere, and report
exactly what the broker answered (CONNACK code, SUBACK codes, PUBACK or a closed link).
It shares only the packet codec with the firmware (cpos.net.mqtt), so a bug in the
client under test cannot hide a hole in the broker.

`Attacker.for_terminal(broker, tid)` logs in as that terminal (its client certificate
on the TLS listener when the broker has one, else its password on the loopback port).
Tests for the backend's own checks (issue 14 point 4) use the same object.
"""
import socket
import ssl
import struct
import tempfile
import os

from cpos.net import mqtt

CONNACK_OK = 0


class LinkClosed(Exception):
    """The broker closed the connection (what it does to a client that breaks a rule)."""


class Attacker:
    def __init__(self, host, port, client_id, user=None, password=None, tls=None, server_hostname="localhost",
                 clean=True, timeout=5.0):
        raw = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(cadata=bytes.fromhex(tls["ca"]))
            if "cert" in tls:
                d = tempfile.mkdtemp()
                path = os.path.join(d, "c.pem")
                with open(path, "w") as f:
                    f.write(ssl.DER_cert_to_PEM_cert(bytes.fromhex(tls["cert"])))
                    import base64

                    b = base64.encodebytes(bytes.fromhex(tls["key"])).decode()
                    f.write("-----BEGIN PRIVATE KEY-----\n%s-----END PRIVATE KEY-----\n" % b)
                ctx.load_cert_chain(path)
                os.remove(path)
                os.rmdir(d)
            raw = ctx.wrap_socket(raw, server_hostname=server_hostname)
        self.sock = raw
        self.pid = 0
        self.sock.sendall(mqtt.connect_packet(client_id, user, password, 30, None, clean))
        first, body = self.read()
        if first != 0x20:
            raise AssertionError("expected CONNACK, got 0x%02x" % first)
        self.rc = body[1]

    @classmethod
    def for_terminal(cls, broker, tid, client_id=None, use_tls=None, **kw):
        """Logged in as terminal `tid` (stolen credentials), with any client id."""
        use_tls = broker.tls_port is not None if use_tls is None else use_tls
        if use_tls:
            return cls(broker.host, broker.tls_port, client_id or tid, tls=broker.terminal_tls(tid), **kw)
        return cls(broker.host, broker.port, client_id or tid, tid, broker.users[tid], **kw)

    def _recv(self, n):
        out = b""
        while len(out) < n:
            try:
                b = self.sock.recv(n - len(out))
            except (ConnectionError, ssl.SSLError) as e:
                raise LinkClosed(str(e))
            if not b:
                raise LinkClosed("closed")
            out += b
        return out

    def read(self):
        """(first byte, body) of the next packet; LinkClosed when the broker hung up."""
        first = self._recv(1)[0]
        n, shift = 0, 0
        while True:
            b = self._recv(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        return first, self._recv(n) if n else b""

    def next_pid(self):
        self.pid = self.pid % 65535 + 1
        return self.pid

    def publish(self, topic, payload, qos=1, retain=False):
        """Send a PUBLISH; at QoS 1 the PUBACK's arrival: True, or LinkClosed."""
        pid = self.next_pid() if qos else 0
        self.sock.sendall(mqtt.publish_header(topic, len(payload), qos, retain, pid) + payload)
        if not qos:
            return True
        while True:
            first, body = self.read()
            if first & 0xF0 == 0x40 and struct.unpack("!H", body)[0] == pid:
                return True

    def subscribe(self, topic, qos=1):
        """The SUBACK's return code: 0/1 granted, 0x80 refused."""
        pid = self.next_pid()
        self.sock.sendall(mqtt.subscribe_packet(pid, topic, qos))
        while True:
            first, body = self.read()
            if first == 0x90:
                return body[2]

    def messages(self, timeout=0.5):
        """PUBLISHes received until `timeout` s of silence: [(topic, payload)]."""
        out = []
        self.sock.settimeout(timeout)
        try:
            while True:
                first, body = self.read()
                if first & 0xF0 == 0x30:
                    topic, qos, pid, payload, _ = mqtt.parse_publish(first, body)
                    out.append((topic, payload))
                    if qos:
                        self.sock.sendall(mqtt.puback_packet(pid))
        except (socket.timeout, TimeoutError):
            pass
        return out

    def close(self):
        try:
            self.sock.sendall(mqtt.DISCONNECT)
        except OSError:
            pass
        self.sock.close()
