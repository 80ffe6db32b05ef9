"""Benchmark of the amoCRM rate limiter: N GETs in a row against the emulator at amoCRM's 7/s.

    python benchmarks/ratelimit.py [--n 70] [--rate 7] [--server-ms 0] [--threads 1]

``--server-ms`` holds each answer back that long after the emulator carried the request out (an
after-phase delay fault): amoCRM's own work on a request, after its arrival was counted;
``--threads`` shares the limiter between that many senders (jobs overlapping). Prints the wall
time, the bound N/rate s, the ratio wall/bound, and the most arrivals the emulator counted in any
second (it must not exceed the rate; the exit status is 1 if it did).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from amo1c_sync.amocrm.auth import TokenManager  # noqa: E402
from amo1c_sync.amocrm.gateway import AmoCRM  # noqa: E402
from amo1c_sync.amocrm.ratelimit import RateLimiter  # noqa: E402
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator  # noqa: E402
from amo1c_sync.store import Store, sqlite_url_for  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=70, help="GET requests (default 70)")
    p.add_argument("--rate", type=float, default=7.0, help="requests per second (default 7)")
    p.add_argument("--server-ms", type=int, default=0,
                   help="hold each answer back this long after the request was carried out")
    p.add_argument("--threads", type=int, default=1, help="senders sharing the limiter (default 1)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, \
            AmoCRMEmulator(rate_limit=args.rate, long_lived_token="bench-token") as emu:
        store = Store(sqlite_url_for(Path(tmp) / "bench.db"))
        store.upgrade()
        tm = TokenManager(store, base_url=emu.url, long_lived_token="bench-token")
        api = AmoCRM(emu.url, token_manager=tm, rate_limiter=RateLimiter(args.rate), max_retries=0)
        if args.server_ms:
            emu.add_fault(count=args.n, status=None, delay_ms=args.server_ms,
                          path_prefix="/api/v4/account", phase="after")
        emu.reset_requests()
        share = [args.n // args.threads + (i < args.n % args.threads) for i in range(args.threads)]
        workers = [threading.Thread(target=lambda k=k: [api.account() for _ in range(k)]) for k in share]
        t0 = time.monotonic()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.monotonic() - t0
        traffic = emu.requests()
        store.dispose()
    bound = args.n / args.rate
    print(f"{args.n} GETs at {args.rate:g}/s, server time {args.server_ms} ms, "
          f"{args.threads} thread(s): wall {wall:.2f} s, "
          f"bound {bound:.2f} s, {args.n / wall:.2f} requests/s")
    print(f"max arrivals in any second (emulator): {traffic['max_per_second']} (limit {args.rate:g}); "
          f"429s: {traffic['by_status'].get('429', 0)}")
    print(f"ratio wall/bound = {wall / bound:.3f}" if bound else "ratio wall/bound = n/a")
    return 0 if traffic["max_per_second"] <= args.rate else 1


if __name__ == "__main__":
    raise SystemExit(main())
