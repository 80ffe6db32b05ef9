"""Benchmark of the lifecycle's latency: from a change in 1C (a «Заявка» moved to another time) to
the lead showing it, with the lifecycle job run every ``--interval`` seconds as the daemon runs it.

    python benchmarks/lifecycle_latency.py [--interval 2] [--moves 10] [--leads 200] [--rate 7]

The job runs in a thread on a fixed-rate schedule (the daemon's interval trigger); at random
moments the administrator moves one of ``--leads`` followed «Заявки» through the 1C emulator's
control API, and the lead is watched (in process, not timed as requests) until it shows the new
time. Prints each latency and the worst one as a ratio to the interval and to the bound it chases:
one interval plus the longest cycle (the request time): ratio_to_bound <= 1 holds the promise.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from amo1c_sync.config import load_settings  # noqa: E402
from amo1c_sync.jobs import JobContext, run_job  # noqa: E402
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator  # noqa: E402
from amo1c_sync.sandbox.onec_emulator import OneCEmulator  # noqa: E402
from amo1c_sync.store import Store, sqlite_url_for  # noqa: E402

MSK = ZoneInfo("Europe/Moscow")
DOCTOR = "Ефимова Е.В."


def _setup(amo, onec, n: int) -> list[tuple[int, str]]:
    day = datetime.now(MSK).date() + timedelta(days=2)
    out = []
    for i in range(n):
        hm = f"{8 + i % 10:02d}:{(i * 5) % 60:02d}"
        lid = amo.book.create_lead(f"Сделка {i}", {"Дата записи к врачу": day.strftime("%d.%m.%Y"),
                                                   "Врач": DOCTOR, "Время записи": hm})
        r = requests.post(onec.url + "/_sandbox/zayavki", timeout=10,
                          json={"lead": lid, "doctor": DOCTOR, "start": f"{day.isoformat()}T{hm}:00"})
        r.raise_for_status()
        out.append((lid, r.json()["ref"]))
    return out


def _scheduler(ctx, interval: float, stop: threading.Event, durations: list[float]) -> None:
    """Fixed-rate runs, as APScheduler's interval trigger runs a job (a late run is not doubled)."""
    next_at = time.monotonic()
    while not stop.is_set():
        started = time.monotonic()
        run_job(ctx, "lifecycle")
        durations.append(time.monotonic() - started)
        next_at += interval
        while next_at < time.monotonic():
            next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interval", type=float, default=2.0, help="lifecycle_interval in seconds (default 2)")
    p.add_argument("--moves", type=int, default=10, help="changes made in 1C (default 10)")
    p.add_argument("--leads", type=int, default=200, help="followed «Заявки» (default 200)")
    p.add_argument("--rate", type=float, default=7.0, help="amoCRM requests per second (default 7)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp, AmoCRMEmulator(rate_limit=args.rate) as amo, OneCEmulator() as onec:
        store = Store(sqlite_url_for(Path(tmp) / "bench.db"))
        store.upgrade()
        token = amo.issue_long_lived_token()
        settings = load_settings(None, overrides={
            "amocrm": {"base_url": amo.url, "long_lived_token": token, "rate_limit": str(args.rate)},
            "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
            "stages": {"cancelled": "Запись к врачу / Отменена"},
            "store": {"url": store.url}})
        pairs = _setup(amo, onec, args.leads)
        ctx = JobContext(settings, store)
        run_job(ctx, "lifecycle")  # the first cycle: every «Заявка» becomes a baseline
        stop, durations = threading.Event(), []
        worker = threading.Thread(target=_scheduler, args=(ctx, args.interval, stop, durations), daemon=True)
        worker.start()
        latencies = []
        try:
            for i, (lid, ref) in enumerate(random.sample(pairs, min(args.moves, len(pairs)))):
                time.sleep(random.uniform(0, args.interval))
                day = datetime.now(MSK).date() + timedelta(days=3 + i)
                changed = time.monotonic()
                requests.patch(f"{onec.url}/_sandbox/zayavki/{ref}", timeout=10,
                               json={"start": f"{day.isoformat()}T15:30:00"}).raise_for_status()
                want = day.strftime("%d.%m.%Y")
                while amo.book.lead(lid)["fields"].get("Дата записи к врачу") != want:
                    if time.monotonic() - changed > 10 * args.interval + 30:
                        raise SystemExit(f"lead {lid} never showed the move")
                    time.sleep(0.01)
                latencies.append(time.monotonic() - changed)
                print(f"move {i + 1}: {latencies[-1]:.3f} s")
        finally:
            stop.set()
            worker.join(timeout=60)
    worst, cycle = max(latencies), max(durations)
    bound = args.interval + cycle
    print(f"interval {args.interval:.3f} s, {args.leads} «Заявки» followed, longest cycle {cycle:.3f} s, "
          f"median cycle {statistics.median(durations):.3f} s")
    print(f"latency: median {statistics.median(latencies):.3f} s, worst {worst:.3f} s")
    print(f"worst latency / interval = {worst / args.interval:.3f}; "
          f"worst latency / (interval + longest cycle) = {worst / bound:.3f} (bound holds when <= 1)")
    return 0 if worst <= bound else 1


if __name__ == "__main__":
    raise SystemExit(main())
