"""The CPOS flash layouts for 4, 8 and 16 MB ESP32 modules and their binary partition table.

Owns where the journal and card table live, and how many cards each layout holds.
MicroPython's own ESP32 layout is kept for the bootloader, NVS, PHY data and the app
(so a stock or custom MicroPython image runs unchanged: its app partition stays
0x1F0000 bytes at 0x10000), its filesystem `vfs` shrinks to 376 KB (the bundle is
about 150 KB of .mpy, plus config.json and the log), and three raw data partitions
follow (the MDB vend log's two sectors, docs/mdb.md, then journal and card table), found on the device by label with `esp32.Partition.find` (config.json:
`"storage": {"journal": {"partition": "journal"}, ...}`). The journal keeps 256 KB on
every module; the card table takes the rest of the flash.

The binary is ESP-IDF's partition table format: at flash offset 0x8000, 32-byte
entries (magic AA 50, type, subtype, offset, size little-endian, 16-byte label,
flags), then an MD5 entry (magic EB EB, 14 bytes FF, MD5 of the entries before it),
padded with FF to 0xC00 bytes.
"""
import hashlib
import struct

TABLE_OFFSET = 0x8000
TABLE_SIZE = 0xC00
APP, DATA = 0x00, 0x01
SUBTYPES = {"factory": 0x00, "phy": 0x01, "nvs": 0x02, "fat": 0x81, "cpos_journal": 0x40, "cpos_cards": 0x41,
            "cpos_mdb": 0x42}

# Cards per 4 KB image page: the benchmark's 100,000-card image packs 188.7 (records of
# 15-30 bytes: UID, account, balance, limits for a third, window totals for some); 170
# leaves 10 % for fatter records (10-byte UIDs, more limits). docs/formats.md.
CARDS_PER_PAGE = 170

_STOCK = (
    ("nvs", DATA, "nvs", 0x9000, 0x6000),
    ("phy_init", DATA, "phy", 0xF000, 0x1000),
    ("factory", APP, "factory", 0x10000, 0x1F0000),
    ("vfs", DATA, "fat", 0x200000, 0x5E000),
    ("mdbvend", DATA, "cpos_mdb", 0x25E000, 0x2000),
    ("journal", DATA, "cpos_journal", 0x260000, 0x40000),
)
_CARDS_AT = 0x2A0000


def _layout(flash_size):
    return _STOCK + (("cardtable", DATA, "cpos_cards", _CARDS_AT, flash_size - _CARDS_AT),)


# name, type, subtype, offset, size
LAYOUT_4MB = _layout(0x400000)
LAYOUT_8MB = _layout(0x800000)
LAYOUT_16MB = _layout(0x1000000)
LAYOUTS = {4: LAYOUT_4MB, 8: LAYOUT_8MB, 16: LAYOUT_16MB}  # by module flash size in MB


def partition(layout, name):
    """(offset, size) of partition `name` in `layout`."""
    for n, _, _, off, size in layout:
        if n == name:
            return off, size
    raise KeyError(name)


