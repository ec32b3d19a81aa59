"""The POS's TCP link (cpos.pos.link.TcpServer) on a real socket, CPython.

Right after a reset the previous run may still hold the port for a moment: the link
retries listening (a warning each time) and serves once the port is free. A till that
connects then talks to the POS server (cpos.pos.server) over it. The simulator's
terminals use the same link through the unix board (tests/test_firmware_e2e.py).
"""
import asyncio
import socket

from cpos import log, rules
from cpos.pos import link as poslink
from cpos.pos import server as posserver


def test_the_tcp_link_waits_for_a_held_port_and_then_serves():
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    lines = []
    srv = posserver.Server(rules.TILL, "t9", lambda: "LAST - 0\n", log.Log(lines.append))

    async def scenario():
        async def release():
            await asyncio.sleep(0.4)
            held.close()  # the previous run is gone

        asyncio.create_task(release())
        server = await poslink.make_link({"link": "tcp", "host": "127.0.0.1", "port": port}).serve(
            srv.session, srv.log)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PING\nPAY r1 100 x\n")
            replies = [await reader.readline(), await reader.readline()]
            writer.close()
            return replies
        finally:
            server.close()

    assert asyncio.run(scenario()) == [b"PONG t9\n", b"WAIT r1\n"]
    warned = [line for line in lines if line.startswith("W POS: cannot listen on 127.0.0.1:%d yet" % port)]
    assert warned and lines[len(warned)] == "I POS: listening on 127.0.0.1:%d" % port, lines
