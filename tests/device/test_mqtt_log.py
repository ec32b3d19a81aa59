"""What cpos.net.mqtt logs, and at which level, when the broker refuses it or sends garbage.

A broker refusing a subscription (SUBACK 0x80) is a security line: mosquitto 2.0 grants
every subscription and filters on delivery, so the packets come from a stand-in stream
here. A refused CONNECT (bad credentials) is the same level, through a real broker:
tests/test_mqtt_client.py::test_wrong_password_is_refused. Both runtimes."""
import asyncio

from cpos import log
from cpos.net.mqtt import MQTTClient
from broker_wire import Wire


def test_a_refused_subscription_is_a_security_line_and_a_malformed_publish_a_warning():
    lines = []
    c = MQTTClient("t0001", "127.0.0.1", log=log.Log(lines.append))
    c._reader = Wire(b"\x30\x01\x00"  # PUBLISH too short to hold a topic
                        b"\x90\x03\x00\x01\x80")  # SUBACK, packet id 1, return code 0x80: refused
    asyncio.run(c._reader_loop(None))
    assert lines == ["W mqtt: dropped malformed PUBLISH: bad PUBLISH", "S mqtt: subscription refused"], lines
    assert c.dropped_packets == 1 and str(c.last_error) == "connection closed"
