"""A fake board and till for the firmware application's device tests (test_app*.py).

The board gives the app file-backed flash (in $CPOS_TMP, one folder per test process),
recorded outputs and a counting watchdog; the PN532 is not involved
(tests/test_firmware_e2e.py drives the whole board through the emulator). The card
table holds three cards of three accounts:

    UID      account 1, 100 kr.
    LIMITED  account 2, 100 kr., school day limit 30 kr.
    LOW      account 3, 10 kr., enrolled in automatic top-up (200 kr.)

Kept lean: each test runs in a fresh MicroPython heap under the WROOM cap, which the
app's own modules already fill by half.
"""
import asyncio
import os

from cpos import config, log, purchase, rules
from cpos.cards import layout
from cpos.cards import table as cardtable
from cpos.blockfile import BlockFile
from cpos.compat import ticks_ms
from cpos.journal import Journal

from app import App
from pos_fakes import Writer

NOW = 1764068400
UID = b"\x04\x11\x22\x33"
LIMITED = b"\x04\x11\x22\x44"
LOW = b"\x04\x11\x22\x55"
_DIR = (os.getenv("CPOS_TMP") or "/tmp") + "/cpos_test_app_"  # a folder of this process's own


def cfg(kind="till", offline=None):
    d = {"terminal_id": "t9", "terminal_no": 9, "site": "test", "place": "school", "kind": kind,
         "pn532": {"link": "tcp", "host": "127.0.0.1", "port": 1}, "pos": {"link": "none"},
         "storage": {"journal": {"file": _DIR + "journal.bin", "size": 4 * 4096},
                     "cardtable": {"file": _DIR + "cards.bin", "size": 16 * 4096}}}
    if offline is not None:
        d["offline"] = offline
    return config.validate(d)


class Outputs:
    def __init__(self):
        self.events = []

    def led(self, c):
        self.events.append(("led", c))

    def buzzer(self, on):
        self.events.append(("buzz", on))

    def display(self, page):
        self.events.append(("display", page.da))


class Board:
    def __init__(self):
        self.out = Outputs()
        self.feeds = 0
        self.t = NOW
        self.devs = []

    def block_device(self, spec):
        d = BlockFile(spec["file"], spec["size"])
        self.devs.append(d)
        return d

    def outputs(self, spec):
        return self.out

    def pos_link(self, spec):
        return None  # cfg() has no POS ("link": "none"): tests call app.pos.session themselves

    def now(self):
        return self.t

    def watchdog(self, ms):
        return self

    def feed(self):
        self.feeds += 1

    def close(self):
        for d in self.devs:
            d.close()


def fresh_flash():
    """Erased journal, and a card table holding the three cards above."""
    import gc

    gc.collect()  # the previous test's apps are garbage: their 4 KB block buffers with them
    for name in ("journal.bin", "cards.bin"):
        try:
            os.remove(_DIR + name)
        except OSError:
            pass
    c = cfg()
    dev = BlockFile(c.storage["cardtable"]["file"], c.storage["cardtable"]["size"])
    free = [rules.NO_LIMIT] * 6
    limits = [rules.NO_LIMIT] * 6
    limits[rules.slot(rules.PLACE_SCHOOL, 0)] = 3000
    accounts = {1: (10000, rules.ALL_PLACES, free, False, 0, (0, 0, 0), [0] * 6),
                2: (10000, rules.ALL_PLACES, limits, False, 0, (0, 0, 0), [0] * 6),
                3: (1000, rules.ALL_PLACES, free, True, 200, (0, 0, 0), [0] * 6)}
    # The image streams into the table a block at a time, as snapshots arrive: one 8 KB
    # piece for the whole image would leave the capped heap no room for the app's tests.
    b = layout.ImageBuilder([(UID, 1, rules.ACTIVE), (LIMITED, 2, rules.ACTIVE), (LOW, 3, rules.ACTIVE)],
                             accounts, 1, 0)
    t = cardtable.CardTable(dev)
    t.mount()
    assert t.install_begin(1, 0, b.n_pages + 1) == cardtable.INSTALL_OK
    got = []
    b.write(lambda block: got.append(t.install_chunk(len(got), block)))
    assert got == [cardtable.INSTALL_OK] * (b.n_pages + 1), got
    assert t.install_commit() == cardtable.INSTALL_OK
    dev.close()
    BlockFile(c.storage["journal"]["file"], c.storage["journal"]["size"]).close()


def boot(board, kind="till", offline=None):
    """A new App on the board's flash, recovered, as after a reset."""
    import gc

    gc.collect()  # several boots in one process here; a device boots once per reset
    app = App(board, cfg(kind, offline), log.Log(lambda line: None))
    app.recover()
    return app


class LostWriter(Writer):
    """A link that died: the reply never reaches the till."""

    def write(self, data):
        raise OSError("link down")


class CheckingWriter(Writer):
    """A till link that, as each approval arrives, reads the journal back from flash."""

    def __init__(self):
        Writer.__init__(self)
        self.on_flash = []

    def write(self, data):
        Writer.write(self, data)
        line = self.lines[-1]
        if line.startswith("APPROVED"):
            seq = int(line.split()[2])
            c = cfg()
            dev = BlockFile(c.storage["journal"]["file"], c.storage["journal"]["size"])
            j = Journal(dev)
            j.recover()
            buf = bytearray(purchase.SIZE)
            found = j.read(seq, buf, True)
            self.on_flash.append(found == seq and purchase.decode(buf)["amount"])
            dev.close()


def pay(app, writer, amount, uid=UID, ref="r1"):
    """The till opens a payment and the card is tapped."""
    app.pos.request.set(ref, amount, "1x Test", writer)
    asyncio.run(app.on_tap(memoryview(uid), ticks_ms()))
