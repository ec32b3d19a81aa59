"""Runtime shims so shared code reads the same on MicroPython and CPython.

Owns: `const`, millisecond/microsecond tick helpers, `sleep_ms`, `wait_for_ms` and `wait_event_ms` for asyncio, and
printing an exception to a stream. Nothing else belongs here.
"""
try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


import time

try:
    ticks_ms = time.ticks_ms
    ticks_us = time.ticks_us
    ticks_diff = time.ticks_diff
except AttributeError:  # CPython

    def ticks_ms():
        return time.monotonic_ns() // 1000000

    def ticks_us():
        return time.monotonic_ns() // 1000

    def ticks_diff(end, start):
        return end - start


try:
    from asyncio import sleep_ms  # MicroPython
except ImportError:  # CPython

    async def sleep_ms(ms):
        import asyncio

        await asyncio.sleep(ms / 1000)


async def wait_for_ms(aw, ms):
    """asyncio.wait_for with a timeout in ms (asyncio.TimeoutError when it runs out)."""
    import asyncio

    if hasattr(asyncio, "wait_for_ms"):
        return await asyncio.wait_for_ms(aw, ms)
    return await asyncio.wait_for(aw, ms / 1000)


async def wait_event_ms(event, ms):
    """Wait for an asyncio.Event at most `ms`; True if it was set, False on timeout."""
    import asyncio

    try:
        await wait_for_ms(event.wait(), ms)
        return True
    except asyncio.TimeoutError:
        return False


def format_exception(exc):
    """Return the traceback of `exc` as text, on either runtime."""
    try:
        import io
        import sys

        buf = io.StringIO()
        sys.print_exception(exc, buf)
        return buf.getvalue()
    except AttributeError:
        import traceback

        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
