"""The card table: what the terminal knows of every card, on flash, kept live by deltas.

    layout.py      the on-flash byte format: UID hash, records, pages, image header
    delta.py       delta encoding (backend) and strict decoding (terminal)
    overlay.py     the deltas since the image, in two fixed-size RAM tables
    table.py       `CardTable`: lookups, deltas, snapshot installs, compaction
    install.py     image checks and compaction, loaded only when needed
    unincluded.py  this terminal's own purchases the synced table does not include yet

Format and mechanisms: docs/formats.md ("Card table"). Nothing is imported here.
"""
