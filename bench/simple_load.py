#!/usr/bin/env python3
"""Rough closed-loop load run against paystream (not the real benchmark, see SPEC §8).

N threads, each with one keep-alive connection, create payments back to back for S
seconds (unique Idempotency-Key each; a connection error retries the same key), then
every accepted payment is polled until terminal. Prints accepted payments/s and
p50/p90/p99/max latency of the POST. Python standard library only.

  python3 bench/simple_load.py --threads 8 --seconds 10            # starts its own server
  python3 bench/simple_load.py --url http://127.0.0.1:8080 --admin-key KEY
"""
import argparse
import http.client
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import pslib  # noqa: E402


class External:
    """Duck-types pslib.Server for an already running server."""

    def __init__(self, url: str, admin_key: str):
        u = urllib.parse.urlparse(url)
        assert u.hostname in ("127.0.0.1", "localhost"), "pslib.Client connects to 127.0.0.1"
        self.port = u.port
        self.admin_key = admin_key
        self.admin_client_key = None

    def admin(self):
        return pslib.Client(self, self.admin_key)

    def client(self, key):
        return pslib.Client(self, key)


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--source", default="unique",
                    help='payment source; "unique" (default) = a fresh approving token per request, '
                         "so fraud velocity rules per source do not decline the load")
    ap.add_argument("--amount", type=int, default=1000)
    ap.add_argument("--url", help="use a running server instead of starting one")
    ap.add_argument("--admin-key", default=os.environ.get("PAYSTREAM_ADMIN_KEY", pslib.ADMIN_KEY))
    ap.add_argument("--bin", help="paystream binary (default $PAYSTREAM_BIN or build/debug/paystream)")
    ap.add_argument("--flag", action="append", default=[], help="extra serve flag (repeatable), e.g. --flag=--fsync=off")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir of a started server")
    ap.add_argument("--terminal-timeout-s", type=float, default=120.0)
    args = ap.parse_args()

    own = None
    if args.url:
        srv = External(args.url, args.admin_key)
    else:
        if args.bin:
            os.environ["PAYSTREAM_BIN"] = args.bin
        flags = []
        for f in args.flag:
            flags.extend(f.split("=", 1) if f.startswith("--") and "=" in f else [f])
        own = pslib.Server(tempfile.mkdtemp(prefix="paystream-bench-"), flags, admin_key=args.admin_key)
        own.start()
        srv = own
        print(f"started paystream on 127.0.0.1:{own.port}, data dir {own.data_dir}", flush=True)
    try:
        m = pslib.new_merchant(srv, rate_limit={"per_second": 1e9, "burst": 1_000_000_000})
        lat: list = []
        ids: list = []
        errors: dict = {}
        lock = threading.Lock()
        stop = threading.Event()

        def worker(tid):
            c = srv.client(m.api_key)
            i = 0
            my_lat, my_ids = [], []
            while not stop.is_set():
                key = f"bench-{tid}-{i}"
                t0 = time.perf_counter()
                while True:
                    try:
                        src = f"tok_bench_{tid}_{i}" if args.source == "unique" else args.source
                        r = c.create_payment(args.amount, "USD", src, idem=key)
                        break
                    except (OSError, http.client.HTTPException) as e:
                        with lock:
                            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                        c.close()
                        if stop.is_set():
                            r = None
                            break
                        time.sleep(0.01)
                if r is None:
                    break
                dt = time.perf_counter() - t0
                if r.status in (201, 202):
                    my_lat.append(dt)
                    my_ids.append(r.json["id"])
                    i += 1
                else:
                    with lock:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                    if r.status not in (409, 429, 503):
                        i += 1
            with lock:
                lat.extend(my_lat)
                ids.extend(my_ids)
            c.close()

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(args.threads)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in ts:
            t.join(timeout=60)
        wall = time.monotonic() - t0
        lat.sort()
        print(f"threads={args.threads} seconds={wall:.1f} accepted={len(ids)} "
              f"rate={len(ids) / wall:.1f}/s errors={errors}")
        print("latency ms: p50={:.2f} p90={:.2f} p99={:.2f} max={:.2f}".format(
            *(1000 * pct(lat, q) for q in (0.5, 0.9, 0.99)), 1000 * (lat[-1] if lat else float("nan"))))

        c = srv.client(m.api_key)
        deadline = time.monotonic() + args.terminal_timeout_s
        statuses: dict = {}
        for pid in ids:
            p = c.wait_terminal(pid, timeout_s=max(1.0, deadline - time.monotonic()))
            statuses[p["status"]] = statuses.get(p["status"], 0) + 1
        drain = time.monotonic() - t0 - wall
        print(f"all {len(ids)} accepted payments terminal ({statuses}) {drain:.1f}s after the load stopped")
        ok = len(set(ids)) == len(ids)
        print("no duplicate ids" if ok else "DUPLICATE payment ids!")
        return 0 if ok else 1
    finally:
        if own is not None:
            own.terminate()
            if args.keep:
                print(f"data dir and server log kept in {own.data_dir}")
            else:
                shutil.rmtree(own.data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
