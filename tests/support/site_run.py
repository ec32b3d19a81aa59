"""A simulated site with the real firmware (simulator/run.py's Run), for the tests that drive it
step by step: start and stop it in one place, and wait for conditions, not for times."""
import asyncio
import contextlib

from simulator.run import Run


@contextlib.asynccontextmanager
async def booted(sc, workdir=None, terminal_config=None, hook=None, tls=False):
    """`async with booted(sc, workdir) as r`: a Run of scenario sc, prepared (hook(r) after
    that, if given) and booted; stopped on the way out, whatever happened."""
    r = Run(sc, workdir, quiet=True)
    try:
        r.prepare(terminal_config, tls=tls)
        if hook:
            hook(r)
        await r.boot_all()
        yield r
    finally:
        await r.stop()


async def until(cond, what, limit=60.0):
    """Wait for cond() to be true, polling every 50 ms; returns what it returned. A test that
    waits for a condition, not for a time, holds on a loaded machine too."""
    for _ in range(int(limit / 0.05)):
        got = cond()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("no %s within %d s" % (what, limit))
