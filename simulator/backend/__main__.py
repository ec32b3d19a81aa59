"""`python -m simulator.backend --db FILE --port N --password PW [...]`: run the backend."""
import argparse
import asyncio
import sys

from simulator.backend import Backend, Ledger


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m simulator.backend")
    ap.add_argument("--db", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--user", default="backend")
    ap.add_argument("--password", required=True)
    ap.add_argument("--client-id", default="cpos-backend")
    ap.add_argument("--crash-after-apply", type=int, default=0,
                    help="fault injection: SIGKILL itself right after committing the Nth batch")
    ap.add_argument("--site-key", action="append", default=[], metavar="SITE=HEX",
                    help="run the downlink for SITE, signing with this 64-hex-digit key (repeatable)")
    ap.add_argument("--poll-ms", type=int, default=50, help="how often the downlink looks for new changes")
    a = ap.parse_args(argv)
    keys = {}
    for sk in a.site_key:
        site, _, hexkey = sk.partition("=")
        keys[site] = bytes.fromhex(hexkey)
    ledger = Ledger(a.db)
    be = Backend(ledger, a.host, a.port, a.user, a.password, a.client_id, a.crash_after_apply,
                 site_keys=keys, poll_ms=a.poll_ms, log=lambda m: print(m, file=sys.stderr, flush=True))
    print("backend up", flush=True)
    asyncio.run(be.run())


if __name__ == "__main__":
    main()
