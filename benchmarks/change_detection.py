"""Benchmark of the registration's change detection: amoCRM requests per cycle with N leads in the
account (all updated today) and one flagged, the lead listing (before) against the events read
(after), at amoCRM's 7 requests per second.

    python benchmarks/change_detection.py [--n 25000] [--edited 1000] [--rate 7]

Before: what the registration job did to find flagged leads, ``iter_leads_updated_since`` from
the cursor (a day back on a first run). After: the registration job as it is, end to end (events,
the flagged lead by id, then its note and PATCH). Prints, for a first run (no cursor) and for a
cycle after ``--edited`` other leads changed, the amoCRM GETs each way, their ratio, and the
wall time at the rate; the bound of "after" is 1 events read + 1 read by id (+ the field list a
new process reads once).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from amo1c_sync import logs  # noqa: E402
from amo1c_sync.config import load_settings  # noqa: E402
from amo1c_sync.jobs import JobContext, run_job  # noqa: E402
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator  # noqa: E402
from amo1c_sync.sandbox.onec_emulator import OneCEmulator  # noqa: E402
from amo1c_sync.store import Store, sqlite_url_for  # noqa: E402

FLAGGED = {"Дата записи к врачу": "22.12.2021", "Врач": "Ефимова Е.В.", "Время записи": "9:05",
           "Зарегистрировать в 1С": True}
FIRST_LOOKBACK = 86400


def _gets(emu) -> dict:
    return {k: v for k, v in emu.requests()["counts"].items() if k.startswith("GET ")}


def _before(ctx, emu, since: int) -> tuple[int, float]:
    """The old detection: list the leads updated since the cursor, keep the flagged ones."""
    emu.reset_requests()
    t0 = time.monotonic()
    leads = list(ctx.amocrm.iter_leads_updated_since(since, 60))
    assert leads
    return sum(_gets(emu).values()), time.monotonic() - t0


def _after(ctx, emu) -> tuple[dict, float, dict]:
    emu.reset_requests()
    t0 = time.monotonic()
    result = run_job(ctx, "registration")
    wall = time.monotonic() - t0
    assert result.ok, result
    assert result.counts.get("created") == 1, result
    return _gets(emu), wall, emu.requests()["counts"]


def _line(what: str, before: tuple[int, float], after: tuple[dict, float, dict], rate: float) -> None:
    gets = sum(after[0].values())
    print(f"{what}: before {before[0]} GETs ({before[1]:.1f} s at {rate:g}/s); after {gets} GETs "
          f"{after[0]} ({after[1]:.1f} s, whole cycle incl. writes: {sum(after[2].values())} requests); "
          f"ratio before/after = {before[0] / gets:.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=25_000, help="leads in the account (default 25000)")
    p.add_argument("--edited", type=int, default=1_000, help="other leads edited between cycles")
    p.add_argument("--rate", type=float, default=7.0, help="amoCRM requests per second (default 7)")
    args = p.parse_args(argv)
    logs.configure("WARNING", "console")
    with tempfile.TemporaryDirectory() as tmp, \
            AmoCRMEmulator(rate_limit=args.rate, long_lived_token="bench") as amo, OneCEmulator() as onec:
        store = Store(sqlite_url_for(Path(tmp) / "bench.db"))
        store.upgrade()
        settings = load_settings(None, overrides={
            "amocrm": {"base_url": amo.url, "long_lived_token": "bench", "rate_limit": str(args.rate)},
            "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
            "store": {"url": store.url}, "logging": {"level": "WARNING"}})
        now = [time.time() - 7200]   # the account's leads were written two hours ago
        amo.book.clock = lambda: now[0]
        others = [amo.create_lead(f"Пациент {i}") for i in range(args.n - 1)]
        amo.create_lead("Запись", FLAGGED)
        amo.book.clock = time.time
        ctx = JobContext(settings, store)
        first_before = _before(ctx, amo, int(time.time()) - FIRST_LOOKBACK)
        _line("first run, no cursor", first_before, _after(ctx, amo), args.rate)
        cursor = int(time.time())   # the old job's cursor after that run
        for lead_id in others[:args.edited]:
            amo.update_lead(lead_id, {"ФИО клиента": "Иванов"})
        amo.create_lead("Запись 2", {**FLAGGED, "Время записи": "10:00"})
        _line(f"a cycle after {args.edited} other leads changed", _before(ctx, amo, cursor),
              _after(ctx, amo), args.rate)
        store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
