"""F7 from the card: the widget's «Отменить запись в 1С» sets ``[fields] cancel_flag``; the
registration job hands its polled leads here (``cancel_flagged``) and this cancels the lead's
«Заявка» in 1C: the deletion mark, or unposting (``[sync] cancel_mode``); then one note («Запись
отменена: Заявка № 219»), the flag cleared and the ``cancelled`` stage, in one lead PATCH.

Idempotent: a lead whose «Заявка» is already cancelled gets «Запись уже отменена …», one with no
«Заявка» «Отменять нечего …»; nothing changes in 1C.

What a SIGKILL leaves (the row in ``lifecycle_card_cancels`` is the intent):

* before the intent: nothing; the flag is still set, the next poll sees the lead.
* the intent is recorded under the lock the lifecycle's intents take (store/lifecycle.py
  ``STAGE_WRITERS``): from then on the lifecycle writes nothing to the lead, and a lifecycle write
  already under way for it (a «paid» move, say) is waited for, cycle after cycle, so the cancel's
  stage is the last one written.
* after the intent, before the plan (which «Заявка», which note): the intent; the next cycle
  starts over from it, whatever the registration cursor did.
* after the plan, around the 1C write: the plan; the (idempotent) deletion mark or unposting is
  sent again. The lifecycle job leaves a lead with a cancel under way alone, and the baseline it
  compares with says cancelled (recorded after the 1C write, so it never claims a write 1C
  refused), so it never echoes it as «Запись отменена в 1С».

A cancel 1C refuses (an item error) gets one note saying so («Запись не отменена в 1С: …») and
stays under way: it is tried again every cycle, as a refused posting is.
* after the lead's note or PATCH, before the confirmation: the plan; the PATCH is sent again and
  a note the lead already has is not added twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from amo1c_sync.amocrm.fields import checked
from amo1c_sync.domain import lifecycle as lc
from amo1c_sync.domain.registration import display_number
from amo1c_sync.errors import ItemError, RetriableError
from amo1c_sync.jobs.base import JobContext, JobResult
from amo1c_sync.jobs.lifecycle import stages_of
from amo1c_sync.logs import get_logger
from amo1c_sync.store import journal
from amo1c_sync.store import lifecycle as lstore

log = get_logger("amo1c_sync.jobs.card_cancel")

JOB = "registration"


def cancel_flagged(ctx: JobContext, result: JobResult, leads: Iterable[dict[str, Any]], *,
                   which: Callable[[int], bool] = lambda _lead_id: True) -> None:
    """Cancel the «Заявка» of every polled lead with the cancel flag set, and finish the cancels
    a previous cycle began; of the leads ``which`` admits. Off when ``[fields] cancel_flag`` is
    empty."""
    flag = ctx.settings.fields.cancel_flag
    if not flag:
        return
    fm = ctx.amocrm.lead_field_map([flag], tz=ctx.settings.sync.timezone)
    wanted = {int(lead["id"]): lead for lead in leads if checked(fm.get(lead, flag)) and which(int(lead["id"]))}
    under_way = {c.lead_id: c for c in lstore.cancels_under_way(ctx.store) if which(c.lead_id)}
    if not wanted and not under_way:
        return
    fence = getattr(ctx, "fence", None)
    if fence is not None:   # a leader that cannot confirm its lock writes nothing
        fence()
    waiting = lstore.begin_cancel(ctx.store, wanted)
    if waiting:
        result.count("cancel_waits_lifecycle", len(waiting))
        log.info("card_cancel.waits_for_lifecycle", leads=sorted(waiting))
    todo = sorted((set(wanted) | set(under_way)) - waiting)
    if not todo:
        return
    current = {int(lead["id"]): lead for lead in ctx.amocrm.get_leads(todo)}
    for lead_id in todo:
        if ctx.stopping():
            return
        try:
            _cancel(ctx, result, fm, lead_id, current.get(lead_id), under_way.get(lead_id))
        except (ItemError, RetriableError) as exc:
            result.count("cancel_failed")
            result.item_failed(f"lead {lead_id}: cancel from the card: {exc}")


def _cancel(ctx: JobContext, result: JobResult, fm: Any, lead_id: int, lead: dict[str, Any] | None,
            plan: lstore.Cancel | None) -> None:
    if lead is None:  # deleted since: nothing to write it on
        lstore.finish_cancel(ctx.store, lead_id, job=JOB, run_id=result.run_id, entries=[
            {"action": "card_cancel.lead_gone", "message": "lead deleted; cancel dropped"}])
        return
    if plan is None or plan.note is None:
        plan = _plan(ctx, lead_id)
    if plan.zayavka_ref:
        try:
            _cancel_in_1c(ctx, plan)
        except ItemError as exc:
            _refused(ctx, result, plan, exc)
            raise
    result.count("cancelled_from_card" if plan.zayavka_ref else "nothing_to_cancel")
    _write_lead(ctx, result, fm, lead, plan)


def _standing(ctx: JobContext, zayavka: Any) -> bool:
    return zayavka.posted or ctx.settings.sync.cancel_mode == "delete_mark"


def _plan(ctx: JobContext, lead_id: int) -> lstore.Cancel:
    """Which «Заявка» is cancelled (the lead's latest standing one) and the note, fixed before any
    write."""
    found = [z for z in ctx.onec.zayavki_by_lead(lead_id) if _standing(ctx, z)]
    if found:
        z = found[-1]
        return _planned(ctx, lead_id, z.ref, z.number, lc.card_cancelled_note(z.number))
    gone = [f for f in lstore.of_lead(ctx.store, lead_id) if f.mirrored is not None]
    note = lc.card_already_cancelled_note(gone[-1].number) if gone else lc.nothing_to_cancel_note()
    return _planned(ctx, lead_id, None, gone[-1].number if gone else None, note)


def _planned(ctx: JobContext, lead_id: int, ref: str | None, number: str | None, note: str) -> lstore.Cancel:
    lstore.plan_cancel(ctx.store, lead_id, ref=ref, number=number, note=note)
    return lstore.Cancel(lead_id, ref, number, note)


def _cancel_in_1c(ctx: JobContext, plan: lstore.Cancel) -> None:
    z = ctx.onec.get_zayavka(str(plan.zayavka_ref))
    if z.day is None or z.start is None:
        raise ItemError(f"«Заявка» № {display_number(z.number)} has no appointment date or start time")
    doctors = {d.ref: d.name for d in ctx.onec.doctors()}
    delete = ctx.settings.sync.cancel_mode == "delete_mark"
    written = lc.Appointment(number=z.number, day=z.day, start=z.start,
                             doctor=doctors.get(z.doctor_ref or "", ""), posted=False,
                             deleted=delete or z.deletion_mark)
    if delete:
        ctx.onec.mark_zayavka_deleted(z.ref)
    else:
        ctx.onec.unpost(ctx.onec.names.zayavka, z.ref)
    lstore.set_written(ctx.store, z.ref, z.number, plan.lead_id, written, job=JOB, run_id=None, entry={
        "system": "1c", "action": "card_cancel.1c",
        "message": f"Заявка № {display_number(z.number)}: "
                   + ("помечена на удаление" if delete else "проведение отменено") + " (отмена из карточки)",
        "detail": {"cancel_mode": ctx.settings.sync.cancel_mode}})


def _refused(ctx: JobContext, result: JobResult, plan: lstore.Cancel, exc: ItemError) -> None:
    """1C refuses the cancel: one note on the lead says so (not repeated while it is retried)."""
    number = str(plan.number or "")
    result.count("cancel_refused")
    head = lc.CARD_CANCEL_REFUSED_HEAD + f"Заявка № {display_number(number)} "
    if any(t.startswith(head) for t in ctx.amocrm.lead_note_texts(plan.lead_id)):
        return
    note = lc.card_cancel_refused_note(number, str(exc))
    _ok(ctx.amocrm.add_notes([(plan.lead_id, note)]), plan.lead_id)
    journal.record(ctx.store, job=JOB, system="amocrm", action="card_cancel.refused", lead_id=plan.lead_id,
                   ref=plan.zayavka_ref, message=note, detail={"error": str(exc)})


def _write_lead(ctx: JobContext, result: JobResult, fm: Any, lead: dict[str, Any], plan: lstore.Cancel) -> None:
    lead_id = plan.lead_id
    patch: dict[str, Any] = {"id": lead_id, "custom_fields_values": [fm.cf(ctx.settings.fields.cancel_flag, False)]}
    entries: list[dict[str, Any]] = [{"action": "card_cancel.note", "message": plan.note, "ref": plan.zayavka_ref}]
    if plan.zayavka_ref:
        where = lc.LeadStage(int(lead.get("pipeline_id") or 0), int(lead.get("status_id") or 0))
        decision = lc.decide_move("cancelled", where, stages_of(ctx),
                                  move_closed=ctx.settings.stages.move_closed)
        if isinstance(decision, lc.Move):
            patch.update(lc.lead_patch(lead_id, decision))
            entries.append({"action": "lifecycle.stage", "message": f"Этап -> {decision.to}",
                            "ref": plan.zayavka_ref, "detail": {"key": "cancelled"}})
    if plan.note and plan.note not in ctx.amocrm.lead_note_texts(lead_id):
        _ok(ctx.amocrm.add_notes([(lead_id, plan.note)]), lead_id)
    _ok(ctx.amocrm.update_leads([patch]), lead_id)
    lstore.finish_cancel(ctx.store, lead_id, job=JOB, run_id=result.run_id, entries=entries)


def _ok(outcome: Any, lead_id: int) -> None:
    err = outcome.failed.get(lead_id)
    if err is not None:
        raise err
