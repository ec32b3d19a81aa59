"""Heap cost of the same objects on the 64-bit unix port and a 32-bit ESP32 (docs/heap.md)."""
from benchlib import run_micropython

out = run_micropython("bench/heap_ratio.py", heap="2M")
print("## Heap: unix port vs ESP32 object sizes\n")
print("From `bench/heap_ratio.py` (bytes per object). The cap chosen from these is in docs/heap.md.\n")
print("```")
print(out.rstrip())
print("```")
