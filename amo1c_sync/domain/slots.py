"""F1, pure: working intervals + bookings + grid -> free start times. No I/O.

Rules (F1, as the clinic gave them):
* a doctor's working intervals for a day come from the LATEST posted «Установка графиков работы»
  that sets that doctor and day (by document date, then number) — ``winning_intervals``;
* the grid of start times is anchored at each interval's start (8:15, 8:20, 8:25 …);
* a «Заявка» occupies [start, end); without an end it occupies ``appointment_minutes``;
* a start ``t`` is free when ``[t, t + appointment_minutes)`` lies inside one working interval and
  overlaps no busy interval.

Times are handled as minutes since midnight; an interval ending at 00:00 (after its start) ends at
midnight (24:00).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Iterable, Sequence

DAY_MINUTES = 24 * 60

TimeRange = tuple[time, time]
Busy = tuple[time, "time | None"]


def to_minutes(t: time) -> int:
    return t.hour * 60 + t.minute


def from_minutes(m: int) -> time:
    if not 0 <= m < DAY_MINUTES:
        raise ValueError(f"{m} minutes is not a time of day")
    return time(m // 60, m % 60)


def _interval_minutes(start: time, end: time) -> tuple[int, int]:
    s, e = to_minutes(start), to_minutes(end)
    if e == 0 and s > 0:
        e = DAY_MINUTES  # "… - 00:00" ends at midnight
    return s, e


def _busy_minutes(busy: Iterable[Busy], appointment_minutes: int) -> list[tuple[int, int]]:
    out = []
    for start, end in busy:
        if start is None:
            continue
        s = to_minutes(start)
        if end is None:
            e = s + appointment_minutes
        else:
            e = _interval_minutes(start, end)[1]
            if e <= s:  # an end at or before the start is a data error: occupy one appointment
                e = s + appointment_minutes
        out.append((s, e))
    return out


def _overlaps(s: int, e: int, busy: Sequence[tuple[int, int]]) -> bool:
    return any(s < be and bs < e for bs, be in busy)


def grid_starts(intervals: Iterable[TimeRange], step_minutes: int, appointment_minutes: int) -> list[time]:
    """Every start on the grid whose appointment fits inside its interval, busy or not."""
    return free_starts(intervals, (), step_minutes, appointment_minutes)


def free_starts(intervals: Iterable[TimeRange], busy: Iterable[Busy], step_minutes: int,
                appointment_minutes: int) -> list[time]:
    """Free start times, ascending, without duplicates.

    ``intervals``: working ``(start, end)`` pairs; ``busy``: ``(start, end or None)`` of the day's
    «Заявки»; ``step_minutes`` > 0; ``appointment_minutes`` > 0.
    """
    if step_minutes <= 0 or appointment_minutes <= 0:
        raise ValueError("step_minutes and appointment_minutes must be positive")
    taken = _busy_minutes(busy, appointment_minutes)
    out: set[int] = set()
    for start, end in intervals:
        s, e = _interval_minutes(start, end)
        t = s
        while t + appointment_minutes <= e:
            if not _overlaps(t, t + appointment_minutes, taken):
                out.add(t)
            t += step_minutes
    return [from_minutes(m) for m in sorted(out) if m < DAY_MINUTES]


# --- why a time is not free -------------------------------------------------------------------
FREE, BUSY, OFF_GRID, OUTSIDE = "free", "busy", "off_grid", "outside"


def classify(t: time, intervals: Sequence[TimeRange], busy: Iterable[Busy], step_minutes: int,
             appointment_minutes: int) -> str:
    """``free``; ``busy`` (on the grid, fits the hours, overlaps a «Заявка»); ``off_grid`` (inside
    the hours but not on the grid); ``outside`` (the appointment does not fit any working interval)."""
    m = to_minutes(t)
    fitting = []
    for start, end in intervals:
        s, e = _interval_minutes(start, end)
        if s <= m and m + appointment_minutes <= e:
            fitting.append(s)
    if not fitting:
        return OUTSIDE
    if not any((m - s) % step_minutes == 0 for s in fitting):
        return OFF_GRID
    taken = _busy_minutes(busy, appointment_minutes)
    return BUSY if _overlaps(m, m + appointment_minutes, taken) else FREE


def nearest(free: Sequence[time], wanted: time, n: int = 6) -> list[time]:
    """The ``n`` free times closest to ``wanted`` (earlier first on a tie), in time order."""
    w = to_minutes(wanted)
    best = sorted(free, key=lambda t: (abs(to_minutes(t) - w), to_minutes(t)))[:n]
    return sorted(best)


# --- which schedule document wins ---------------------------------------------------------------
def _number_key(number: str) -> tuple[int, int, str]:
    text = (number or "").strip()
    digits = text.lstrip("0")
    if text.isdigit():
        return (0, len(digits), digits)
    return (1, 0, text)


@dataclass(frozen=True)
class DaySchedule:
    """A doctor's working intervals on one day, from the schedule document that won."""

    doctor_ref: str
    day: date
    intervals: tuple[TimeRange, ...]
    doc_ref: str
    doc_number: str


