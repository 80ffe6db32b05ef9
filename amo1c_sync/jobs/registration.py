"""F2: flagged lead -> «Заявка» in 1C, idempotently; result written back to the lead.

One cycle:
1. One amoCRM request (usually): leads with ``updated_at >= cursor - overlap``. The lead fields are
   resolved once and kept by the amoCRM gateway (``lead_field_map``), so an idle cycle costs that single request and nothing in
   1C. 1C is touched only when a flagged lead is seen.
2. Per flagged lead, in ``updated_at`` order: read and validate its fields (missing, unknown
   doctor, doctor not working that day, time off the grid / outside the hours / busy — counting
   the lead's own «Заявка» as free); resolve the client; look up its «Заявка» by «Номер AmoCRM»
   (1C is the truth; the Registration row is a cache); update it or create one (the row with the
   new ref is committed right after creating, before posting); post it; then write ONE note and
   ONE lead PATCH (flag cleared, «Заявка 1С» number). The note goes first: if the PATCH fails the
   lead stays flagged and the whole lead is retried (a duplicate note at worst, never a lost one).
3. A lead whose 1C or amoCRM calls fail is recorded (status failed, and its RetryItem) and the
   others go on. A passing fault (RetriableError) is retried after an exponential backoff, and
   the cursor advances only past the leading run of leads that are fully handled, so the lead is
   seen again. An item error (the lead cannot succeed as it is) is not retried until the lead
   changes: a change moves its updated_at past the cursor, and past the version recorded.

A dry run is the same cycle through the recording adapters of jobs/dry_run.py.

Notes: «Создан документ Заявка № 219» when the lead had no confirmed registration before (also
when a «Заявка» created by a crashed run is found by the lookup), «Изменён документ Заявка № 219»
when a confirmed one was changed; unchanged data -> «Запись уже зарегистрирована …».
"""

from __future__ import annotations

import hashlib
import json
import time as _time
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from amo1c_sync.domain import registration as rules
from amo1c_sync.domain import slots as slot_rules
from amo1c_sync.domain.dates import format_time
from amo1c_sync.errors import FatalError, ItemError, RetriableError
from amo1c_sync.jobs import card_cancel
from amo1c_sync.jobs.base import JobContext, JobResult
from amo1c_sync.domain.slots import DoctorDay, NotWorking, UnknownDoctor
from amo1c_sync.logs import get_logger
from amo1c_sync.services.slots import SlotFinder
from amo1c_sync.store import cursors, registrations
from amo1c_sync.store import retry as retries
from amo1c_sync.store.journal import record
from amo1c_sync.store.models import Registration, utcnow

log = get_logger("amo1c_sync.jobs.registration")

JOB = "registration"
#: with no cursor yet, look back this far (a flagged lead was updated when the button was pressed)
FIRST_LOOKBACK = 86400

