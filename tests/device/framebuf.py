"""`import framebuf` on CPython finds the simulator's stand-in (simulator/framebuf.py).
On MicroPython this file is never imported: the built-in framebuf module wins."""
from simulator.framebuf import FrameBuffer, MONO_VLSB  # noqa: F401