def winning_intervals(lines: Iterable[Any]) -> dict[tuple[str, date], DaySchedule]:
    """Schedule lines (objects with ``doc_ref, doc_number, doc_date, doctor_ref, day, start, end``,
    e.g. ``onec.ScheduleLine``) -> ``{(doctor_ref, day): DaySchedule}`` taking, per doctor and day,
    only the lines of the latest document (by date, then number, then ref for a total order)."""
    by_key: dict[tuple[str, date], dict[str, list[Any]]] = {}
    for line in lines:
        by_key.setdefault((line.doctor_ref, line.day), {}).setdefault(line.doc_ref, []).append(line)
    out: dict[tuple[str, date], DaySchedule] = {}
    for key, docs in by_key.items():
        def doc_key(ref: str, docs: dict[str, list[Any]] = docs) -> tuple[datetime, tuple[int, int, str], str]:
            first = docs[ref][0]
            return (first.doc_date or datetime.min, _number_key(first.doc_number), ref)

        winner = max(docs, key=doc_key)
        chosen = sorted(docs[winner], key=lambda ln: (to_minutes(ln.start), getattr(ln, "line_number", 0)))
        intervals = tuple((ln.start, ln.end) for ln in chosen if _valid(ln.start, ln.end))
        out[key] = DaySchedule(doctor_ref=key[0], day=key[1], intervals=intervals, doc_ref=winner,
                               doc_number=docs[winner][0].doc_number)
    return out


def _valid(start: time, end: time) -> bool:
    s, e = _interval_minutes(start, end)
    return e > s


def format_intervals(intervals: Iterable[TimeRange]) -> str:
    """``8:15–13:00, 15:30–19:45``."""
    from amo1c_sync.domain.dates import format_time

    return ", ".join(f"{format_time(s)}–{format_time(e)}" for s, e in intervals)


def day_grid(step_minutes: int, start: time = time(0, 0), end: time | None = None) -> list[time]:
    """Every ``step_minutes`` from ``start`` up to ``end`` (inclusive; None = the whole day)."""
    s = to_minutes(start)
    e = DAY_MINUTES - 1 if end is None else to_minutes(end)
    return [from_minutes(m) for m in range(s, e + 1, step_minutes)]


def end_time(start: time, minutes: int) -> time | None:
    """When an appointment starting at ``start`` ends; None when it would end after midnight
    (1C's «Заявка» then gets no end time)."""
    end = datetime.combine(date(2000, 1, 1), start) + timedelta(minutes=minutes)
    return end.time() if end.date() == date(2000, 1, 1) else None


# --- what asking for one doctor's day can give ---------------------------------------------------
@dataclass(frozen=True)
class DoctorDay:
    """One doctor's working day: the winning schedule's intervals, the day's bookings, the free starts."""

    doctor: str
    doctor_ref: str
    day: date
    intervals: tuple[tuple[time, time], ...]
    busy: tuple[tuple[time, time | None], ...]
    free: tuple[time, ...]


@dataclass(frozen=True)
class UnknownDoctor:
    """No doctor of that name in 1C; ``working``: who works that day."""

    doctor: str
    day: date
    working: tuple[str, ...]
    code = "unknown_doctor"


@dataclass(frozen=True)
class NotWorking:
    """The doctor exists but has no working hours that day; ``working``: who does."""

    doctor: str
    day: date
    working: tuple[str, ...]
    code = "not_working"


DayAnswer = DoctorDay | UnknownDoctor | NotWorking