class Invalid(Exception):
    """The lead's data cannot become a «Заявка»; the message is the lead's note."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# --- helpers shared with other modules ----------------------------------------------------------


def field_map(amo: Any, settings: Any) -> Any:
    """The lead FieldMap of the fields registration reads and writes (the gateway keeps the list)."""
    f = settings.fields
    required = [f.date, f.doctor, f.time, f.client_name, f.flag]
    if f.zayavka_number:
        required.append(f.zayavka_number)
    return amo.lead_field_map(required, tz=settings.sync.timezone)


def _raw_value(fm: Any, lead: dict, name: str) -> Any:
    values = fm.raw(lead, name)
    if not values:
        return None
    return values[0].get("value")


def is_flagged(fm: Any, lead: dict, flag_name: str) -> bool:
    value = _raw_value(fm, lead, flag_name)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "да", "yes", "on")
    return bool(value)


# --- the cycle ----------------------------------------------------------------------------------


@dataclass
class _Cycle:
    ctx: JobContext
    result: JobResult
    fm: Any
    now: datetime
    _finder: SlotFinder | None = None
    _defaults: dict = field(default_factory=dict)

    @property
    def settings(self):
        return self.ctx.settings

    @property
    def finder(self) -> SlotFinder:
        if self._finder is None:
            self._finder = SlotFinder.from_settings(self.settings, self.ctx.onec)
        return self._finder

    def default(self, what: str):
        if what not in self._defaults:
            onec = self.ctx.onec
            item = onec.default_client() if what == "client" else onec.default_nomenclature()
            if item is None:
                n = onec.names
                name = n.default_client if what == "client" else n.default_nomenclature
                where = n.clients if what == "client" else n.nomenclature
                raise ItemError(f"в 1С нет элемента «{name}» в {where} (нужен для записи из amoCRM)",
                                code="1c:no_default_item")
            self._defaults[what] = item
        return self._defaults[what]


def run(ctx: JobContext, result: JobResult) -> None:
    settings = ctx.settings
    amo = ctx.amocrm
    fm = field_map(amo, settings)
    cursor = cursors.registration(ctx.store)
    start = cursor if cursor is not None else int(_time.time()) - FIRST_LOOKBACK
    overlap = int(settings.sync.lead_cursor_overlap)
    leads = list(amo.iter_leads_updated_since(start, overlap))
    result.count("leads_seen", len(leads))
    cycle = _Cycle(ctx, result, fm, utcnow())
    run_of_handled = cursors.LeadingRun(start)
    for lead in leads:
        if ctx.stopping():
            break
        if _handle(cycle, lead):
            run_of_handled.handled(int(lead.get("updated_at") or 0))
        else:
            run_of_handled.unhandled()
    card_cancel.cancel_flagged(ctx, result, leads)
    if cursor is None or run_of_handled.value > cursor:
        cursors.advance_registration(ctx.store, run_of_handled.value)


def _handle(c: _Cycle, lead: dict) -> bool:
    """Process one lead; True when it is fully handled (the cursor may move past it)."""
    ctx, result, f = c.ctx, c.result, c.settings.fields
    lead_id = int(lead["id"])
    if not is_flagged(c.fm, lead, f.flag):
        return True
    result.count("flagged")
    reg, failure = registrations.get(ctx.store, lead_id)
    version = _version(lead)
    decision = retries.decide(failure, now=c.now, changed=failure is not None and failure.version != version)
    if decision == "waiting":
        result.count("waiting_for_change")
        return True
    if decision == "deferred":
        result.count("deferred")
        return False
    try:
        _register(c, lead, reg)
        return True
    except Invalid as inv:
        return _reject(c, lead, inv)
    except FatalError:
        raise
    except ItemError as exc:
        # cannot succeed as it is: recorded, not retried until the lead changes (a change moves
        # its updated_at past the cursor, so the poll sees it again)
        _failed(c, lead, str(exc), code=exc.code, retry=False)
        return True
    except RetriableError as exc:
        _failed(c, lead, str(exc))
        return False
    except Exception as exc:  # noqa: BLE001 - one bad lead must not stop the others
        log.exception("registration.lead_crashed", lead_id=lead_id)
        _failed(c, lead, f"{type(exc).__name__}: {exc}")
        return False


def _version(lead: dict) -> str:
    """What the lead looked like, for a recorded failure: its updated_at (amoCRM moves it on any
    change, to the second) and a digest of its field values (a change within that same second)."""
    values = json.dumps(lead.get("custom_fields_values") or [], sort_keys=True, ensure_ascii=False, default=str)
    return f"{int(lead.get('updated_at') or 0)}:{hashlib.sha256(values.encode()).hexdigest()[:16]}"


def _request_of(c: _Cycle, lead: dict) -> rules.Request:
    f = c.settings.fields
    parsed = rules.parse_request(
        int(lead["id"]), date_value=_raw_value(c.fm, lead, f.date),
        doctor_value=_raw_value(c.fm, lead, f.doctor), time_value=_raw_value(c.fm, lead, f.time),
        client_value=_raw_value(c.fm, lead, f.client_name), tz=c.settings.sync.tz,
        labels=rules.FieldLabels.from_settings(f), client_name_max=c.settings.sync.client_name_max_length)
    if isinstance(parsed, rules.Invalid):
        raise Invalid(parsed.code, parsed.message)
    return parsed


def _register(c: _Cycle, lead: dict, reg: Registration | None) -> None:
    lead_id = int(lead["id"])
    req = _request_of(c, lead)
    existing = [z for z in c.ctx.onec.zayavki_by_lead(lead_id) if not z.deletion_mark]
    zay = existing[0] if existing else None
    if len(existing) > 1:
        log.warning("registration.several_zayavki", lead_id=lead_id, refs=[z.ref for z in existing])
    if zay is not None and reg is not None and _unchanged(c, req, reg, zay):
        if not zay.posted:
            _post(c, lead_id, zay)
        _write_back(c, lead_id, zay.number, rules.already_note(zay.number, req), req.fingerprint, zay.ref,
                    action="lead.already_registered")
        c.result.count("unchanged")
        return
    day = _free_day(c, req, existing, zay)
    client_ref, remark = _client(c, lead_id, req)
    values = dict(client_ref=client_ref, doctor_ref=day.doctor_ref, day=req.day, start=req.time,
                  end=slot_rules.end_time(req.time, c.settings.sync.appointment_minutes))
    created_now = zay is None
    zay = _write_zayavka(c, lead_id, zay, values)
    first = created_now or reg is None or reg.fingerprint is None
    note = rules.created_note(zay.number) if first else rules.updated_note(zay.number)
    _post(c, lead_id, zay)
    _write_back(c, lead_id, zay.number, rules.with_remarks(note, remark), req.fingerprint, zay.ref,
                action="lead.registered")
    c.result.count("created" if first else "updated")


def _unchanged(c: _Cycle, req: rules.Request, reg: Registration, zay: Any) -> bool:
    """The lead asks for what its confirmed «Заявка» already is."""
    return (reg.fingerprint == req.fingerprint and (reg.zayavka_ref or "").lower() == zay.ref.lower()
            and zay.day == req.day and zay.start == req.time
            and (zay.doctor_ref or "").lower() in c.finder.refs_named(req.doctor))


def _free_day(c: _Cycle, req: rules.Request, existing: list, zay: Any) -> DoctorDay:
    """The doctor's day when the asked time is free on it (the lead's own «Заявка» not counted);
    else Invalid with the note that says why."""
    sync = c.settings.sync
    day = c.finder.day_of(req.day, req.doctor, exclude_refs=[z.ref for z in existing])
    if isinstance(day, (UnknownDoctor, NotWorking)):
        msg = (rules.unknown_doctor_message if isinstance(day, UnknownDoctor)
               else rules.not_working_message)(req.doctor, req.day, day.working)
        raise Invalid(day.code, _kept(msg, zay))
    reason = slot_rules.classify(req.time, day.intervals, day.busy, sync.slot_step_minutes,
                                 sync.appointment_minutes)
    if reason != slot_rules.FREE:
        near = slot_rules.nearest(day.free, req.time)
        raise Invalid(f"time_{reason}", _kept(rules.time_message(
            reason, doctor=day.doctor, day=req.day, t=req.time, intervals=day.intervals,
            step_minutes=sync.slot_step_minutes, free_near=near), zay))
    return day


def _write_zayavka(c: _Cycle, lead_id: int, zay: Any, values: dict) -> Any:
    """Update the lead's «Заявка», or create one; its ref is recorded right after, before
    anything else can fail (a rerun finds it, and so does 1C's lookup by «Номер AmoCRM»)."""
    onec = c.ctx.onec
    if zay is not None:
        zay = onec.update_zayavka(zay.ref, **values)
        _record(c, lead_id, zay, action="zayavka.updated", system="1c",
                message=f"«Заявка» № {rules.display_number(zay.number)} изменена", detail=_plain(values))
        return zay
    doc_date = datetime.now(c.settings.sync.tz).replace(tzinfo=None, microsecond=0)  # 1C: naive local
    zay = onec.create_zayavka(lead_id=lead_id, nomenclature_ref=c.default("nomenclature").ref,
                              doc_date=doc_date, **values)
    _record(c, lead_id, zay, action="zayavka.created", system="1c",
            message=f"создан документ «Заявка» № {rules.display_number(zay.number)}", detail=_plain(values))
    return zay


def _kept(message: str, zay: Any) -> str:
    """For a lead that already has a «Заявка», say that it was left as it is."""
    if zay is None:
        return message
    return message.replace("Запись в 1С не создана:",
                           f"Документ Заявка № {rules.display_number(zay.number)} в 1С не изменён:", 1)


def _plain(values: dict) -> dict:
    out = {}
    for k, v in values.items():
        if isinstance(v, time):
            out[k] = format_time(v)
        elif isinstance(v, date):
            out[k] = v.isoformat()
        else:
            out[k] = v
    return out


def _client(c: _Cycle, lead_id: int, req: rules.Request) -> tuple[str, str | None]:
    """The 1C client ref for the lead and a remark for the note (or None)."""
    onec = c.ctx.onec
    if not req.client_name:
        return c.default("client").ref, None
    found = onec.find_clients(req.client_name)
    if found:
        chosen = found[0]
        return chosen.ref, rules.client_remark(name=req.client_name, created=False, matches=len(found),
                                               chosen_code=chosen.code)
    item = onec.create_client(req.client_name)
    record(c.ctx.store, job=JOB, system="1c", action="client.created", lead_id=lead_id, ref=item.ref,
           message=f"создан клиент «{item.name}»", detail={"code": item.code}, run_id=c.result.run_id)
    c.result.count("clients_created")
    return item.ref, rules.client_remark(name=req.client_name, created=True, matches=0)


def _record(c: _Cycle, lead_id: int, zay: Any, *, action: str, system: str, message: str,
            detail: dict) -> None:
    """Registration row (status pending, with the ref) + journal, in one committed transaction."""
    registrations.record_ref(c.ctx.store, lead_id, ref=zay.ref, number=zay.number, entry=dict(
        job=JOB, system=system, action=action, message=message, detail={"number": zay.number, **detail},
        run_id=c.result.run_id))


def _post(c: _Cycle, lead_id: int, zay: Any) -> None:
    onec = c.ctx.onec
    onec.post(onec.names.zayavka, zay.ref)
    record(c.ctx.store, job=JOB, system="1c", action="zayavka.posted", lead_id=lead_id, ref=zay.ref,
           message=f"проведён документ «Заявка» № {rules.display_number(zay.number)}", run_id=c.result.run_id)


def _lead_patch(c: _Cycle, lead_id: int, number: str | None) -> dict:
    f = c.settings.fields
    cfv = [c.fm.cf(f.flag, False)]
    if number is not None and f.zayavka_number:
        cfv.append(c.fm.cf(f.zayavka_number, rules.display_number(number)))
    return {"id": lead_id, "custom_fields_values": cfv}


def _amo_write(c: _Cycle, lead_id: int, note: str, patch: dict) -> None:
    """One note, then one PATCH; raise ItemError/RetriableError when amoCRM refuses either or
    does not confirm it (a lead its answer does not list is not written, whatever the status)."""
    amo = c.ctx.amocrm
    _confirmed(amo.add_notes([(lead_id, note)]), lead_id, "the note")
    _confirmed(amo.update_leads([patch]), lead_id, "the lead update")


def _confirmed(outcome, lead_id: int, what: str) -> None:
    if lead_id in outcome.failed:
        raise outcome.failed[lead_id]
    if lead_id not in outcome.ok:
        raise RetriableError(f"amoCRM did not confirm {what} on lead {lead_id}")


def _write_back(c: _Cycle, lead_id: int, number: str, note: str, fp: str, ref: str, *, action: str) -> None:
    note = rules.finish_note(note)
    patch = _lead_patch(c, lead_id, number)
    _amo_write(c, lead_id, note, patch)
    registrations.record_done(c.ctx.store, lead_id, ref=ref, number=number, fingerprint=fp, entry=dict(
        job=JOB, system="amocrm", action=action, message=note, detail={"patch": patch}, run_id=c.result.run_id))


def _reject(c: _Cycle, lead: dict, inv: Invalid) -> bool:
    """Validation failed: note + flag cleared, nothing in 1C. True when amoCRM took both."""
    lead_id = int(lead["id"])
    note = rules.finish_note(inv.message)
    c.result.count("invalid")
    patch = _lead_patch(c, lead_id, None)
    try:
        _amo_write(c, lead_id, note, patch)
    except FatalError:
        raise
    except ItemError as exc:
        _failed(c, lead, f"{note} (и не удалось записать заметку: {exc})", code=exc.code, retry=False)
        return True
    except RetriableError as exc:
        _failed(c, lead, f"{note} (и не удалось записать заметку: {exc})")
        return False
    registrations.record_invalid(c.ctx.store, lead_id, note=note, entry=dict(
        job=JOB, system="amocrm", action="lead.invalid", detail={"code": inv.code, "patch": patch},
        run_id=c.result.run_id))
    return True


def _failed(c: _Cycle, lead: dict, error: str, *, code: str | None = None, retry: bool = True) -> None:
    """Record a lead that failed: with ``retry`` (a passing fault) tried again after a backoff,
    else (an item error) only once the lead changed."""
    lead_id = int(lead["id"])
    c.result.count("failed")
    c.result.item_failed(f"lead {lead_id}: {error}")
    log.warning("registration.lead_failed", lead_id=lead_id, error=error, code=code, retry=retry)
    item = registrations.record_failure(c.ctx.store, lead_id, error=error, code=code, retriable=retry,
                                        version=_version(lead), policy=retries.policy_of(c.settings),
                                        job=JOB, run_id=c.result.run_id)
    if item.state == retries.GIVEN_UP:
        c.result.count("given_up")
