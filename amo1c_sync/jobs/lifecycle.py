"""F7 lifecycle: what happens to a «Заявка» in 1C reaches its lead (moved, cancelled, no-show,
registered, paid), exactly once, with no echoes.

One cycle (``run``):

1. Finish what a previous cycle intended and did not confirm (``pending`` rows; see below).
2. Read the {ref: DataVersion} of the «Заявки» with a «Номер AmoCRM» over a window of appointment
   dates: ``[sync] hot_window`` back to ``lifecycle_ahead`` ahead every cycle, the whole
   ``lookback`` every ``full_scan_interval`` (the cursor ``lifecycle.last_full_scan``); ``ctx.since``
   widens it. Only two properties: a cycle where nothing changed reads nothing else and writes
   nothing.
3. The changed ones are read whole (only the fields mirrored), their leads in one listing, and
   compared with the state last mirrored (``domain.lifecycle.detect``). A «Заявка» first seen is a
   baseline (and the ``registered`` stage); a move the lead already shows is the card's own
   (the registration job wrote it to 1C) and gives no note; a «Заявка» whose «Номер AmoCRM» is not
   a lead id, or whose lead is deleted, is skipped with the reason (journaled once per change).
4. Leads the payments flow pushed a non-zero total to move to the ``paid`` stage.
5. Writes: the intents of every change are recorded in one transaction, then the leads are
   PATCHed (≤ 50 per request: date, doctor, time and stage together), then the notes are added,
   then one transaction confirms each lead amoCRM accepted (new baseline, stages passed, journal).

What a SIGKILL leaves:

* before the intents are committed: nothing; the next cycle sees the same changes again.
* after the intents, before or during the PATCH: the intents; the next cycle sends the same
  (idempotent) PATCH and the notes.
* after the PATCH, before or during the notes: the intents; the PATCH is sent again (same values,
  no harm) and a note the lead already has (read back from amoCRM) is not added twice.
* after the notes, before the confirmation: the same, so no duplicate note and no lost move.
* after the confirmation: nothing left to do.

Beside the registration job (the card's reschedule and cancel write 1C and record the state they
wrote as the baseline; jobs/card_cancel.py, jobs/registration.py): the baselines are read again
after 1C, and a «Заявка» whose stored state moved between the two reads, or whose lead has a
card cancel under way at either, waits for the next cycle (its 1C read may predate the card's
write). The intents and the confirmation compare-and-set on the state a change was computed from
(``Change.base``): a change computed before the card's write is dropped, or does not overwrite
it. A card cancel and the lifecycle take turns on a lead (store/lifecycle.py ``STAGE_WRITERS``):
no intent is recorded for a lead whose cancel is under way, and the cancel waits for a write of
ours already under way, so a «paid» move can never land after the card's «Отменена». A lead
flagged for registration (a reschedule the card asks for) gets a move's note but keeps its card
fields, the flag read again right before the PATCH.

A stage is never applied to a lead in a closed stage (142/143) or in another pipeline unless
``[stages] move_closed = yes``, and never back to a stage the same «Заявка» already moved it to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from amo1c_sync.amocrm.fields import checked
from amo1c_sync.config import FieldNames
from amo1c_sync.domain import lifecycle as lc
from amo1c_sync.domain.dates import format_time
from amo1c_sync.domain.registration import clean_name, display_number
from amo1c_sync.domain.totals import parse_lead_id
from amo1c_sync.errors import ItemError
from amo1c_sync.jobs.base import JobContext, JobResult
from amo1c_sync.logs import get_logger
from amo1c_sync.store import lifecycle as lstore
from amo1c_sync.store.lifecycle import Change, Followed
from amo1c_sync.store.models import utcnow

log = get_logger("amo1c_sync.jobs.lifecycle")

JOB = "lifecycle"
PATCH_BATCH = 50   # leads per PATCH (amoCRM: at most 50 per request)

SKIP_NOT_LEAD = "«Номер AmoCRM» «{value}» is not a lead id"
SKIP_LEAD_GONE = "lead {lead} does not exist in amoCRM (deleted?)"
SKIP_NO_TIME = "the «Заявка» has no appointment date or start time"

_RESOLVED: dict[tuple[Any, ...], dict[str, lc.Stage]] = {}


def stages_of(ctx: JobContext, *, fresh: bool = False) -> dict[str, lc.Stage]:
    """``[stages]`` resolved through ``GET /api/v4/leads/pipelines`` (once per process and
    configuration; ``fresh`` for `check`). An unknown name is a ConfigError listing what exists."""
    names = ctx.settings.stages.names()
    if not any(names.values()):
        return {}
    key = (ctx.settings.amocrm.base_url, tuple(sorted((k, str(v)) for k, v in names.items())))
    if fresh or key not in _RESOLVED:
        _RESOLVED[key] = lc.resolve_stages(names, ctx.amocrm.pipelines(), where=ctx.settings.source)
    return _RESOLVED[key]


@dataclass
class _Cycle:
    ctx: JobContext
    result: JobResult
    stages: dict[str, lc.Stage]
    fm: Any = None
    doctors: dict[str, str] = field(default_factory=dict)

    @property
    def fields(self) -> FieldNames:
        return self.ctx.settings.fields

    def field_map(self) -> Any:
        if self.fm is None:
            f = self.fields
            self.fm = self.ctx.amocrm.lead_field_map([f.date, f.doctor, f.time, f.flag],
                                                     tz=self.ctx.settings.sync.timezone)
        return self.fm


def run(ctx: JobContext, result: JobResult) -> None:
    cycle = _Cycle(ctx, result, stages_of(ctx))
    now = utcnow()
    held = _recover(cycle)
    lo, hi, full = _window(ctx, now)
    result.count("window_full" if full else "window_hot")
    versions = ctx.onec.zayavka_versions(lo, hi)
    if not full:
        versions.update(_left_window(cycle, versions, lo, hi))
    result.count("read", len(versions))
    stored = lstore.followed(ctx.store, list(versions))
    cancelling = lstore.leads_cancelling(ctx.store)
    changed = [ref for ref, v in versions.items()
               if ref not in held and (ref not in stored or stored[ref].data_version != v)]
    result.count("changed", len(changed))
    changes = _decide(cycle, changed, stored, cancelling) if changed and not ctx.stopping() else []
    if "paid" in cycle.stages and not ctx.stopping():
        changes += _paid(cycle, exclude={c.ref for c in changes} | held)
    _apply(cycle, changes)
    if full and not ctx.stopping():
        lstore.record_full_scan(ctx.store, now)


def _left_window(c: _Cycle, versions: dict[str, str], lo: date, hi: date) -> dict[str, str]:
    """The versions of the «Заявки» last mirrored inside the hot window that 1C no longer lists
    there: moved out of it (seen now, not at the next full scan, so a move back is not merged with
    it into one note) or gone. Nothing is read when none left."""
    left = lstore.mirrored_between(c.ctx.store, lo, hi) - set(versions)
    if not left:
        return {}
    c.result.count("left_window", len(left))
    return c.ctx.onec.zayavka_versions_of(sorted(left))


def _window(ctx: JobContext, now: datetime) -> tuple[date, date, bool]:
    sync = ctx.settings.sync
    today = now.astimezone(sync.tz).date()
    last = lstore.last_full_scan(ctx.store)
    full = last is None or (now - last).total_seconds() >= sync.full_scan_interval
    back = sync.lookback if full else sync.hot_window
    lo = today - timedelta(seconds=back)
    if ctx.since is not None and ctx.since < lo:
        lo = ctx.since
    return lo, today + timedelta(seconds=sync.lifecycle_ahead), full


# --- deciding -----------------------------------------------------------------------------------


def _decide(c: _Cycle, changed: list[str], before: dict[str, Followed], cancelling: set[int]) -> list[Change]:
    """1C first, then the baselines again: a «Заявка» whose stored state moved in between, or
    whose lead has a card cancel under way, waits (the card's write may be newer than the 1C
    read); the others are compared with the state read after 1C, and each change carries it."""
    rows = c.ctx.onec.followed_zayavki(changed)
    if any(r.doctor_ref for r in rows):
        c.doctors = {d.ref: d.name for d in c.ctx.onec.doctors()}
    ids = {i for i in (parse_lead_id(r.lead) for r in rows) if i is not None}
    leads = {int(lead["id"]): lead for lead in c.ctx.amocrm.get_leads(ids)} if ids else {}
    after = lstore.followed(c.ctx.store, [r.ref for r in rows])
    cancelling = cancelling | lstore.leads_cancelling(c.ctx.store)
    out = []
    for r in rows:
        if parse_lead_id(r.lead) in cancelling:
            c.result.count("held_card_cancel")
        elif lstore.state_of(before.get(r.ref)) != lstore.state_of(after.get(r.ref)):
            c.result.count("held_baseline_moved")
        else:
            change = _one(c, r, after.get(r.ref), leads)
            change.base = lstore.state_of(after.get(r.ref))
            out.append(change)
    return out


def _skip(c: _Cycle, r: Any, lead_id: int | None, reason: str) -> Change:
    c.result.count("skipped")
    message = f"Заявка № {display_number(r.number)}: {reason}; not mirrored to amoCRM"
    return Change(ref=r.ref, version=r.data_version, number=r.number, lead_id=lead_id, mirrored=None,
                  skip_reason=reason,
                  entries=[{"system": "store", "action": "lifecycle.skipped", "message": message,
                            "detail": {"number": r.number, "lead": r.lead, "reason": reason,
                                       "data_version": r.data_version}}])


def _appointment(c: _Cycle, r: Any) -> lc.Appointment:
    return lc.Appointment(number=r.number, day=r.day, start=r.start,
                          doctor=c.doctors.get(r.doctor_ref or "", ""), posted=r.posted,
                          deleted=r.deletion_mark, state=r.state)


def _one(c: _Cycle, r: Any, prev: Followed | None, leads: dict[int, dict[str, Any]]) -> Change:
    lead_id = parse_lead_id(r.lead)
    if lead_id is None:
        return _skip(c, r, None, SKIP_NOT_LEAD.format(value=r.lead))
    lead = leads.get(lead_id)
    if lead is None:
        return _skip(c, r, lead_id, SKIP_LEAD_GONE.format(lead=lead_id))
    if r.day is None or r.start is None:
        return _skip(c, r, lead_id, SKIP_NO_TIME)
    now = _appointment(c, r)
    change = Change(ref=r.ref, version=r.data_version, number=r.number, lead_id=lead_id, mirrored=now)
    base = prev.mirrored if prev is not None and prev.lead_id == lead_id else None
    passed = prev.passed if prev is not None and base is not None else ()
    done = prev.done if prev is not None and base is not None else ()
    if base is None:
        c.result.count("first_seen")
        if lc.cancel_reason(now, c.ctx.settings.sync.state_values) is None and "registered" not in done:
            _registered(c, change, lead, passed)
        return change
    events = [e for e in lc.detect(base, now, c.ctx.settings.sync.state_values)
              if not (e.kind == lc.MOVED and _lead_shows(c, lead, now))]
    for event in events:
        _event(c, change, event, keep_fields=_flagged(c, lead))
    keys = [e.stage for e in events if e.stage]
    if keys:
        _stage(c, change, keys[-1], lead, passed)
    return change


def _registered(c: _Cycle, change: Change, lead: dict[str, Any], passed: Iterable[int]) -> None:
    """The ``registered`` stage, except for a lead already in a later configured one (paid,
    cancelled, no-show): a «Заявка» seen late does not send it back."""
    later = {(st.pipeline_id, st.status_id) for key, st in c.stages.items() if key != "registered"}
    if (int(lead.get("pipeline_id") or 0), int(lead.get("status_id") or 0)) in later:
        change.done.append("registered")
        c.result.count("stage_kept_already_passed")
        return
    _stage(c, change, "registered", lead, passed)


def _flagged(c: _Cycle, lead: dict[str, Any]) -> bool:
    """The card asks for a registration: a reschedule the registration job has yet to write."""
    return checked(c.field_map().get(lead, c.fields.flag))


def _event(c: _Cycle, change: Change, event: lc.Event, *, keep_fields: bool = False) -> None:
    """``keep_fields``: the note, not the card's fields (they hold the reschedule asked for)."""
    c.result.count(event.kind)
    change.notes.append(event.note)
    if keep_fields and event.kind == lc.MOVED:
        c.result.count("fields_kept_flagged")
    elif event.kind == lc.MOVED and event.after is not None:
        change.patch = {**(change.patch or {"id": change.lead_id}),
                        "custom_fields_values": _field_values(c, event.after)}
    change.entries.append({"action": f"lifecycle.{event.kind}", "message": event.note,
                           "detail": {"number": change.number, "reason": event.reason,
                                      "before": lstore.to_json(event.before),
                                      "after": lstore.to_json(event.after)}})


