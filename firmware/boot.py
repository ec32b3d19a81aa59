"""Runs first at every power-on or reset, before main.py: keep it minimal.

Nothing here may fail or block: the journal, the watchdog and the reader are the
app's business (main.py), so a broken app can still be reached over the REPL.

Deployed versions (host_tools/deploy.py): each bundle lives in /bundles/<version>/ and
the file /active names the one to run. If it names a complete bundle, this changes
into its folder, so main.py, app, board and cpos all come from there (MicroPython
looks for main.py and modules in the current folder first). Otherwise the files at
/ run, as on a terminal that was never deployed to. config.json stays at /.
"""
import gc
import os

try:
    with open("/active") as _f:
        _dir = "/bundles/" + _f.read().strip()
    os.stat(_dir + "/manifest.json")
    os.stat(_dir + "/main.py")
    os.chdir(_dir)
except OSError:
    pass
gc.collect()
