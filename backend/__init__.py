"""The reference backend (CPython): ledger in SQLite and its MQTT service.

`Ledger` (ledger.py) is the card system's state and the exactly-once apply;
`Backend` (service.py) connects it to the broker. `python -m backend`
runs it as a process (the fault tests kill it).
"""
from backend.ledger import Applied, Ledger, format_statement  # noqa: F401
from backend.service import Backend  # noqa: F401
