"""Benchmark of the payments scans: what a hot and a full scan of N «Оказание услуг» cost once the
store knows them, and how long a posting made during a full scan waits for its push.

    python benchmarks/scan.py [--n 1000 10000] [--store-url URL]

Each size: N documents spread over the lookback window (62 days), based on «Заявки» without a
«Номер AmoCRM» (skipped, so nothing is pushed and only the scans are measured), read once to fill
the store (not timed). Then it prints, per scan, the 1C requests, the bytes of their answers and
the seconds; and the latency of a posting: a payment posted just after a full scan starts, the
cycles run back to back as the daemon runs them, until amoCRM shows it. Setting up the data uses
the emulators' in-process accessors (not timed). Run the 100,000 size once only (shared machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from amo1c_sync.config import load_settings  # noqa: E402
from amo1c_sync.jobs import JobContext, run_job  # noqa: E402
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator  # noqa: E402
from amo1c_sync.sandbox.onec_emulator import OneCEmulator  # noqa: E402
from amo1c_sync.store import Store, cursors, sqlite_url_for  # noqa: E402

DOCTOR = "Ефимова Е.В."


class Meter:
    """Counts the 1C requests a gateway makes and the bytes of their answers."""

    def __init__(self, onec) -> None:
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()
        onec._session.hooks["response"].append(self._hook)  # noqa: SLF001 - benchmark only: read the wire

    def _hook(self, resp, *args, **kwargs):
        with self._lock:
            self.requests += 1
            self.bytes += len(resp.content)
        return resp

    def take(self) -> tuple[int, int]:
        with self._lock:
            out = (self.requests, self.bytes)
            self.requests = self.bytes = 0
        return out


def _populate(onec, n: int) -> None:
    now = datetime.now().replace(microsecond=0)
    span = 60 * 86400
    for i in range(n):
        when = now - timedelta(seconds=span * i // max(n, 1))
        z = onec.add_zayavka(lead=None, doctor=DOCTOR, start=when.replace(hour=10, minute=0, second=0))
        # the «Заявка» was written a day before its service, as at the clinic (the accessor dates it now)
        onec.base.data[onec.names.zayavka][z["Ref_Key"]]["Date"] = (when - timedelta(days=1)).isoformat()
        onec.add_service(zayavka_ref=z["Ref_Key"], amount=Decimal(100 + i % 900), date_=when)


def _hot(ctx, meter: Meter) -> tuple[str, int]:
    meter.take()
    t = time.monotonic()
    result = run_job(ctx, "payments")
    took = time.monotonic() - t
    requests, size = meter.take()
    assert result.ok
    assert result.counts.get("window_hot") == 1
    assert "window_slice" not in result.counts
    return f"hot scan: {requests} 1C requests, {size / 1e6:.2f} MB, {took:.2f} s", requests


def _full(ctx, meter: Meter) -> str:
    """A periodic full scan, cycle after cycle (each one the hot window and one slice) until done."""
    due = datetime.now(timezone.utc) - timedelta(days=30)
    cursors.record_full_scan(ctx.store, due)
    meter.take()
    cycles, longest, t = 0, 0.0, time.monotonic()
    while cursors.last_full_scan(ctx.store) == due:
        c = time.monotonic()
        result = run_job(ctx, "payments")
        longest = max(longest, time.monotonic() - c)
        cycles += 1
        assert result.ok, result.errors[:3]
    took = time.monotonic() - t
    requests, size = meter.take()
    return (f"full scan: {requests} 1C requests, {size / 1e6:.2f} MB, {took:.2f} s in {cycles} cycles "
            f"(the longest cycle {longest:.2f} s)")


def _latency(ctx, amo, onec, meter: Meter, hot_requests: int) -> str:
    """A payment posted while a full scan's slice is read (after the cycle's hot window, whose
    ``hot_requests`` it waits for): seconds until amoCRM has its total."""
    lead = amo.create_lead("Пациент с оплатой")
    z = onec.add_zayavka(lead=lead, doctor=DOCTOR, start=datetime.now().replace(hour=11, minute=0,
                                                                              second=0, microsecond=0))
    cursors.record_full_scan(ctx.store, datetime.now(timezone.utc) - timedelta(days=30))
    meter.take()
    posted_at: list[float] = []

    def post_when_scanning() -> None:
        while meter.requests <= hot_requests:
            time.sleep(0.005)
        onec.add_service(zayavka_ref=z["Ref_Key"], amount=Decimal("150.00"))
        posted_at.append(time.monotonic())

    seen_at: list[float] = []

    def watch() -> None:
        while amo.lead(lead)["price"] != 150:
            time.sleep(0.01)
        seen_at.append(time.monotonic())

    poster = threading.Thread(target=post_when_scanning, daemon=True)
    watcher = threading.Thread(target=watch, daemon=True)
    poster.start()
    watcher.start()
    cycles = 0
    while not seen_at:
        run_job(ctx, "payments")
        cycles += 1
    waited = seen_at[0] - posted_at[0]
    return f"posting made during a full scan: in amoCRM {waited:.2f} s later (cycles run: {cycles})"


def bench(n: int, store_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp, AmoCRMEmulator() as amo, OneCEmulator() as onec:
        store = Store(store_url or sqlite_url_for(Path(tmp) / "bench.db"))
        store.upgrade()
        settings = load_settings(None, overrides={
            "amocrm": {"base_url": amo.url, "long_lived_token": amo.issue_long_lived_token()},
            "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
            "store": {"url": store.url}, "logging": {"level": "WARNING"}})
        t0 = time.monotonic()
        _populate(onec, n)
        ctx = JobContext(settings, store)
        meter = Meter(ctx.onec)
        first = run_job(ctx, "payments")
        assert first.ok, first.errors[:3]
        print(f"N = {n} documents (setup and first read {time.monotonic() - t0:.1f} s, not timed)")
        hot, hot_requests = _hot(ctx, meter)
        print("  " + hot)
        print("  " + _full(ctx, meter))
        print("  " + _latency(ctx, amo, onec, meter, hot_requests))
        store.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10_000], help="documents (default 1000 10000)")
    p.add_argument("--store-url", help="state store (default: a SQLite file in a temp directory)")
    args = p.parse_args(argv)
    from amo1c_sync import logs

    logs.configure("WARNING", "console")
    for n in args.n:
        bench(n, args.store_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
