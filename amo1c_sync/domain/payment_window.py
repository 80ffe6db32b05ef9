"""F3: which «Оказание услуг» dates a payments cycle reads (hot window, whole lookback, backfill).
Pure: the clock and the last full scan are passed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo


@dataclass(frozen=True)
class Window:
    """Document dates to read: ``date_from <= Date`` (local, naive) up to the end of ``date_to``."""

    date_from: datetime
    date_to: date
    full: bool  # covers the whole lookback window (records the full scan)
    kind: str   # hot | full | since


def plan_window(*, now_utc: datetime, tz: tzinfo, hot_window: float, lookback: float,
                full_scan_interval: float, last_full_scan: datetime | None,
                since: date | None = None) -> Window:
    """Which window this cycle reads. Pure: the clock and the cursor are passed in."""
    now_local = now_utc.astimezone(tz).replace(tzinfo=None, microsecond=0)
    date_to = now_local.date() + timedelta(days=1)  # tomorrow too: a document dated ahead
    full_from = now_local - timedelta(seconds=lookback)
    due = last_full_scan is None or (now_utc - last_full_scan).total_seconds() >= full_scan_interval
    if due:
        date_from, kind, full = full_from, "full", True
    else:
        date_from, kind, full = now_local - timedelta(seconds=hot_window), "hot", False
    if since is not None:
        since_dt = datetime.combine(since, time(0, 0))
        if since_dt < date_from:
            date_from, kind = since_dt, "since"
            full = full or since_dt <= full_from
    return Window(date_from=date_from, date_to=date_to, full=full, kind=kind)


def slices(window: Window, days: int) -> list[tuple[datetime, datetime]]:
    """[from, to) slices of ``days`` days covering the window."""
    end = datetime.combine(window.date_to + timedelta(days=1), time(0, 0))
    out, lo = [], window.date_from
    while lo < end:
        hi = min(lo + timedelta(days=days), end)
        out.append((lo, hi))
        lo = hi
    return out