def card_capacity(layout=LAYOUT_4MB, cards_per_page=CARDS_PER_PAGE):
    """How many cards the layout's card table holds: the pages of one image slot (the
    other slot takes the next snapshot beside it) at `cards_per_page`, within the
    table's page limit. Geometry from cpos.cards.table.geometry, the device's own."""
    from cpos.cards.layout import MAX_PAGES
    from cpos.cards.table import geometry

    slot_len = geometry(partition(layout, "cardtable")[1] // 4096)[0]
    return min(MAX_PAGES, slot_len - 1) * cards_per_page


def check_cards(n_cards, flash_mb=4):
    """ValueError (one line) unless `n_cards` fit the card table of a `flash_mb` module."""
    if flash_mb not in LAYOUTS:
        raise ValueError("no CPOS layout for a %r MB module: 4, 8 or 16" % (flash_mb,))
    cap = card_capacity(LAYOUTS[flash_mb])
    if n_cards > cap:
        bigger = [mb for mb in sorted(LAYOUTS) if card_capacity(LAYOUTS[mb]) >= n_cards]
        raise ValueError("%d cards do not fit the card table of a %d MB module (it holds %d)%s"
                         % (n_cards, flash_mb, cap, "; a module of %d MB holds them" % bigger[0] if bigger
                            else "; no module here holds that many"))
    return cap


def csv(layout=LAYOUT_4MB):
    """The layout as ESP-IDF's partitions.csv (for a custom MicroPython build)."""
    lines = ["# Name, Type, SubType, Offset, Size, Flags"]
    for name, typ, sub, off, size in layout:
        sub_text = "0x%02x" % SUBTYPES[sub] if sub.startswith("cpos") else sub
        lines.append("%s, %s, %s, 0x%x, 0x%x," % (name, "app" if typ == APP else "data", sub_text, off, size))
    return "\n".join(lines) + "\n"


def check(layout=LAYOUT_4MB, flash_size=None):
    if flash_size is None:
        flash_size = layout[-1][3] + layout[-1][4]
    end = TABLE_OFFSET + TABLE_SIZE
    for name, typ, sub, off, size in layout:
        if off < end:
            raise ValueError("partition %s at 0x%x overlaps what comes before it" % (name, off))
        if off % 0x1000 or size % 0x1000 or (typ == APP and off % 0x10000):
            raise ValueError("partition %s is not aligned" % name)
        if len(name.encode()) > 15:
            raise ValueError("partition label %s is longer than 15 bytes" % name)
        end = off + size
    if end > flash_size:
        raise ValueError("layout ends at 0x%x, past the flash (0x%x)" % (end, flash_size))


def binary(layout=LAYOUT_4MB):
    check(layout)
    body = b"".join(struct.pack("<HBBII16sI", 0x50AA, typ, SUBTYPES[sub], off, size, name.encode(), 0)
                    for name, typ, sub, off, size in layout)
    body += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(body).digest()
    return body + b"\xff" * (TABLE_SIZE - len(body))


def parse(data):
    """[(name, type, subtype, offset, size)] of a table binary; ValueError if its MD5 is wrong."""
    out = []
    for i in range(0, TABLE_SIZE, 32):
        e = data[i:i + 32]
        magic = struct.unpack_from("<H", e)[0]
        if magic == 0xEBEB:
            if e[16:32] != hashlib.md5(data[:i]).digest():
                raise ValueError("partition table MD5 does not match")
            return out
        if magic != 0x50AA:
            break
        _, typ, sub, off, size, label, _ = struct.unpack("<HBBII16sI", e)
        out.append((label.rstrip(b"\0").decode(), typ, sub, off, size))
    raise ValueError("partition table has no MD5 entry")


def patch_image(image, layout=LAYOUT_4MB, image_offset=0x1000):
    """A combined MicroPython image (bootloader, table, app; flashed at 0x1000) with its
    partition table replaced by the CPOS layout. ValueError if it is not such an image
    or its app does not fit the factory partition."""
    at = TABLE_OFFSET - image_offset
    try:
        old = parse(image[at:at + TABLE_SIZE])
    except (ValueError, struct.error):
        raise ValueError("not a combined MicroPython ESP32 image (no partition table at 0x%x): "
                         "use the .bin for address 0x1000 from micropython.org" % TABLE_OFFSET)
    apps = [e for e in old if e[1] == APP]
    mine = [e for e in layout if e[1] == APP]
    if not apps or apps[0][3] != mine[0][3]:
        raise ValueError("the image's app is not at 0x%x: not a MicroPython ESP32 image" % mine[0][3])
    app_bytes = len(image) - (mine[0][3] - image_offset)
    if app_bytes > mine[0][4]:
        raise ValueError("the image's app (%d bytes) does not fit the %d-byte factory partition" % (app_bytes, mine[0][4]))
    return image[:at] + binary(layout) + image[at + TABLE_SIZE:]
