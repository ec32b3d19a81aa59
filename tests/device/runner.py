"""Run one device test module's `test_*` functions; works on MicroPython and CPython.

Usage: runner.py MODULE[.NAME] [MODULE[.NAME] ...]
MODULE runs every test of the module in this process; MODULE.NAME runs that one test.
Prints one line per test, `PASS module.name` or `FAIL module.name`, with the
traceback indented beneath a failure, then `N passed, N failed`. Exit status 1 if
anything failed. The pytest side (tests/test_device_suites.py) reads these lines.
"""
import sys

from cpos.compat import format_exception


def run_module(modname, only=None):
    passed = failed = 0
    try:
        mod = __import__(modname)
    except Exception as e:  # an import error fails every test of the module
        print("IMPORTERROR %s" % modname)
        for line in format_exception(e).split("\n"):
            print("    " + line)
        return 0, 1
    names = [only] if only else sorted(n for n in dir(mod) if n.startswith("test_"))
    for n in names:
        fn = getattr(mod, n)
        if not callable(fn):
            continue
        try:
            fn()
        except Exception as e:
            failed += 1
            print("FAIL %s.%s" % (modname, n))
            for line in format_exception(e).split("\n"):
                print("    " + line)
        else:
            passed += 1
            print("PASS %s.%s" % (modname, n))
    return passed, failed


def main(argv):
    passed = failed = 0
    for arg in argv:
        modname, _, only = arg.partition(".")
        p, f = run_module(modname, only)
        passed += p
        failed += f
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
