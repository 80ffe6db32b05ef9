"""F1, the free-slots service: 1C reads around the pure rules; the doctors working on a day and
one doctor's day (``DoctorDay | UnknownDoctor | NotWorking``, from domain/slots.py).

Reads per call: the month's posted «Установка графиков работы» (documents + lines) and the
doctors catalog, both cached for ``cache_ttl`` seconds; the day's «Заявки» of the doctor (never
cached: they change with every registration). Used by the CLI (`amo1c-sync slots`), the HTTP
endpoint for the widget, and the registration job's validation.
"""

from __future__ import annotations

import threading
import time as _time
from datetime import date, time
from typing import Any, Callable, Iterable
from zoneinfo import ZoneInfo

from amo1c_sync.domain import slots as rules
from amo1c_sync.domain.registration import clean_name
from amo1c_sync.domain.slots import DayAnswer, DoctorDay, NotWorking, UnknownDoctor


class SlotFinder:
    """Free times per doctor and day from 1C, cached briefly for the widget."""

    def __init__(self, onec: Any, *, tz: ZoneInfo | str = "Europe/Moscow", step_minutes: int = 5,
                 appointment_minutes: int = 15, cache_ttl: float = 60.0,
                 clock: Callable[[], float] = _time.monotonic):
        self.onec = onec
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        self.step_minutes = int(step_minutes)
        self.appointment_minutes = int(appointment_minutes)
        self.cache_ttl = float(cache_ttl)
        self.clock = clock
        self._lock = threading.Lock()
        self._months: dict[tuple[int, int], tuple[float, dict]] = {}
        self._catalog: tuple[float, list] | None = None

    @classmethod
    def from_settings(cls, settings: Any, onec: Any) -> "SlotFinder":
        s = settings.sync
        return cls(onec, tz=s.tz, step_minutes=s.slot_step_minutes,
                   appointment_minutes=s.appointment_minutes, cache_ttl=s.schedule_cache_ttl)

    # --- cached reads -------------------------------------------------------------------------
    def invalidate(self) -> None:
        with self._lock:
            self._months.clear()
            self._catalog = None

    def _fresh(self, stamp: float) -> bool:
        return self.clock() - stamp < self.cache_ttl

    def _doctor_catalog(self) -> list:
        with self._lock:
            if self._catalog and self._fresh(self._catalog[0]):
                return self._catalog[1]
        items = list(self.onec.doctors())
        with self._lock:
            self._catalog = (self.clock(), items)
        return items

    def month_schedule(self, day: date) -> dict:
        """``{(doctor_ref, day): DaySchedule}`` for the month of ``day`` (cached)."""
        key = (day.year, day.month)
        with self._lock:
            hit = self._months.get(key)
            if hit and self._fresh(hit[0]):
                return hit[1]
        won = rules.winning_intervals(self.onec.schedule_lines(date(day.year, day.month, 1)))
        with self._lock:
            self._months[key] = (self.clock(), won)
        return won

    # --- the F1 API ---------------------------------------------------------------------------
    def working(self, day: date) -> list[tuple[str, str]]:
        """``[(name, ref)]`` of doctors with working hours on ``day``, by name."""
        sched = self.month_schedule(day)
        refs = {ref for (ref, d), ds in sched.items() if d == day and ds.intervals}
        out = []
        seen_refs = set()
        for item in self._doctor_catalog():
            if item.ref in refs and item.ref not in seen_refs:
                seen_refs.add(item.ref)
                out.append((item.name, item.ref))
        out.sort(key=lambda p: (p[0].casefold(), p[1]))
        return out

    def refs_named(self, doctor: str) -> set[str]:
        """Refs (lower case) of the catalog doctors called ``doctor`` (spacing and case ignored)."""
        wanted = clean_name(doctor).casefold()
        return {i.ref.lower() for i in self._doctor_catalog() if clean_name(i.name).casefold() == wanted}

    def doctors(self, day: date) -> list[str]:
        """Names of the doctors who work on ``day`` (alphabetical: a stable order for a list)."""
        return [name for name, _ in self.working(day)]

    def _find(self, day: date, doctor: str) -> tuple[str, str] | UnknownDoctor | NotWorking:
        """``(name, ref)`` of the doctor called ``doctor`` who works on ``day``, else why not."""
        wanted = clean_name(doctor).casefold()
        working = self.working(day)
        for name, ref in working:
            if clean_name(name).casefold() == wanted:
                return name, ref
        names = tuple(n for n, _ in working)
        if any(clean_name(i.name).casefold() == wanted for i in self._doctor_catalog()):
            return NotWorking(doctor=doctor, day=day, working=names)
        return UnknownDoctor(doctor=doctor, day=day, working=names)

    def day_of(self, day: date, doctor: str, *, exclude_refs: Iterable[str] = ()) -> DayAnswer:
        """Everything about one doctor's day; ``exclude_refs``: «Заявки» not to count as busy
        (a lead's own «Заявка» when it is being moved). A «Заявка» marked for deletion or unposted
        is cancelled: its time is free."""
        found = self._find(day, doctor)
        if not isinstance(found, tuple):
            return found
        name, ref = found
        intervals = self.month_schedule(day)[(ref, day)].intervals
        skip = {str(r).lower() for r in exclude_refs}
        busy = tuple((z.start, z.end) for z in self.onec.zayavki_on(day, ref)
                     if z.start is not None and not z.deletion_mark and z.posted and z.ref.lower() not in skip
                     and (z.doctor_ref or ref).lower() == ref.lower())
        free = tuple(rules.free_starts(intervals, busy, self.step_minutes, self.appointment_minutes))
        return DoctorDay(doctor=name, doctor_ref=ref, day=day, intervals=intervals, busy=busy, free=free)

    def free_times(self, day: date, doctor: str, *,
                   exclude_refs: Iterable[str] = ()) -> list[time] | UnknownDoctor | NotWorking:
        """Free start times of ``doctor`` on ``day``, ascending, or why there are none to ask for."""
        answer = self.day_of(day, doctor, exclude_refs=exclude_refs)
        return list(answer.free) if isinstance(answer, DoctorDay) else answer
