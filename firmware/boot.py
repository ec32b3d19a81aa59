"""Runs first at every power-on or reset, before main.py: keep it minimal.

Nothing here may fail or block: the journal, the watchdog and the reader are the
app's business (main.py), so a broken app can still be reached over the REPL.
"""
import gc

gc.collect()
