"""Pytest set-up shared by every host-side test: import paths and runtime workers."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runtimes import ROOT, LIB, DEVICE_TESTS, Worker  # noqa: E402

# This checkout first, ahead of any installed copy (worktrees share nothing).
for p in (ROOT, DEVICE_TESTS, LIB):
    if p not in sys.path:
        sys.path.insert(0, p)


class _LiveWorker:
    """A MicroPython worker that starts again if a test killed it (a MemoryError past
    the worker's guard): the test that killed it fails, the ones after it do not."""

    def __init__(self):
        self.worker = None

    @property
    def proc(self):
        return self._live().proc

    def _live(self):
        if self.worker is None or self.worker.proc.poll() is not None:
            self.worker = Worker("micropython")
        return self.worker

    def call(self, module, function, *args):
        return self._live().call(module, function, *args)

    def close(self):
        if self.worker is not None:
            self.worker.close()


@pytest.fixture(scope="module")
def mp_worker():
    """A live MicroPython worker under the WROOM heap cap, fresh for each test module
    (so one module's leftovers never fragment another's heap)."""
    w = _LiveWorker()
    yield w
    w.close()


# Device test modules are run by tests/test_device_suites.py on both runtimes,
# each in a subprocess; pytest must not also import them on its own.
collect_ignore = ["device"]


@pytest.fixture
def broker(tmp_path):
    """A mosquitto of this test's own on a free loopback port (simulator/broker.py)."""
    from simulator.broker import Broker

    b = Broker(str(tmp_path / "broker")).start()
    yield b
    b.stop()
