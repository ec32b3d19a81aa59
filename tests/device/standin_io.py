"""What the stand-in terminal processes share: one line out to the test, flushed at once."""
import sys


def say(s):
    print(s)
    try:
        sys.stdout.flush()
    except AttributeError:
        pass