def _stage(c: _Cycle, change: Change, key: str, lead: dict[str, Any], passed: Iterable[int]) -> None:
    where = lc.LeadStage(int(lead.get("pipeline_id") or 0), int(lead.get("status_id") or 0))
    decision = lc.decide_move(key, where, c.stages, passed=passed,
                              move_closed=c.ctx.settings.stages.move_closed)
    change.done.append(key)
    if isinstance(decision, lc.Stay):
        if decision.reason != "not_configured":
            c.result.count(f"stage_kept_{decision.reason}")
            change.entries.append({"action": "lifecycle.stage_kept", "detail": {"key": key, "reason": decision.reason},
                                   "message": f"Этап не изменён ({key}): {decision.reason}"})
        return
    c.result.count("stage_moves")
    change.stage = decision.to.status_id
    change.patch = {**(change.patch or {"id": change.lead_id}), **lc.lead_patch(int(change.lead_id or 0), decision)}
    change.entries.append({"action": "lifecycle.stage", "message": f"Этап -> {decision.to}",
                           "detail": {"key": key, "pipeline_id": decision.to.pipeline_id,
                                      "status_id": decision.to.status_id}})


def _lead_shows(c: _Cycle, lead: dict[str, Any], a: lc.Appointment) -> bool:
    """The lead already has the 1C values: the move came from the card (no echo)."""
    fm, f = c.field_map(), c.fields
    t = fm.get(lead, f.time)
    return (fm.get(lead, f.date) == a.day and clean_name(fm.get(lead, f.doctor)).casefold()
            == clean_name(a.doctor).casefold() and _same_time(t, format_time(a.start)))


