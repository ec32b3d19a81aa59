"""A call server for differential tests, run on MicroPython (or CPython).

Reads one JSON array per line from stdin: [module, function, arg1, arg2, ...],
calls `module.function(*args)` and writes one JSON line back:
{"ok": result} or {"error": "ExceptionName: message"}. An empty line ends it.
Lets a CPython test feed generated cases to the real MicroPython runtime.
"""
import json
import sys


def _reply(out):
    try:
        text = json.dumps(out)
    except MemoryError:
        import gc

        gc.collect()
        text = json.dumps({"error": "MemoryError: the reply did not fit the heap"})
    sys.stdout.write(text)
    sys.stdout.write("\n")
    sys.stdout.flush()


def serve():
    modules = {}
    while True:
        try:
            line = sys.stdin.readline()
        except MemoryError:  # a request too large for the heap: say so, stay alive
            import gc

            gc.collect()
            _reply({"error": "MemoryError: the request did not fit the heap"})
            continue
        if not line or not line.strip():
            return
        try:
            req = json.loads(line)
            mod = modules.get(req[0])
            if mod is None:
                mod = __import__(req[0])
                for part in req[0].split(".")[1:]:
                    mod = getattr(mod, part)
                modules[req[0]] = mod
            out = {"ok": getattr(mod, req[1])(*req[2:])}
        except Exception as e:
            out = {"error": "%s: %s" % (type(e).__name__, e)}
        line = req = None
        _reply(out)


serve()
