"""The broker's side of an MQTT client's socket, for tests that feed the client chosen bytes:
`client._reader = Wire(data)`. Runs on MicroPython and CPython; it imports nothing, so a test
can also send its source to a device (tests/test_technician_cli.py)."""


class Wire:
    """Hands out `data`, then ends as a closed connection does."""

    def __init__(self, data):
        self.data = data

    async def readexactly(self, n):
        if len(self.data) < n:
            raise EOFError
        b = self.data[:n]
        self.data = self.data[n:]
        return b
