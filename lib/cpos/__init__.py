"""CPOS Terminal shared logic: runtime-neutral code for MicroPython and CPython.

Every module in this package must compile with mpy-cross and run unchanged on the
MicroPython unix port, on an ESP32 and on CPython.
"""