def _same_time(option: Any, wanted: str) -> bool:
    return option is not None and str(option).strip().lstrip("0").replace(" ", "") == wanted.lstrip("0")


def _option(c: _Cycle, name: str, wanted: str, *, as_time: bool = False) -> Any:
    """The select option matching ``wanted`` (a time matches «09:05» and «9:05» alike)."""
    for e in c.field_map().enums(name):
        value = str(e.get("value") or "")
        if (_same_time(value, wanted) if as_time else clean_name(value).casefold() == clean_name(wanted).casefold()):
            return int(e["id"])
    return wanted


def _field_values(c: _Cycle, a: lc.Appointment) -> list[dict[str, Any]]:
    fm, f, values = c.field_map(), c.fields, lc.lead_values(a, c.ctx.settings.sync.tz)
    listed = ("select", "radiobutton")
    doctor = _option(c, f.doctor, values["doctor"]) if fm.type(f.doctor) in listed else values["doctor"]
    t = _option(c, f.time, values["time"], as_time=True) if fm.type(f.time) in listed else values["time"]
    return [fm.cf(f.date, a.day), fm.cf(f.doctor, doctor), fm.cf(f.time, t)]


def _paid(c: _Cycle, exclude: set[str]) -> list[Change]:
    """One ``paid`` move per lead with a non-zero total pushed, on its latest standing «Заявка»."""
    latest: dict[int, Followed] = {}
    for row in lstore.paid_candidates(c.ctx.store):
        if row.ref not in exclude and row.lead_id is not None and (
                row.lead_id not in latest or row.number > latest[row.lead_id].number):
            latest[row.lead_id] = row
    if not latest:
        return []
    leads = {int(lead["id"]): lead for lead in c.ctx.amocrm.get_leads(list(latest))}
    out = []
    for lead_id, row in sorted(latest.items()):
        change = Change(ref=row.ref, version=row.data_version, number=row.number, lead_id=lead_id,
                        mirrored=row.mirrored, base=lstore.state_of(row))
        standing = lc.cancel_reason(row.mirrored, c.ctx.settings.sync.state_values) is None
        if lead_id in leads and standing:
            c.result.count("paid")
            _stage(c, change, "paid", leads[lead_id], row.passed)
        else:
            change.done.append("paid")
        out.append(change)
    return out


