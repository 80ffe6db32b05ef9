"""Benchmark of the registration job: K leads flagged at once, against both emulators, with
amoCRM's real limit of 7 requests per second.

    python benchmarks/registration.py [--k 50 500] [--store-url URL] [--rate 7]

For each K: one `once registration` run (a fresh context, as the CLI has it) over K leads, each
asking for its own free slot of the seed schedule (December 2021, three doctors). Prints the wall
time, the amoCRM and 1C requests per lead (from the emulators' /_sandbox/requests counts), and
``ratio wall/bound = X`` where the bound is what amoCRM's limit allows for the requests the job
needs at least: 1 list + 2·⌈K/50⌉ writes (notes, PATCH) + ⌈K/250⌉ listing pages, at 7/s. Setting
up the data uses the emulators' in-process accessors (not timed).

Before batching (commit 67cea20): 500 leads took 1,004 amoCRM requests and 153 s; 1C 4.8
requests per lead.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from amo1c_sync.config import load_settings  # noqa: E402
from amo1c_sync.domain.dates import format_time  # noqa: E402
from amo1c_sync.jobs import JobContext, run_job  # noqa: E402
from amo1c_sync.sandbox import seed  # noqa: E402
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator  # noqa: E402
from amo1c_sync.sandbox.onec_emulator import OneCEmulator  # noqa: E402
from amo1c_sync.store import Store, sqlite_url_for  # noqa: E402
from benchmarks.phases import timed  # noqa: E402

FLAG = "Зарегистрировать в 1С"


def slots(k: int) -> list[tuple[str, str, str]]:
    """K distinct (day, doctor, time) free in the seed schedule, 15 minutes apart."""
    out = []
    for doctor, day, start, end in seed.schedule_lines():
        t = datetime.combine(day, start)
        while t + timedelta(minutes=15) <= datetime.combine(day, end):
            if not (day.day == 22 and t.hour == 9):   # the seed's own bookings of the story day
                out.append((day.strftime("%d.%m.%Y"), doctor, format_time(t.time())))
            t += timedelta(minutes=15)
            if len(out) == k:
                return out
    raise SystemExit(f"the seed schedule has only {len(out)} free slots; ask for fewer leads")


def bench(k: int, rate: float, store_url: str | None) -> bool:
    with tempfile.TemporaryDirectory() as tmp, \
            AmoCRMEmulator(rate_limit=rate) as amo, OneCEmulator() as onec:
        store = Store(store_url or sqlite_url_for(Path(tmp) / "bench.db"))
        store.upgrade()
        token = amo.issue_long_lived_token()
        settings = load_settings(None, overrides={
            "amocrm": {"base_url": amo.url, "long_lived_token": token, "rate_limit": str(rate)},
            "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
            "store": {"url": store.url},
            "logging": {"level": "WARNING"},
        })
        leads = [amo.create_lead(f"Пациент {i}", {"Дата записи к врачу": day, "Врач": doctor,
                                                   "Время записи": t, FLAG: True})
                 for i, (day, doctor, t) in enumerate(slots(k))]
        amo.reset_requests()
        onec.reset_requests()
        time.sleep(1.1)   # the emulator's per-second window starts empty, as a live account's would

        ctx = JobContext(settings, store)
        phases = {"1c": 0.0, "amocrm": 0.0}
        for name in ("zayavki_for", "zayavki_by_lead", "create_zayavka", "update_zayavka", "post",
                     "schedule_lines", "doctors", "default_client", "default_nomenclature"):
            timed(ctx.onec, name, phases, "1c")
        for name in ("iter_leads_updated_since", "lead_field_map", "add_notes", "update_leads", "get_leads"):
            timed(ctx.amocrm, name, phases, "amocrm")
        t0 = time.monotonic()
        result = run_job(ctx, "registration")
        wall = time.monotonic() - t0

        a, o = amo.requests(), onec.requests()
        bound_requests = 1 + 2 * math.ceil(k / 50) + math.ceil(k / 250)
        bound = bound_requests / rate
        done = sum(1 for x in leads if not amo.lead(x)["fields"].get(FLAG))
        print(f"K = {k} leads flagged at once, amoCRM limit {rate:g} req/s")
        print(f"  job status: {result.status}; counts: {dict(sorted(result.counts.items()))}")
        print(f"  leads written back: {done}/{k}; «Заявки» in 1C: {len(onec.zayavki())}")
        print(f"  amoCRM requests: {a['total']} ({a['total'] / k:.3f} per lead) {_grouped(a)}; "
              f"max per second {a['max_per_second']}")
        print(f"  1C requests: {o['total']} ({o['total'] / k:.3f} per lead) {_grouped(o)}")
        print(f"  phases: 1C {phases['1c']:.2f} s, amoCRM {phases['amocrm']:.2f} s, "
              f"store and the rest {wall - phases['1c'] - phases['amocrm']:.2f} s")
        print(f"  wall time: {wall:.2f} s; bound {bound_requests} requests / {rate:g} = {bound:.2f} s; "
              f"ratio wall/bound = {wall / bound:.2f}")
        store.dispose()
        return result.ok and done == k


def _grouped(traffic: dict) -> dict[str, int]:
    """Request counts with each object's own path (…(guid'…')/Post) folded into one line."""
    out: dict[str, int] = {}
    for key, n in traffic["counts"].items():
        key = re.sub(r"\(guid'[^']*'\)", "(…)", key)
        out[key] = out.get(key, 0) + n
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, nargs="+", default=[50, 500], help="leads flagged at once (default 50 500)")
    p.add_argument("--rate", type=float, default=7.0, help="amoCRM requests per second (default 7)")
    p.add_argument("--store-url", help="state store (default: a SQLite file in a temp directory)")
    args = p.parse_args(argv)
    from amo1c_sync import logs

    logs.configure("WARNING", "console")
    ok = all([bench(k, args.rate, args.store_url) for k in args.k])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
