"""The card table: what the terminal knows of every card, on flash, kept live by deltas.

    layout.py      the on-flash byte format: UID hash, records, pages, image header
    delta.py       delta encoding (backend) and strict decoding (terminal)
    changes.py     the change store: every delta since the image, in buckets by account, on flash
    overlay.py     the card changes since the image (status, new cards), in a fixed-size RAM table
    table.py       `CardTable`: lookups, deltas, snapshot installs, bounded upkeep steps
    install.py     receiving a snapshot and checking it page by page, loaded only when needed
    unincluded.py  this terminal's own purchases the synced table does not include yet

Format and mechanisms: docs/formats.md ("Card table"). Nothing is imported here.
"""
