"""F4: the lead card's select options follow 1C.

* «Врач»: one option per 1C doctor who has a posted schedule in the window (the month
  ``sync.lookback`` ago … two months ahead). New doctors are added; a doctor renamed in 1C gets
  its option renamed in place (same enum id, so leads keep pointing at it; the doctor's ref ->
  enum id link is remembered in the store). Options are NEVER deleted: a lead may still use one.
* «Время записи»: the time grid. Chosen rule: every start time a schedule in the window can
  produce — the grid anchored at each interval's start (8:15, 8:20 … as in the seed) — plus the
  ``slot_step_minutes`` grid from 00:00 between the earliest and the latest of those starts, so
  the list has no holes. Existing options that read as a time (``08:15`` or ``8:15``) count as
  that time and keep their ids and text; missing times are added as ``8:15``. Options are sorted
  by time, never deleted.
* A field that is not a select (text field) needs nothing: it is skipped and counted.
* Nothing changed -> no write. A dry run goes through the recording adapters (jobs/dry_run.py).
"""

from __future__ import annotations

from datetime import date, datetime, time, tzinfo
from typing import Any

from amo1c_sync.domain import directory as plan
from amo1c_sync.domain import slots as rules
from amo1c_sync.domain.registration import clean_name
from amo1c_sync.domain.slots import DaySchedule
from amo1c_sync.jobs.base import JobContext, JobResult
from amo1c_sync.store import doctor_options
from amo1c_sync.store.journal import record

JOB = "directory"
ENUM_TYPES = {"select", "multiselect", "radiobutton"}


def today(tz: tzinfo) -> date:
    return datetime.now(tz).date()


def window_months(settings: Any, since: date | None = None, *, now: date | None = None) -> list[date]:
    """The months whose schedules count, from the settings in force (``plan.months_window``)."""
    return plan.months_window(now or today(settings.sync.tz), settings.sync.lookback, since)


def run(ctx: JobContext, result: JobResult) -> None:
    settings = ctx.settings
    amo = ctx.amocrm
    fields = {f["name"]: f for f in amo.list_lead_fields()}
    names = settings.fields
    doctor_field, time_field = fields.get(names.doctor), fields.get(names.time)
    wants_doctors = doctor_field is not None and doctor_field.get("type") in ENUM_TYPES
    wants_times = time_field is not None and time_field.get("type") in ENUM_TYPES
    for label, f, wanted in ((names.doctor, doctor_field, wants_doctors), (names.time, time_field, wants_times)):
        if f is None:
            result.item_failed(f"amoCRM has no lead field «{label}» ([fields] in sync.ini)")
        elif not wanted:
            result.count("text_fields")
    if not (wants_doctors or wants_times):
        return
    onec = ctx.onec
    schedules: list[DaySchedule] = []
    for month in window_months(settings, ctx.since):
        won = rules.winning_intervals(onec.schedule_lines(month))
        schedules.extend(ds for ds in won.values() if ds.intervals)
    result.count("schedule_days", len(schedules))
    if wants_doctors and doctor_field is not None:
        _sync_doctors(ctx, result, doctor_field, schedules)
    if wants_times and time_field is not None:
        grid = plan.time_grid(schedules, settings.sync.slot_step_minutes, settings.sync.appointment_minutes)
        _sync_times(ctx, result, time_field, grid)


def _sync_doctors(ctx: JobContext, result: JobResult, field: dict[str, Any], schedules: list[DaySchedule]) -> None:
    refs = {ds.doctor_ref.lower() for ds in schedules}
    doctors = sorted(((i.ref.lower(), i.name) for i in ctx.onec.doctors() if i.ref.lower() in refs),
                     key=lambda p: (p[1].casefold(), p[0]))
    links = doctor_options.links(ctx.store)
    payload, added, renamed, known = plan.plan_doctor_options(list(field.get("enums") or []), doctors, links)
    result.count("doctors", len(doctors))
    if not added and not renamed:
        if any(links.get(r) != e for r, e in known.items()):
            doctor_options.save_links(ctx.store, known)
        return
    updated = ctx.amocrm.update_field_enums(int(field["id"]), payload)
    by_value = {clean_name(e["value"]).casefold(): int(e["id"]) for e in (updated.get("enums") or []) if "id" in e}
    for ref, name in doctors:
        if clean_name(name).casefold() in by_value:
            known[ref] = by_value[clean_name(name).casefold()]
    doctor_options.save_links(ctx.store, known)
    result.count("doctor_options_added", len(added))
    result.count("doctor_options_renamed", len(renamed))
    record(ctx.store, job=JOB, system="amocrm", action="field.options_updated",
           message=f"«{field['name']}»: добавлено {len(added)}, переименовано {len(renamed)}",
           detail={"field_id": field["id"], "added": added, "renamed": renamed}, run_id=result.run_id)


def _sync_times(ctx: JobContext, result: JobResult, field: dict[str, Any], grid: list[time]) -> None:
    payload, added, changed = plan.plan_time_options(list(field.get("enums") or []), grid)
    result.count("grid_times", len(grid))
    if not changed:
        return
    ctx.amocrm.update_field_enums(int(field["id"]), payload)
    result.count("time_options_added", len(added))
    record(ctx.store, job=JOB, system="amocrm", action="field.options_updated",
           message=f"«{field['name']}»: добавлено {len(added)}",
           detail={"field_id": field["id"], "added": added}, run_id=result.run_id)
