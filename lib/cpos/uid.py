"""Card UIDs: an ISO 14443-A UID is 4, 7 or 10 bytes (single, double, triple size).

One definition for the reader, the purchase record, the card table and the backend.
"""
from cpos.compat import const

UID_LENGTHS = (4, 7, 10)  # index = the UID kind stored in a card-table record
UID_MAX = const(10)


def uid_kind(n):
    """0, 1, 2 for a 4-, 7-, 10-byte UID; -1 for any other length."""
    if n == 4:
        return 0
    if n == 7:
        return 1
    if n == 10:
        return 2
    return -1