# --- writing ------------------------------------------------------------------------------------


def _apply(c: _Cycle, changes: list[Change]) -> None:
    quiet = [ch for ch in changes if not ch.writes]
    if quiet:
        lstore.confirm(c.ctx.store, quiet, job=JOB, run_id=c.result.run_id)
    writes = [ch for ch in changes if ch.writes]
    if not writes:
        return
    kept = lstore.record_intents(c.ctx.store, writes)  # the intent, before any amoCRM write
    if len(kept) < len(writes):
        recorded = {id(ch) for ch in kept}
        cancelling = lstore.leads_cancelling(c.ctx.store)
        for ch in writes:
            if id(ch) not in recorded:
                c.result.count("held_card_cancel" if ch.lead_id in cancelling else "dropped_baseline_moved")
    _write(c, kept)


def _recover(c: _Cycle) -> set[str]:
    """Finish the writes a previous cycle intended; a note the lead already has is not added
    again. Returns the refs still held (their write failed again)."""
    rows = lstore.pending(c.ctx.store)
    if not rows:
        return set()
    c.result.count("recovered", len(rows))
    changes = []
    for row in rows:
        change = Change.of_intent(row.ref, row.pending or {})
        if change.notes and change.lead_id is not None:
            have = set(c.ctx.amocrm.lead_note_texts(change.lead_id))
            kept = [n for n in change.notes if n not in have]
            c.result.count("notes_already_written", len(change.notes) - len(kept))
            change.notes = kept
        changes.append(change)
    _write(c, changes)
    return {row.ref for row in lstore.pending(c.ctx.store)}


