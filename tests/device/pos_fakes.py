"""A till's end of a POS link for device tests (test_pos_server.py, test_app*.py).

`Writer` records the reply lines the till heard; `Script` is the incoming side, the
request lines in order.
"""


class Writer:
    """The till's end of the link: the lines it heard."""

    def __init__(self):
        self.lines = []

    def write(self, data):
        self.lines.append(bytes(data).decode().strip())

    async def drain(self):
        pass

    def close(self):
        pass


class Script:
    """A POS link's incoming side: the lines in order; a callable in between runs first
    (a tap, a check), as if it happened while the terminal waited for the next line."""

    def __init__(self, items):
        self.items = list(items)

    async def read(self, n=-1):  # the server reads with a fixed bound (cpos.pos.bounded)
        return await self.readline()

    async def readline(self):
        while self.items:
            item = self.items.pop(0)
            if callable(item):
                await item()
            else:
                return item
        return b""
