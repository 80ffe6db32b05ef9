"""Benchmark of the payments job: N leads whose totals changed at once, against both emulators,
with amoCRM's real limit of 7 requests per second.

    python benchmarks/payments.py [--n 10000] [--store-url URL] [--rate 7]

Prints the wall time of the run (and of its phases), the number of amoCRM requests, and the ratio
of the wall time to the lower bound ceil(N/50)/7 s that amoCRM's rate limit and the 50-lead PATCH
batches impose. Setting up the data uses the emulators' in-process accessors (not timed).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="changed leads (default 10000)")
    p.add_argument("--rate", type=float, default=7.0, help="amoCRM requests per second (default 7)")
    p.add_argument("--store-url", help="state store (default: a SQLite file in a temp directory)")
    args = p.parse_args(argv)
    n = args.n

    with tempfile.TemporaryDirectory() as tmp, \
            AmoCRMEmulator(rate_limit=args.rate) as amo, OneCEmulator() as onec:
        store = Store(args.store_url or sqlite_url_for(Path(tmp) / "bench.db"))
        store.upgrade()
        token = amo.issue_long_lived_token()
        settings = load_settings(None, overrides={
            "amocrm": {"base_url": amo.url, "long_lived_token": token, "rate_limit": str(args.rate)},
            "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
            "store": {"url": store.url},
            "logging": {"level": "WARNING"},
        })
        from amo1c_sync import logs

        logs.configure("WARNING", "console")

        t0 = time.monotonic()
        start = datetime.now().replace(hour=10, minute=0, second=0, microsecond=0)
        leads = [amo.create_lead(f"Пациент {i}") for i in range(n)]
        for i, lead in enumerate(leads):
            z = onec.add_zayavka(lead=lead, doctor="Ефимова Е.В.", start=start)
            onec.add_service(zayavka_ref=z["Ref_Key"], amount=Decimal(100 + i % 5000) + Decimal("0.50"))
        setup = time.monotonic() - t0
        amo.reset_requests()
        onec.reset_requests()

        ctx = JobContext(settings, store)
        phases = {"1c": 0.0, "amocrm_patch": 0.0}
        timed(ctx.onec, "services_in_window", phases, "1c")
        timed(ctx.onec, "base_versions", phases, "1c")
        timed(ctx.onec, "bases_by_ref", phases, "1c")
        timed(ctx.onec, "services_by_ref", phases, "1c")
        timed(ctx.amocrm, "update_leads", phases, "amocrm_patch")
        t1 = time.monotonic()
        result = run_job(ctx, "payments")
        wall = time.monotonic() - t1

        traffic = amo.requests()
        onec_traffic = onec.requests()
        bound = math.ceil(n / 50) / args.rate
        check = [leads[0], leads[n // 2], leads[-1]]
        ok = all(amo.lead(x)["price"] > 0 for x in check)
        print(f"N = {n} changed leads, amoCRM limit {args.rate:g} req/s (setup {setup:.1f} s, not timed)")
        print(f"job status: {result.status}; counts: {dict(sorted(result.counts.items()))}")
        print(f"wall time: {wall:.2f} s")
        print(f"amoCRM requests: {traffic['total']} ({traffic['counts'].get(PATCH, 0)} PATCH), "
              f"max per second {traffic['max_per_second']}, by status {traffic['by_status']}")
        print(f"1C requests: {onec_traffic['total']}")
        print(f"bound ceil(N/50)/{args.rate:g} = {bound:.2f} s; ratio wall/bound = {wall / bound:.2f}")
        rest = wall - phases["1c"]
        print(f"phases: reading 1C {phases['1c']:.2f} s, amoCRM PATCHes {phases['amocrm_patch']:.2f} s, "
              f"store and the rest {rest - phases['amocrm_patch']:.2f} s; "
              f"ratio (wall - 1C)/bound = {rest / bound:.2f}")
        print("spot check of pushed leads:", "ok" if ok else "FAILED")
        store.dispose()
        return 0 if result.ok and ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