def _write(c: _Cycle, changes: list[Change]) -> None:
    for i in range(0, len(changes), PATCH_BATCH):
        if c.ctx.stopping():
            return
        batch = changes[i:i + PATCH_BATCH]
        patched = _patch(c, batch)
        noted = _notes(c, [ch for ch in batch if ch.ref in patched])
        done = [ch for ch in batch if ch.ref in noted]
        if done:
            lstore.confirm(c.ctx.store, done, job=JOB, run_id=c.result.run_id)
            c.result.count("written", len(done))


def _patch(c: _Cycle, batch: list[Change]) -> set[str]:
    """The refs whose lead PATCH amoCRM accepted (or who needed none). A lead amoCRM refuses for
    good is confirmed with the refusal journaled instead (never retried forever)."""
    with_patch = [ch for ch in batch if ch.patch]
    ok = {ch.ref for ch in batch if not ch.patch}
    if not with_patch:
        return ok
    _keep_flagged_fields(c, with_patch)
    outcome = c.ctx.amocrm.update_leads([ch.patch for ch in with_patch if ch.patch])
    c.result.count("patch_batches")
    for ch in with_patch:
        err = outcome.failed.get(int(ch.lead_id or 0))
        if err is None:
            ok.add(ch.ref)
        else:
            _refused(c, ch, err)
    return ok


def _keep_flagged_fields(c: _Cycle, with_patch: list[Change]) -> None:
    """Right before the PATCH: a lead flagged since it was read keeps its card fields."""
    moving = {int(ch.lead_id or 0): ch for ch in with_patch if "custom_fields_values" in (ch.patch or {})}
    if not moving:
        return
    for lead in c.ctx.amocrm.get_leads(list(moving)):
        ch = moving.get(int(lead["id"]))
        if ch is not None and ch.patch is not None and _flagged(c, lead):
            c.result.count("fields_kept_flagged")
            rest = {k: v for k, v in ch.patch.items() if k != "custom_fields_values"}
            ch.patch = rest if set(rest) - {"id"} else None


def _notes(c: _Cycle, batch: list[Change]) -> set[str]:
    items = [(int(ch.lead_id or 0), text) for ch in batch for text in ch.notes]
    if not items:
        return {ch.ref for ch in batch}
    outcome = c.ctx.amocrm.add_notes(items)
    ok = set()
    for ch in batch:
        err = outcome.failed.get(int(ch.lead_id or 0)) if ch.notes else None
        if err is None:
            ok.add(ch.ref)
        else:
            _refused(c, ch, err)
    return ok


def _refused(c: _Cycle, ch: Change, err: Exception) -> None:
    c.result.count("failed")
    c.result.item_failed(f"lead {ch.lead_id} («Заявка» № {display_number(ch.number)}): {err}")
    if isinstance(err, ItemError):  # cannot succeed as it is: journaled, not retried
        ch.entries = [{"action": "lifecycle.refused", "message": f"amoCRM refused: {err}",
                       "detail": {"notes": ch.notes, "patch": ch.patch}}]
        ch.stage = None
        lstore.confirm(c.ctx.store, [ch], job=JOB, run_id=c.result.run_id)
