"""Rescue the purchases of a dead terminal from a raw dump of its journal partition.

    python -m host_tools.rescue DUMPFILE [--offset N] [--size N] [--all]

DUMPFILE is what `esptool read-flash <partition offset> <partition size> DUMPFILE`
read off the terminal (or a whole-flash dump with --offset at the partition). Prints
one JSON object per purchase on stdout (the field names of docs/formats.md, `uid` in
hex), oldest first: by default the unacknowledged ones, with --all every record still
on flash, each with `"acked"`. Torn records fail their checksum and are skipped;
a summary goes to stderr. Uses the device's own decoder (cpos.journal, cpos.purchase),
so what it reads is what the terminal would have uploaded. Nothing is written.

It also reads every slot of every sector, not only the journal's ring: purchases in a
sector whose header decayed beyond repair and could not be placed in the ring (an
"orphan", cpos.journal) are found there and printed with the rest, in seq order; a
purchase one bit from valid is repaired (cpos.bitfix) as the terminal would.

A file that holds no journal ring (no sector starts with a valid journal header) is
refused with what it looks like instead (`identify`): an erased partition, a card-table
image, a whole-flash dump, a firmware image. Reporting "0 records" for such a file
would let a technician reflash a terminal whose purchases were never read.
"""
import argparse
import json
import os
import sys

from cpos import purchase
from cpos.bitfix import fix_one_bit
from cpos.blockdev import BLOCK_COUNT, BLOCK_ERASE, BLOCK_SIZE
from cpos.journal import Journal, SLOT


