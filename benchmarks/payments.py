"""Benchmark of the payments job: N leads whose totals changed at once, against both emulators,
with amoCRM's real limit of 7 requests per second.

    python benchmarks/payments.py [--n 10000] [--store-url URL] [--rate 7] [--in-process] [--timeline]

Prints the wall time of the run (and of its phases), the number of amoCRM requests, and the ratio
of the wall time to the lower bound ceil(N/50)/7 s that amoCRM's rate limit and the 50-lead PATCH
batches impose. The emulators run in a child process, as amoCRM and 1C are other machines: the
job's own CPU work and the servers' do not share one interpreter lock (``--in-process`` serves
them from this process instead, which charges the servers' JSON work to the job). Setting up the
data uses the emulators' in-process accessors in that process (not timed). The job starts a
second after its context, as a running daemon's cycle does (a new process's rate limiter counts
its first second as the previous process's).

It also prints when the first and the last PATCH arrived (``--timeline``: each 1C request's
arrival too).

Measured on the 2-core sandbox (commit a2d7d9f -> the field list read beside 1C): N = 3,500
ratio 1.15 -> 1.04; N = 10,000 ratio 1.20 -> 1.16. At 10,000 the job reads 10,000 documents and
their «Заявки» from 1C before the first total is known: a lead's total needs every document of
the window, and 1C gives no order by base document to stream them by. That read was 42 requests
of 500 rows (the «Заявки» scan beside the documents'), each the whole query again on the
emulator (~50 ms of a ~55 ms page; the client parses a page in ~5 ms), so the server, not the
client, set its pace and more reads at once could not shorten it. Window scans page on in pages
of 5,000 after a first page of 500 (commit 1bda982 -> 4eaea24, two runs each, another agent on
the machine): N = 10,000: 1C 42 -> 6 requests, read done 2.1-2.3 s -> 0.4-0.5 s, first PATCH
2.5-2.7 s -> 1.1 s, ratio 1.11, 1.11 -> 1.05, 1.05; N = 3,500: 16 -> 4 requests, first PATCH
0.5 s -> 0.35 s, ratio 1.03, 1.03 -> 1.03, 1.03 (its 70 PATCHes are the time). What is left of the
head at 10,000: the last 4,500-row page (~0.3 s after its request) and the plan (~0.4 s: 10,000
documents' facts, the store's look-ups); the PATCHes take ~28.9 s of the bound's 28.57.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import queue
import sys
import tempfile
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from amo1c_sync.config import load_settings  # noqa: E402
from amo1c_sync.jobs import JobContext, run_job  # noqa: E402
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator  # noqa: E402
from amo1c_sync.sandbox.onec_emulator import OneCEmulator  # noqa: E402
from amo1c_sync.store import Store, sqlite_url_for  # noqa: E402
from benchmarks.phases import timed  # noqa: E402

PATCH = "PATCH /api/v4/leads"
STARTUP_SECOND = 1.1


def _serve(n: int, rate: float, conn) -> None:
    """The child: both emulators with N leads, each with a «Заявка» and a posted «Оказание услуг»;
    answers the parent's questions over ``conn`` until told to stop."""
    with AmoCRMEmulator(rate_limit=rate) as amo, OneCEmulator() as onec:
        t0 = time.monotonic()
        start = datetime.now().replace(hour=10, minute=0, second=0, microsecond=0)
        leads = [amo.create_lead(f"Пациент {i}") for i in range(n)]
        for i, lead in enumerate(leads):
            z = onec.add_zayavka(lead=lead, doctor="Ефимова Е.В.", start=start)
            onec.add_service(zayavka_ref=z["Ref_Key"], amount=Decimal(100 + i % 5000) + Decimal("0.50"))
        amo.reset_requests()
        onec.reset_requests()
        conn.send({"amo_url": amo.url, "token": amo.issue_long_lived_token(), "onec_url": onec.url,
                   "username": onec.username, "password": onec.password, "setup": time.monotonic() - t0})
        while True:
            ask = conn.recv()
            if ask == "stop":
                return
            check = [leads[0], leads[n // 2], leads[-1]]
            conn.send({"amo": amo.requests(), "onec": onec.requests(),
                       "ok": all(amo.lead(x)["price"] > 0 for x in check)})


class _Duplex:
    """One end of a pair of queues, with a Connection's send and recv (the --in-process child)."""

    def __init__(self, out: queue.Queue, into: queue.Queue):
        self._out, self._in = out, into

    def send(self, obj) -> None:
        self._out.put(obj)

    def recv(self):
        return self._in.get()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="changed leads (default 10000)")
    p.add_argument("--rate", type=float, default=7.0, help="amoCRM requests per second (default 7)")
    p.add_argument("--store-url", help="state store (default: a SQLite file in a temp directory)")
    p.add_argument("--in-process", action="store_true", help="serve the emulators from this process")
    p.add_argument("--timeline", action="store_true", help="print each 1C request's arrival")
    args = p.parse_args(argv)
    n = args.n

    if args.in_process:
        up, down = queue.Queue(), queue.Queue()
        conn = _Duplex(down, up)
        child = threading.Thread(target=_serve, args=(n, args.rate, _Duplex(up, down)), daemon=True)
    else:
        conn, child_end = mp.Pipe()
        child = mp.get_context("spawn").Process(target=_serve, args=(n, args.rate, child_end), daemon=True)
    child.start()
    served = conn.recv()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.store_url or sqlite_url_for(Path(tmp) / "bench.db"))
        store.upgrade()
        settings = load_settings(None, overrides={
            "amocrm": {"base_url": served["amo_url"], "long_lived_token": served["token"],
                       "rate_limit": str(args.rate)},
            "onec": {"base_url": served["onec_url"], "username": served["username"],
                     "password": served["password"]},
            "store": {"url": store.url},
            "logging": {"level": "WARNING"},
        })
        from amo1c_sync import logs

        logs.configure("WARNING", "console")

        ctx = JobContext(settings, store)
        # a running daemon's cycle, not a just-started one's: a new process's rate limiter counts
        # its first second as used by the previous process (ratelimit.RateLimiter's prefill)
        _ = ctx.amocrm   # built now, so its rate limiter starts now
        time.sleep(STARTUP_SECOND)
        phases = {"1c": 0.0, "amocrm_patch": 0.0}
        timed(ctx.onec, "services_in_window", phases, "1c")
        timed(ctx.onec, "base_versions", phases, "1c")
        timed(ctx.onec, "bases_by_ref", phases, "1c")
        timed(ctx.onec, "services_by_ref", phases, "1c")
        timed(ctx.amocrm, "update_leads", phases, "amocrm_patch")
        t1 = time.monotonic()
        result = run_job(ctx, "payments")
        wall = time.monotonic() - t1

        conn.send("report")
        report = conn.recv()
        conn.send("stop")
        child.join()
        traffic, onec_traffic, ok = report["amo"], report["onec"], report["ok"]
        bound = math.ceil(n / 50) / args.rate
        where = "this process" if args.in_process else "a child process"
        print(f"N = {n} changed leads, amoCRM limit {args.rate:g} req/s, emulators in {where} "
              f"(setup {served['setup']:.1f} s, not timed)")
        print(f"job status: {result.status}; counts: {dict(sorted(result.counts.items()))}")
        print(f"wall time: {wall:.2f} s")
        print(f"amoCRM requests: {traffic['total']} ({traffic['counts'].get(PATCH, 0)} PATCH), "
              f"max per second {traffic['max_per_second']}, by status {traffic['by_status']}")
        print(f"1C requests: {onec_traffic['total']}")
        print(f"bound ceil(N/50)/{args.rate:g} = {bound:.2f} s; ratio wall/bound = {wall / bound:.2f}")
        api = [e["at"] for e in traffic["log"] if e["path"].startswith("/api/")]
        if api:
            started = time.time() - (time.monotonic() - t1)
            print(f"first amoCRM request {api[0] - started:.2f} s after the start, "
                  f"last one {api[-1] - started:.2f} s; 1C read done "
                  f"{max(e['at'] for e in onec_traffic['log']) - started:.2f} s")
            patches = [e["at"] for e in traffic["log"] if e["method"] == "PATCH"]
            if patches:
                print(f"first PATCH {patches[0] - started:.2f} s after the start, "
                      f"last one {patches[-1] - started:.2f} s")
            if args.timeline:
                for e in sorted(onec_traffic["log"], key=lambda e: e["at"]):
                    print(f"  1C {e['at'] - started:6.2f} s {e['target'][:110]}")
        rest = wall - phases["1c"]
        print(f"phases: reading 1C {phases['1c']:.2f} s, amoCRM PATCHes {phases['amocrm_patch']:.2f} s, "
              f"store and the rest {rest - phases['amocrm_patch']:.2f} s; "
              f"ratio (wall - 1C)/bound = {rest / bound:.2f}")
        print("spot check of pushed leads:", "ok" if ok else "FAILED")
        store.dispose()
        return 0 if result.ok and ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
