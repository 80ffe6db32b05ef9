"""F4, pure: which months' schedules count, the «Время записи» grid, and the option lists to send
for «Врач» and «Время записи» (options keep their ids; none is ever deleted)."""

from __future__ import annotations

from datetime import date, time
from typing import Any

from amo1c_sync.domain import slots as rules
from amo1c_sync.domain.dates import format_time, parse_user_time
from amo1c_sync.domain.registration import clean_name
from amo1c_sync.domain.slots import DaySchedule

MONTHS_AHEAD = 2


def months_window(now: date, lookback: float, since: date | None = None) -> list[date]:
    """First days of the months whose schedules count: from ``since`` (or ``lookback`` seconds
    before ``now``) to MONTHS_AHEAD months after this one."""
    start = since or date.fromordinal(now.toordinal() - int(lookback // 86400))
    y, m = start.year, start.month
    end_y, end_m = now.year, now.month + MONTHS_AHEAD
    end_y, end_m = end_y + (end_m - 1) // 12, (end_m - 1) % 12 + 1
    out = []
    while (y, m) <= (end_y, end_m):
        out.append(date(y, m, 1))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def time_grid(day_schedules: list[DaySchedule], step: int, appointment: int) -> list[time]:
    """The documented grid: every possible start, plus the 00:00-anchored grid between the
    earliest and the latest of them."""
    starts: set[time] = set()
    for ds in day_schedules:
        starts.update(rules.grid_starts(ds.intervals, step, appointment))
    if not starts:
        return []
    lo, hi = min(starts), max(starts)
    first = rules.to_minutes(lo) + (-rules.to_minutes(lo)) % step
    for m in range(first, rules.to_minutes(hi) + 1, step):
        starts.add(rules.from_minutes(m))
    return sorted(starts)


def _as_time(text: str) -> time | None:
    try:
        return parse_user_time(text)
    except ValueError:
        return None


def plan_doctor_options(enums: list[dict[str, Any]], doctors: list[tuple[str, str]], links: dict[str, int]
                        ) -> tuple[list[dict[str, Any]], list[str], list[tuple[str, str]], dict[str, int]]:
    """Pure: (full enum list to send, added names, renamed (old, new), ref -> enum id known now).
    ``doctors``: (ref, name) sorted as they should be appended."""
    current = [dict(e) for e in sorted(enums, key=lambda e: (e.get("sort") or 0, e["id"]))]
    by_id = {int(e["id"]): e for e in current}
    by_value = {clean_name(e["value"]).casefold(): e for e in current}
    added: list[str] = []
    renamed: list[tuple[str, str]] = []
    known: dict[str, int] = {}
    new_items: list[dict[str, Any]] = []
    for ref, name in doctors:
        key = clean_name(name).casefold()
        linked = by_id.get(links.get(ref, -1))
        if key in by_value:
            if "id" in by_value[key]:
                known[ref] = int(by_value[key]["id"])
        elif linked is not None:
            renamed.append((linked["value"], name))
            del by_value[clean_name(linked["value"]).casefold()]
            linked["value"] = name
            by_value[key] = linked
            known[ref] = int(linked["id"])
        else:
            item = {"value": name}
            new_items.append(item)
            by_value[key] = item
            added.append(name)
    payload = [{"id": int(e["id"]), "value": e["value"], "sort": (i + 1) * 10} for i, e in enumerate(current)]
    payload += [{"value": e["value"], "sort": (len(current) + i + 1) * 10} for i, e in enumerate(new_items)]
    return payload, added, renamed, known


def plan_time_options(enums: list[dict[str, Any]], grid: list[time]) -> tuple[list[dict[str, Any]], list[str], bool]:
    """Pure: (full enum list sorted by time, added texts, whether anything changes)."""
    current = sorted(enums, key=lambda e: (e.get("sort") or 0, e["id"]))
    have: dict[time, dict[str, Any]] = {}
    others: list[dict[str, Any]] = []
    for e in current:
        t = _as_time(e["value"])
        if t is not None and t not in have:
            have[t] = e
        else:
            others.append(e)
    added = [format_time(t) for t in grid if t not in have]
    items: list[tuple[time, dict[str, Any]]] = [(t, {"id": int(e["id"]), "value": e["value"]}) for t, e in have.items()]
    items += [(t, {"value": format_time(t)}) for t in grid if t not in have]
    items.sort(key=lambda p: p[0])
    ordered = [d for _, d in items] + [{"id": int(e["id"]), "value": e["value"]} for e in others]
    for i, d in enumerate(ordered):
        d["sort"] = (i + 1) * 10
    old_order = [int(e["id"]) for e in current]
    new_order = [d["id"] for d in ordered if "id" in d]
    changed = bool(added) or old_order != new_order
    return ordered, added, changed