class DumpDevice:
    """Read-only block device over bytes: esp32.Partition's reading half."""

    def __init__(self, data, block=4096):
        self.data = memoryview(data)
        self.block = block

    def readblocks(self, block, buf, offset=0):
        start = block * self.block + offset
        if start < 0 or start + len(buf) > len(self.data):
            raise ValueError("read outside the dump")
        buf[:] = self.data[start:start + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        raise OSError("a rescue never writes")

    def ioctl(self, op, arg=0):
        if op == BLOCK_COUNT:
            return len(self.data) // self.block
        if op == BLOCK_SIZE:
            return self.block
        if op == BLOCK_ERASE:
            raise OSError("a rescue never erases")
        return 0


_JOURNAL_MAGIC = b"CPJ1"  # cpos.journal: each opened sector starts with it (docs/formats.md)
_CARDTABLE_MAGICS = (b"CPSB", b"CPCT")  # cpos.cards: commit records and image headers
JOURNAL_READ = "esptool read-flash 0x260000 0x40000 FILE"


def identify(data, block=4096):
    """None if `data` holds a journal ring (at least one sector with a valid journal
    header, even with no purchase in it), else one phrase saying what it is instead."""
    if len(data) < 2 * block:
        return "%d bytes: a journal partition has at least two %d-byte sectors" % (len(data), block)
    usable = len(data) - len(data) % block
    view = memoryview(data)
    starts = [bytes(view[i:i + 4]) for i in range(0, usable, block)]
    if len(data) > 0x8000 + 2 and data[0x8000:0x8002] == b"\xaa\x50":
        where = [i * block for i, st in enumerate(starts) if st == _JOURNAL_MAGIC]
        return ("a whole-flash dump (partition table at 0x8000)%s: read the journal partition alone, or "
                "print it with python -m host_tools.rescue FILE --offset 0x260000 --size 0x40000"
                % (", journal sectors from 0x%x" % where[0] if where else ""))
    j = Journal(DumpDevice(view[:usable], block))
    j.recover()
    if j.survey()["sectors"]:
        return None
    if data.count(0xFF) == len(data):
        return "all 0xFF: an erased partition (no purchase was ever written there, or the wrong address was read)"
    if data.count(0) == len(data):
        return "all zeros: not a flash read-out (nothing was read, or the wrong file)"
    if any(st in _CARDTABLE_MAGICS for st in starts):
        return "a card table image (the cardtable partition at 0x2a0000, not the journal at 0x260000)"
    if data[0] == 0xE9:
        return "an ESP32 firmware image (starts with the image magic 0xE9), not a journal"
    if any(st == _JOURNAL_MAGIC for st in starts):
        return "journal sector headers whose checksums all fail: a damaged journal"
    return "no journal sector header (CPJ1) in any of its %d sectors: not a journal partition" % (usable // block)


def read_dump(path):
    """The bytes of a dump file; ValueError (one line) if it cannot be read."""
    if os.path.isdir(path):
        raise ValueError("%s is a folder, not a dump file (%s)" % (path, JOURNAL_READ))
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError("cannot read %s (%s): give the file esptool wrote (%s)"
                         % (path, e.strerror or e, JOURNAL_READ))


def every_purchase(data, block=4096):
    """(seq, 64 record bytes) of every purchase in every slot of every sector, ring or
    not, valid or one bit from valid; a seq found twice keeps its first copy."""
    out = {}
    view = memoryview(data)
    for at in range(0, len(data) - len(data) % block, block):
        for slot in range(SLOT, block, SLOT):
            buf = bytearray(view[at + slot:at + slot + SLOT])
            if purchase.is_valid(buf) or (buf[0] in (purchase.TYPE, purchase.TYPE_REVERSAL) and fix_one_bit(buf, purchase.is_valid) >= 0):
                out.setdefault(purchase.seq_of(buf), bytes(buf))
    return out


def _records(data, include_acked, block):
    """(journal, {seq: record bytes}): what the terminal's own reading returns, plus every
    purchase above its watermark (or every one, `include_acked`) found outside its ring."""
    usable = len(data) - len(data) % block
    j = Journal(DumpDevice(memoryview(data)[:usable], block))
    j.recover()
    buf = bytearray(SLOT)
    got = {}
    seq = 0
    while True:
        r = j.read(seq, buf, include_acked)
        if r is None:
            break
        got[r] = bytes(buf)
        seq = r + 1
    extra = 0
    for s, rec in every_purchase(data, block).items():
        if s not in got and (include_acked or s > j.watermark):
            got[s] = rec
            extra += 1
    return j, got, extra


def rescue(data, include_acked=False, block=4096):
    """Yield (record dict in JSON form, acked) from a journal partition image, seq order."""
    j, got, _ = _records(data, include_acked, block)
    for s in sorted(got):
        yield purchase.to_json_obj(purchase.decode(got[s])), s <= j.watermark


def summary(data, block=4096):
    usable = len(data) - len(data) % block
    j = Journal(DumpDevice(memoryview(data)[:usable], block))
    j.recover()
    s = j.survey()
    s.update({"next_seq": j.next_seq, "watermark": j.watermark, "pending": j.pending(),
              "outside_ring": _records(data, False, block)[2]})
    s.update(j.damage())
    return s


# Runs on the terminal, which may hold no cpos package: the ioctl numbers travel with it.
_DUMP = "BLOCK_COUNT, BLOCK_SIZE = %d, %d\n" % (BLOCK_COUNT, BLOCK_SIZE) + """
import json, binascii
try:
    with open("/config.json") as f:
        cfg = json.loads(f.read())
except (OSError, ValueError):
    cfg = None
try:
    import board
    dev = board.block_device(cfg["storage"]["journal"])
except Exception:  # no deployed board module or config: the partition itself
    import esp32
    dev = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="journal")[0]
n, size = dev.ioctl(BLOCK_COUNT, 0), dev.ioctl(BLOCK_SIZE, 0)
print("CPOS-DUMP " + json.dumps({"blocks": n, "block": size, "config": cfg}))
buf = bytearray(size)
for i in range(n):
    dev.readblocks(i, buf)
    print("B%d " % i + binascii.b2a_base64(buf).decode().strip())
"""


def read_device(port):
    """(journal partition bytes, the terminal's config dict or None) read over mpremote."""
    import base64

    from host_tools import device

    out = device.mpremote(port, "exec", _DUMP, timeout=900)
    head, blocks = None, {}
    for line in out.splitlines():
        if line.startswith("CPOS-DUMP "):
            head = json.loads(line[10:])
        elif line.startswith("B") and " " in line:
            i, data = line[1:].split(" ", 1)
            blocks[int(i)] = base64.b64decode(data)
    if head is None or sorted(blocks) != list(range(head["blocks"])):
        raise device.DeviceError("%s did not give its whole journal partition: reconnect and run cpos rescue again, "
                                 "or read it with esptool read-flash and use --dump" % port)
    return b"".join(blocks[i] for i in range(head["blocks"])), head["config"]


def submit(ledger, site, number, data, include_acked=False, block=4096):
    """Hand the journal's records to the backend ledger in protocol batches, through the
    same apply_batch as the uplink; idempotent (the ledger keeps each terminal+seq once).
    A record whose seq the ledger already holds with different content (the terminal's
    journal was wiped or replaced since) is kept there as a conflict, not booked.
    A record the ledger's checks refuse (backend.trust: unknown account, a card not the
    account's, ...) is kept there for staff, not booked.
    Returns (records sent, new, duplicates, conflicts, refused)."""
    from cpos.net import messages

    tid = messages.terminal_id(number)
    recs = [r for r, _ in rescue(data, include_acked, block)]
    for r in recs:
        if r["terminal"] != number:
            raise ValueError("the journal holds records of terminal %d, not %d: check --terminal"
                             % (r["terminal"], number))
    lo = summary(data, block)["watermark"] + 1 if not include_acked else (recs[0]["seq"] if recs else 1)
    new = dup = conflicts = refused = 0
    per = 40  # records per batch: well under messages.MAX_PAYLOAD with 64-character items
    for i in range(0, len(recs), per):
        part = recs[i:i + per]
        applied = ledger.apply_batch(site, tid, messages.encode_batch(lo, part[-1]["seq"], part))
        new += applied.new_records
        dup += applied.duplicates
        conflicts += applied.conflicts
        refused += len(applied.refused)
        lo = part[-1]["seq"] + 1
    return len(recs), new, dup, conflicts, refused


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.rescue", description=__doc__.split("\n")[0])
    ap.add_argument("dump", help="raw image of the journal partition (esptool read-flash)")
    ap.add_argument("--offset", type=lambda x: int(x, 0), default=0, help="partition start in the dump")
    ap.add_argument("--size", type=lambda x: int(x, 0), default=None, help="partition size (default: to the end)")
    ap.add_argument("--all", action="store_true", help="also records already acknowledged")
    ap.add_argument("--sector", type=lambda x: int(x, 0), default=4096, help="erase sector size (4096)")
    a = ap.parse_args(argv)
    try:
        raw = read_dump(a.dump)
    except ValueError as e:
        print("rescue: %s" % e, file=sys.stderr)
        return 2
    end = len(raw) if a.size is None else a.offset + a.size
    if a.offset < 0 or end > len(raw) or a.offset >= end:
        print("rescue: offset/size outside the dump (%d bytes)" % len(raw), file=sys.stderr)
        return 2
    data = raw[a.offset:end]
    if len(data) < 2 * a.sector:
        print("rescue: a journal needs at least two sectors", file=sys.stderr)
        return 2
    what = identify(data, a.sector)
    if what is not None:
        print("rescue: %s is not a journal: %s; nothing printed (%s)" % (a.dump, what, JOURNAL_READ),
              file=sys.stderr)
        return 2
    n = 0
    for rec, acked in rescue(data, a.all, a.sector):
        if a.all:
            rec["acked"] = acked
        sys.stdout.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
        n += 1
    s = summary(data, a.sector)
    print("rescue: %d records printed; journal next seq %d, acknowledged up to %d, %d pending; "
          "%d sectors in the ring, %d torn slots skipped"
          % (n, s["next_seq"], s["watermark"], s["pending"], s["sectors"], s["torn"]), file=sys.stderr)
    if s["headers"] or s["orphans"] or s["repaired"] or s["outside_ring"]:
        print("rescue: flash decay: %d sector headers repaired or placed, %d sectors outside the ring (%d pending "
              "purchases read from them), %d records repaired by one bit"
              % (s["headers"], s["orphans"], s["outside_ring"], s["repaired"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
