"""Small assertions shared by the device tests (no pytest on MicroPython)."""


def raises(exc, fn, *args):
    """Call fn(*args); pass if it raises `exc`, fail (AssertionError) if it returns."""
    try:
        fn(*args)
    except exc:
        return True
    raise AssertionError("%s not raised by %r%r" % (exc.__name__, fn, args))
