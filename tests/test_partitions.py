"""The flash layouts for 4, 8 and 16 MB modules (host_tools/partitions.py): valid tables that
keep MicroPython's stock app partition, the card counts docs/technician.md states, the
card-count check `cpos provision` uses, and the geometry the card-table tests call shipped."""
import os
import re

import pytest

from host_tools import bundle, partitions
from tests.device import cardtable_model


@pytest.mark.parametrize("mb", [4, 8, 16])
def test_each_layout_is_a_valid_table_that_keeps_the_stock_app(mb):
    layout = partitions.LAYOUTS[mb]
    partitions.check(layout, mb << 20)
    assert partitions.partition(layout, "factory") == (0x10000, 0x1F0000)
    off, size = partitions.partition(layout, "cardtable")
    assert off + size == mb << 20 and size % 4096 == 0
    assert partitions.parse(partitions.binary(layout)) == [
        (n, t, partitions.SUBTYPES[s], o, z) for n, t, s, o, z in layout]


def test_card_counts_match_the_technician_guide():
    doc = open(os.path.join(bundle.ROOT, "docs", "technician.md")).read()
    for mb in (4, 8, 16):
        cap = partitions.card_capacity(partitions.LAYOUTS[mb])
        assert re.search(r"\| %d MB \| [^|]+ \| %s \|" % (mb, format(cap, ",")), doc), (mb, cap)
    assert partitions.card_capacity(partitions.LAYOUT_4MB) < partitions.card_capacity(partitions.LAYOUT_8MB) \
        < partitions.card_capacity(partitions.LAYOUT_16MB)


def test_a_card_count_that_does_not_fit_is_refused_with_the_module_that_would_do():
    cap4 = partitions.check_cards(100, 4)
    assert partitions.check_cards(cap4, 4) == cap4
    with pytest.raises(ValueError, match="a module of 8 MB holds them"):
        partitions.check_cards(cap4 + 1, 4)
    with pytest.raises(ValueError, match="no module here holds"):
        partitions.check_cards(10 ** 6, 16)
    with pytest.raises(ValueError, match="4, 8 or 16"):
        partitions.check_cards(1, 2)


def test_the_card_table_tests_run_the_shipped_geometry():
    assert partitions.partition(partitions.LAYOUT_4MB, "cardtable")[1] == cardtable_model.SHIPPED_BLOCKS * 4096
