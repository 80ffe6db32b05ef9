"""F2: flagged lead -> «Заявка» in 1C, idempotently; results written back to the leads in batches.

One cycle:
1. One amoCRM request (usually): the flag's change events since the last read, and the flagged
   leads they name read by id (``_leads_since``, jobs/flagged.py; the lead listing is an hourly
   reconciliation). The lead fields are resolved once and kept by the amoCRM gateway, so an idle
   cycle costs that single request and nothing in 1C.
2. One batched 1C read (``OneC.zayavki_for``) for every due flagged lead: their «Заявки» by
   «Номер AmoCRM» and the bookings of each (doctor, day) they ask for. The schedules, the doctors,
   the default client and nomenclature are kept for the daemon's run (``[sync]
   schedule_cache_ttl``); the bookings for the cycle, updated with what the cycle itself books.
   A lone lead costs three 1C requests: that read, the create, the post.
3. The due flagged leads in groups of 50, in ``updated_at`` order; each group claimed in one
   store transaction (store/registrations.py: one process at a time per lead, also while
   leadership moves). Per lead: validate; find its «Заявка» (1C is the truth, the Registration row
   a cache); update it when it differs, or create one (the intent committed just before); post it.
   The leader lock is confirmed (``ctx.fence()``) before each of these writes, not only between
   leads.
4. Per group: ONE notes POST, ONE PATCH (flag cleared, «Заявка 1С»), ONE store commit (the rows
   with their refs and fingerprints, the journal of what was done in 1C and amoCRM, the claims
   released). A lead that fails commits its own row, journal and retry record.

What a SIGKILL (or a lost answer) at each point leaves:
* before the create: nothing in 1C; the lead is still flagged and is tried again.
* create sent (the intent ``create_sent_at`` was committed before it), answer lost or late: the
  next attempt — this process or another leader — finds the unconfirmed intent and looks the
  «Заявка» up by «Номер AmoCRM»; found, it is used; not found, the lead is left for a later cycle
  (flag, intent and cursor kept, nothing waited for) until ``[sync] create_settle_seconds`` after
  the intent, and only then created again: 1C's late create is found, not doubled.
  The look-up comes before the lead is validated: a lead edited to invalid meanwhile waits too,
  and once its «Заявка» shows, its note says the «Заявка» was left as it is.
* after the create was answered, before the batch commit (the row has the intent, not the ref):
  the next attempt's first look-up finds the «Заявка»; posting again is harmless; the journal
  entries of this attempt are lost with the process, the «Заявка» is not.
* after an update of the «Заявка» (a reschedule from the card), before the lifecycle's baseline
  records it: the lifecycle job sees the card's values on the lead and writes no «Запись
  перенесена» (the baseline, recorded after the 1C write, never claims a write 1C refused).
* before the notes POST: the lead is flagged; the rerun finds its «Заявка» and writes the note.
* after the notes POST, before the PATCH: the lead is still flagged; the rerun writes the note
  again — a duplicate note at worst, never a lost one, never a second «Заявка».
* after the PATCH, before the store commit: the lead is unflagged and shows the number; the row
  is pending. Reconciliation (``_reconcile``, at most every RECONCILE_EVERY seconds) sees the lead
  written back and records it done; a lead amoCRM no longer has is recorded ``deleted`` and leaves
  the retry queue.
* after the commit: done.

A lead's first attempt in a cycle sends its 1C requests without inline retries
(``OneC.fail_fast``): a passing 1C fault puts the lead aside, with nothing recorded, and it is
tried again, with the transport's retries, after the rest of its group, so one lead's backoff
does not hold up the others; that second attempt re-reads its row (it sees a create the first one
sent) and looks its «Заявка» up in 1C again. A lead whose calls still fail is recorded (status
failed, and its RetryItem) and the others go on. A passing fault is retried after an exponential
backoff and the cursor advances only past the leading run of fully handled leads. An item error
waits until the lead changes. A «Заявка» 1C refuses to post gets one note saying so and is
retried. A dry run is the same cycle through the recording adapters of jobs/dry_run.py.

The card's cancels (jobs/card_cancel.py) of leads the cycle does not register run before the
registration work, so they never wait behind a long cycle; a lead with both flags is registered
first and cancelled after.

Notes: «Создан документ Заявка № 219» when the lead had no confirmed registration before (also
when a «Заявка» created by a crashed run is found by the lookup), «Изменён документ Заявка № 219»
when a confirmed one was changed; unchanged data -> «Запись уже зарегистрирована …».
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time as _time
import uuid
import weakref
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Callable, ContextManager

from amo1c_sync.domain import registration as rules
from amo1c_sync.domain import slots as slot_rules
from amo1c_sync.amocrm.fields import checked
from amo1c_sync.amocrm.gateway import BatchResult
from amo1c_sync.config import Settings
from amo1c_sync.domain.dates import format_time
from amo1c_sync.errors import FatalError, ItemError, RetriableError
from amo1c_sync.jobs import card_cancel, patient
from amo1c_sync.jobs.base import JobContext, JobResult
from amo1c_sync.jobs.flagged import leads_to_register
from amo1c_sync.domain.slots import DoctorDay, NotWorking, UnknownDoctor
from amo1c_sync.leader import LeadershipLost
from amo1c_sync.logs import get_logger
from amo1c_sync.services.slots import SlotFinder
from amo1c_sync.store import cursors, registrations
from amo1c_sync.store import lifecycle as lstore
from amo1c_sync.store import retry as retries
from amo1c_sync.store.journal import record
from amo1c_sync.store.models import Registration, RetryItem, utcnow

log = get_logger("amo1c_sync.jobs.registration")

JOB = "registration"
#: with no cursor yet, look back this far (a flagged lead was updated when the button was pressed)
FIRST_LOOKBACK = 86400
#: leads per write-back batch: amoCRM takes at most 50 notes or leads per request
BATCH = 50
#: seconds between reconciliations of rows left pending or failed (one amoCRM read)
RECONCILE_EVERY = 300.0
POST_REFUSED = "1c:post_refused"

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


def _raw_value(fm: Any, lead: dict[str, Any], name: str) -> Any:
    values = fm.raw(lead, name)
    if not values:
        return None
    return values[0].get("value")


def is_flagged(fm: Any, lead: dict[str, Any], flag_name: str) -> bool:
    return checked(_raw_value(fm, lead, flag_name))


# --- what lives for the daemon's run -----------------------------------------------------------


class _Bookings:
    """The 1C gateway as the SlotFinder sees it: a (doctor, day)'s «Заявки» are read once per
    cycle (or come from the cycle's batched read) and follow what the cycle itself books."""

    def __init__(self, onec: Any):
        self.onec = onec
        self.days: dict[tuple[date, str], list[Any]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.onec, name)

    def zayavki_on(self, day: date, doctor_ref: str | None = None) -> list[Any]:
        if doctor_ref is None:
            return list(self.onec.zayavki_on(day, doctor_ref))
        key = (day, doctor_ref.lower())
        if key not in self.days:
            self.days[key] = list(self.onec.zayavki_on(day, doctor_ref))
        return list(self.days[key])

    def booked(self, zay: Any) -> None:
        """A «Заявка» was created or moved by this cycle."""
        ref = zay.ref.lower()
        for rows in self.days.values():
            rows[:] = [z for z in rows if z.ref.lower() != ref]
        key = (zay.day, (zay.doctor_ref or "").lower())
        if key in self.days:
            self.days[key].append(zay)


@dataclass
class _RunState:
    bookings: _Bookings
    finder: SlotFinder
    defaults: dict[str, tuple[float, Any]] = field(default_factory=dict)
    reconciled_at: float | None = None
    #: who holds a lead's claim: this process and this context (a term of leadership)
    owner: str = field(default_factory=lambda: _owner())


_RUNS: "weakref.WeakKeyDictionary[Any, _RunState]" = weakref.WeakKeyDictionary()


def _run_state(ctx: JobContext) -> _RunState:
    """The caches of this context (the daemon keeps one context per term of leadership)."""
    state = _RUNS.get(ctx)
    if state is None:
        bookings = _Bookings(ctx.onec)
        state = _RunState(bookings, SlotFinder.from_settings(ctx.settings, bookings))
        _RUNS[ctx] = state
    state.bookings.days = {}
    return state


# --- the cycle ----------------------------------------------------------------------------------


@dataclass
class _WriteBack:
    """One lead's result waiting for the batch's note, PATCH and commit."""

    lead: dict[str, Any]
    note: str
    patch: dict[str, Any]
    kind: str  # done | invalid
    zay: Any = None
    fingerprint: str | None = None
    action: str = "lead.registered"
    code: str | None = None
    handled: bool = False

    @property
    def lead_id(self) -> int:
        return int(self.lead["id"])


class _Stopped(Exception):
    """Stopping (SIGTERM, or this process's claim on the lead was taken): leave the lead as it is."""


class _Settling(Exception):
    """The lead's create was sent and is not confirmed, nor found in 1C, and 1C may still carry it
    out: the lead waits for a later cycle (nothing is written for it now)."""


#: a first attempt met a passing 1C fault: the lead is tried again after the rest of its group
_DEFER = object()


class _PostRefused(Exception):
    def __init__(self, zay: Any, cause: Exception):
        super().__init__(str(cause))
        self.zay, self.cause = zay, cause


@dataclass
class _Cycle:
    ctx: JobContext
    result: JobResult
    fm: Any
    now: datetime
    run: _RunState
    rows: dict[int, tuple[Registration | None, RetryItem | None]] = field(default_factory=dict)
    found: dict[int, list[Any]] | None = None
    pending: list[_WriteBack] = field(default_factory=list)
    claims: dict[int, float] = field(default_factory=dict)
    #: per lead: the journal entries of what this attempt did in 1C, and the «Заявка» it wrote
    entries: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    made: dict[int, Any] = field(default_factory=dict)
    #: leads whose create was sent and not answered (its intent must stay)
    in_flight: set[int] = field(default_factory=set)
    #: leads whose create this cycle sent failed: their error, if 1C does not show the «Заявка»
    first_errors: dict[int, str] = field(default_factory=dict)
    #: a first attempt is under way (no inline 1C retries)
    fast: bool = False
    #: the main amoCRM contacts of the group's leads (jobs/patient.py), and the keys to write back
    contacts: patient.Contacts = field(default_factory=patient.Contacts)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def finder(self) -> SlotFinder:
        return self.run.finder

    @property
    def settle(self) -> float:
        return float(getattr(self.settings.sync, "create_settle_seconds", 30.0))

    @property
    def lease(self) -> float:
        """A claim outlives the longest step (a create waits up to the 1C read timeout)."""
        o = self.settings.onec
        return self.settle + float(o.read_timeout) + float(o.connect_timeout)

    def default(self, what: str) -> Any:
        hit = self.run.defaults.get(what)
        if hit is not None and _time.monotonic() - hit[0] < float(self.settings.sync.schedule_cache_ttl):
            return hit[1]
        onec = self.ctx.onec
        item = onec.default_client() if what == "client" else onec.default_nomenclature()
        if item is None:
            n = onec.names
            name = n.default_client if what == "client" else n.default_nomenclature
            where = n.clients if what == "client" else n.nomenclature
            raise ItemError(f"в 1С нет элемента «{name}» в {where} (нужен для записи из amoCRM)",
                            code="1c:no_default_item")
        self.run.defaults[what] = (_time.monotonic(), item)
        return item


def _leads_since(ctx: JobContext, result: JobResult, fm: Any) -> list[dict[str, Any]]:
    """The flagged leads of this cycle (the one call that finds them): amoCRM's events, with the
    lead listing as a periodic reconciliation (jobs/flagged.py)."""
    return leads_to_register(ctx, result, fm)


def run(ctx: JobContext, result: JobResult) -> None:
    settings = ctx.settings
    fm = field_map(ctx.amocrm, settings)
    cursor = cursors.registration(ctx.store)
    start = cursor if cursor is not None else int(_time.time()) - FIRST_LOOKBACK
    leads = _leads_since(ctx, result, fm)
    result.count("leads_seen", len(leads))
    c = _Cycle(ctx, result, fm, utcnow(), _run_state(ctx))
    flag = settings.fields.flag
    registering = {int(lead["id"]) for lead in leads if is_flagged(fm, lead, flag)}
    try:
        # the card's cancels of leads this cycle does not register do not wait behind it
        card_cancel.cancel_flagged(ctx, result, leads, which=lambda lead_id: lead_id not in registering)
        outcomes = _work(c, leads)
        _reconcile(c, leads)
        if registering:   # a lead with both flags: registered first, then cancelled
            card_cancel.cancel_flagged(ctx, result, leads, which=lambda lead_id: lead_id in registering)
        _fence(c)
    except LeadershipLost as exc:
        # another process may lead now: write nothing more, not even the cursor
        result.status = "interrupted"
        result.errors.append(str(exc))
        result.count("leadership_lost")
        log.warning("registration.leadership_lost", error=str(exc))
        return
    run_of_handled = cursors.LeadingRun(start)
    for updated_at, outcome in outcomes:
        handled = outcome.handled if isinstance(outcome, _WriteBack) else outcome
        if handled:
            run_of_handled.handled(updated_at)
        else:
            run_of_handled.unhandled()
    if cursor is None or run_of_handled.value > cursor:
        cursors.advance_registration(ctx.store, run_of_handled.value)


def _work(c: _Cycle, leads: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """Handle the leads: the due flagged ones in groups of BATCH (one 1C read, one claim, one
    write-back each); (updated_at, outcome) of each lead in listing order."""
    flag = c.settings.fields.flag
    flagged = [lead for lead in leads if is_flagged(c.fm, lead, flag)]
    c.rows = registrations.load(c.ctx.store, [int(lead["id"]) for lead in flagged]) if flagged else {}
    outcomes: dict[int, Any] = {}
    due = []
    for lead in flagged:
        c.result.count("flagged")
        decision = _decision(c, lead)
        if decision == "due":
            due.append(lead)
        else:
            c.result.count("waiting_for_change" if decision == "waiting" else "deferred")
            outcomes[int(lead["id"])] = decision == "waiting"
    for i in range(0, len(due), BATCH):
        if c.ctx.stopping():
            break
        _group(c, due[i:i + BATCH], outcomes)
    stop_at = next((int(lead["id"]) for lead in flagged if int(lead["id"]) not in outcomes), None)
    out = []
    for lead in leads:
        lead_id = int(lead["id"])
        if lead_id == stop_at:
            break   # stopped before this lead: it and those after it are not handled
        out.append((int(lead.get("updated_at") or 0), outcomes.get(lead_id, True)))
    return out


def _group(c: _Cycle, group: list[dict[str, Any]], outcomes: dict[int, Any]) -> None:
    """Up to BATCH due leads: read 1C and their main contacts for all, claim all, register each,
    write back all, then the patients' 1C keys on their contacts."""
    _prefetch(c, group)
    c.contacts = patient.main_contacts(c.ctx.amocrm, group, c.settings)  # one batched read
    released: list[int] = []
    deferred = _attempts(c, group, outcomes, released, fast=True)
    if deferred:
        for lead in deferred:   # looked up again: the cycle's batched read may predate its create
            if c.found is not None:
                c.found.pop(int(lead["id"]), None)
        _attempts(c, deferred, outcomes, released, fast=False)
    _flush(c)
    for lead_id in released:
        c.claims.pop(lead_id, None)
    registrations.release(c.ctx.store, released, c.run.owner,
                          create_unsent=[i for i in released if i not in c.in_flight])
    _fence(c)   # the keys are an external write too
    patient.write_keys(c.ctx, c.result, c.contacts, job=JOB)


def _attempts(c: _Cycle, leads: list[dict[str, Any]], outcomes: dict[int, Any], released: list[int], *,
              fast: bool) -> list[dict[str, Any]]:
    """Claim the leads (their rows read afresh) and attempt each; the leads a first (``fast``)
    attempt put aside, still claimed."""
    _fence(c)
    claimed = registrations.claim(c.ctx.store, [int(lead["id"]) for lead in leads], c.run.owner,
                                  lease=c.lease, dead=_gone)
    deferred = []
    for lead in leads:
        lead_id = int(lead["id"])
        if lead_id not in claimed:
            c.result.count("claimed_elsewhere")
            outcomes[lead_id] = False
            continue
        if c.ctx.stopping():
            released.append(lead_id)
            continue
        c.claims[lead_id] = _time.monotonic() + c.lease
        outcome = _attempt(c, lead, claimed[lead_id], fast=fast)
        if outcome is _DEFER:
            deferred.append(lead)
            continue
        outcomes[lead_id] = outcome
        if isinstance(outcome, _WriteBack):
            c.pending.append(outcome)
        else:
            released.append(lead_id)
    return deferred


def _fail_fast(c: _Cycle) -> ContextManager[Any]:
    fail_fast = getattr(c.ctx.onec, "fail_fast", None)
    return fail_fast() if fail_fast is not None else nullcontext()


def _decision(c: _Cycle, lead: dict[str, Any]) -> str:
    _reg, failure = c.rows.get(int(lead["id"]), (None, None))
    return retries.decide(failure, now=c.now,
                          changed=failure is not None and failure.version != _version(lead))


def _prefetch(c: _Cycle, leads: list[dict[str, Any]]) -> None:
    """One batched 1C read for the due flagged leads: their «Заявки» and their days' bookings.
    When it fails, each lead looks itself up (and fails on its own if 1C is away)."""
    if not leads:
        c.found = {}
        return
    try:
        days = set()
        for lead in leads:
            try:
                req = _request_of(c, lead)
            except Invalid:
                continue
            ref = _doctor_ref(c, req)
            if ref is not None:
                days.add((req.day, ref))
        found, booked = c.ctx.onec.zayavki_for([int(lead["id"]) for lead in leads], sorted(days))
    except (RetriableError, ItemError) as exc:
        log.warning("registration.prefetch_failed", error=str(exc), leads=len(leads))
        c.found = None
        return
    c.found = found
    c.run.bookings.days.update(booked)


def _doctor_ref(c: _Cycle, req: rules.Request) -> str | None:
    wanted = rules.clean_name(req.doctor).casefold()
    for name, ref in c.finder.working(req.day):
        if rules.clean_name(name).casefold() == wanted:
            return ref
    return None


def _attempt(c: _Cycle, lead: dict[str, Any], reg: Registration, *, fast: bool = False) -> Any:
    """The lead's outcome: its write-back, whether it is handled, or (``fast``) _DEFER."""
    lead_id = int(lead["id"])
    c.fast = fast
    try:
        with _fail_fast(c) if fast else nullcontext():
            return _register(c, lead, reg)
    except Invalid as inv:
        return _reject(c, lead, inv)
    except (FatalError, LeadershipLost):
        raise
    except _Stopped:
        c.result.count("stopped")
        return False
    except _Settling:
        c.in_flight.add(lead_id)   # the intent stays
        error = c.first_errors.pop(lead_id, None)
        if error is not None:   # this cycle's create failed and 1C does not show it: back off
            _failed(c, lead, error)
        else:
            c.result.count("settle_pending")
        return False
    except _PostRefused as exc:
        return _post_refused(c, lead, exc)
    except ItemError as exc:
        # cannot succeed as it is: recorded, not retried until the lead changes (a change moves
        # its updated_at past the cursor, so the poll sees it again)
        _failed(c, lead, str(exc), code=exc.code, retry=False)
        return True
    except RetriableError as exc:
        if fast:
            c.result.count("deferred_in_cycle")
            if lead_id in c.in_flight:
                c.first_errors[lead_id] = str(exc)
            return _DEFER
        _failed(c, lead, str(exc))
        return False
    except Exception as exc:  # one bad lead must not stop the others
        log.exception("registration.lead_crashed", lead_id=lead_id)
        _failed(c, lead, f"{type(exc).__name__}: {exc}")
        return False
    finally:
        c.fast = False


def _owner() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _gone(owner: str) -> bool:
    """A claim's holder that was a process on this host which no longer runs (a SIGKILLed
    daemon): its claim need not run out. A create it sent may still land: the intent covers it."""
    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname()[:40] or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _fence(c: _Cycle) -> None:
    """Raise LeadershipLost unless this process still holds the leader lock."""
    fence: Callable[[], None] | None = getattr(c.ctx, "fence", None)
    if fence is not None:
        fence()


def _step(c: _Cycle, lead_id: int) -> None:
    """Before each external write of a lead: not stopping, still the leader, still its claim."""
    if c.ctx.stop.is_set():
        raise _Stopped()
    _fence(c)
    until = c.claims.get(lead_id)
    if until is not None and until - _time.monotonic() < c.lease / 2:
        if lead_id not in registrations.claim(c.ctx.store, [lead_id], c.run.owner, lease=c.lease):
            log.warning("registration.claim_lost", lead_id=lead_id)
            raise _Stopped()
        c.claims[lead_id] = _time.monotonic() + c.lease


def _version(lead: dict[str, Any]) -> str:
    """What the lead looked like, for a recorded failure: its updated_at (amoCRM moves it on any
    change, to the second) and a digest of its field values (a change within that same second)."""
    values = json.dumps(lead.get("custom_fields_values") or [], sort_keys=True, ensure_ascii=False, default=str)
    return f"{int(lead.get('updated_at') or 0)}:{hashlib.sha256(values.encode()).hexdigest()[:16]}"


def _request_of(c: _Cycle, lead: dict[str, Any]) -> rules.Request:
    f = c.settings.fields
    parsed = rules.parse_request(
        int(lead["id"]), date_value=_raw_value(c.fm, lead, f.date),
        doctor_value=_raw_value(c.fm, lead, f.doctor), time_value=_raw_value(c.fm, lead, f.time),
        client_value=_raw_value(c.fm, lead, f.client_name), tz=c.settings.sync.tz,
        labels=rules.FieldLabels.from_settings(f), client_name_max=c.settings.sync.client_name_max_length)
    if isinstance(parsed, rules.Invalid):
        raise Invalid(parsed.code, parsed.message)
    return parsed


def _register(c: _Cycle, lead: dict[str, Any], reg: Registration) -> _WriteBack:
    lead_id = int(lead["id"])
    # looked up before the lead is validated: while 1C may still carry out a create of ours, the
    # lead waits, valid or not (an invalid write-back would drop the intent of a «Заявка» to come)
    existing = _lookup(c, lead_id, reg)
    zay = existing[0] if existing else None
    try:
        req = _request_of(c, lead)
    except Invalid as inv:
        raise Invalid(inv.code, _kept(inv.message, zay)) from None
    if len(existing) > 1:
        log.warning("registration.several_zayavki", lead_id=lead_id, refs=[z.ref for z in existing])
    if zay is not None and _unchanged(c, req, reg, zay):
        if not zay.posted:
            _post(c, lead_id, zay)
        c.result.count("unchanged")
        return _done(c, lead, zay, rules.already_note(zay.number, req), req.fingerprint,
                     action="lead.already_registered")
    day = _free_day(c, req, existing, zay)
    client_ref, remark = _client(c, lead_id, req)
    values = dict(client_ref=client_ref, doctor_ref=day.doctor_ref, day=req.day, start=req.time,
                  end=slot_rules.end_time(req.time, c.settings.sync.appointment_minutes))
    created_now = zay is None
    zay, written = _write_zayavka(c, lead_id, zay, values)
    if written and not created_now:   # the lifecycle's baseline: its next cycle does not echo it
        lstore.record_rescheduled(c.ctx.store, zay.ref, lead_id, day=req.day, start=req.time, doctor=day.doctor)
    first = created_now or reg.fingerprint is None
    note = rules.created_note(zay.number) if first else rules.updated_note(zay.number)
    if written or not zay.posted:
        _post(c, lead_id, zay)
    c.result.count("created" if first else "updated")
    return _done(c, lead, zay, rules.with_remarks(note, remark), req.fingerprint, action="lead.registered")


def _lookup(c: _Cycle, lead_id: int, reg: Registration) -> list[Any]:
    """The lead's non-deleted «Заявки»: from the cycle's batched read when the row agrees with it;
    read again when the row knows more, or after an unconfirmed create."""
    if reg.create_sent_at is not None:
        return _settle(c, lead_id, reg.create_sent_at)
    rows = c.found.get(lead_id) if c.found is not None else None
    known = (reg.zayavka_ref or "").lower()
    if rows is None or (known and known not in {z.ref.lower() for z in rows}):
        rows = c.ctx.onec.zayavki_by_lead(lead_id)
    return [z for z in rows if not z.deletion_mark]


def _settle(c: _Cycle, lead_id: int, sent_at: datetime) -> list[Any]:
    """A create was sent and never confirmed: its «Заявка» when 1C shows it; none once the settle
    time after the intent has passed (1C may carry a create out long after its answer was lost);
    before that, _Settling (the lead waits for a later cycle, this one does not wait for it)."""
    c.result.count("settling")
    rows = [z for z in c.ctx.onec.zayavki_by_lead(lead_id) if not z.deletion_mark]
    if not rows and utcnow() < sent_at + timedelta(seconds=c.settle):
        raise _Settling()
    log.info("registration.create_settled", lead_id=lead_id, found=len(rows))
    return rows


def _unchanged(c: _Cycle, req: rules.Request, reg: Registration, zay: Any) -> bool:
    """The lead asks for what its confirmed «Заявка» already is."""
    return (reg.fingerprint == req.fingerprint and (reg.zayavka_ref or "").lower() == zay.ref.lower()
            and zay.day == req.day and zay.start == req.time
            and (zay.doctor_ref or "").lower() in c.finder.refs_named(req.doctor))


def _same(zay: Any, values: dict[str, Any]) -> bool:
    """The «Заявка» already holds these values: a PATCH would change nothing."""
    return ((zay.client_ref or "").lower() == str(values["client_ref"]).lower()
            and (zay.doctor_ref or "").lower() == str(values["doctor_ref"]).lower()
            and zay.day == values["day"] and zay.start == values["start"] and zay.end == values["end"])


def _free_day(c: _Cycle, req: rules.Request, existing: list[Any], zay: Any) -> DoctorDay:
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


def _write_zayavka(c: _Cycle, lead_id: int, zay: Any, values: dict[str, Any]) -> tuple[Any, bool]:
    """Update the lead's «Заявка» when it differs, or create one (the intent committed before the
    create is sent: a rerun finds the «Заявка» either way); and whether 1C was written."""
    onec = c.ctx.onec
    if zay is not None:
        if _same(zay, values):
            c.result.count("zayavka_kept")
            return zay, False
        _step(c, lead_id)
        zay = onec.update_zayavka(zay.ref, **values)
        _record(c, lead_id, zay, action="zayavka.updated",
                message=f"«Заявка» № {rules.display_number(zay.number)} изменена", detail=_plain(values))
        return zay, True
    nomenclature = c.default("nomenclature").ref
    doc_date = datetime.now(c.settings.sync.tz).replace(tzinfo=None, microsecond=0)  # 1C: naive local
    _step(c, lead_id)
    registrations.record_intent(c.ctx.store, lead_id)
    c.in_flight.add(lead_id)
    try:
        zay = onec.create_zayavka(lead_id=lead_id, nomenclature_ref=nomenclature, doc_date=doc_date, **values)
    except ItemError:
        c.in_flight.discard(lead_id)   # refused outright: nothing in flight
        raise
    c.in_flight.discard(lead_id)
    _record(c, lead_id, zay, action="zayavka.created",
            message=f"создан документ «Заявка» № {rules.display_number(zay.number)}", detail=_plain(values))
    return zay, True


def _kept(message: str, zay: Any) -> str:
    """For a lead that already has a «Заявка», say that it was left as it is."""
    if zay is None:
        return message
    return message.replace("Запись в 1С не создана:",
                           f"Документ Заявка № {rules.display_number(zay.number)} в 1С не изменён:", 1)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
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
    """The 1C client ref for the lead and a remark for the note (or None): jobs/patient.py."""
    chosen = patient.choose(c.ctx, c.result, lead_id, req.client_name, c.contacts,
                            default_client=lambda: c.default("client"), job=JOB,
                            before_create=lambda: _step(c, lead_id))
    return chosen.ref, chosen.note


def _record(c: _Cycle, lead_id: int, zay: Any, *, action: str, message: str, detail: dict[str, Any]) -> None:
    """What was written in 1C: kept for the lead's next commit (its write-back batch, or its
    failure), where the row gets the ref; until then the intent and the lookup by «Номер AmoCRM»
    find the «Заявка»."""
    c.made[lead_id] = zay
    c.run.bookings.booked(zay)
    c.entries.setdefault(lead_id, []).append(dict(
        job=JOB, system="1c", action=action, ref=zay.ref, message=message,
        detail={"number": zay.number, **detail}, run_id=c.result.run_id))


def _post(c: _Cycle, lead_id: int, zay: Any) -> None:
    onec = c.ctx.onec
    _step(c, lead_id)
    c.made.setdefault(lead_id, zay)
    try:
        onec.post(onec.names.zayavka, zay.ref)
    except RetriableError as exc:
        if c.fast:   # a passing fault on a first attempt: tried again in this cycle
            raise
        raise _PostRefused(zay, exc) from exc
    except ItemError as exc:
        raise _PostRefused(zay, exc) from exc
    c.entries.setdefault(lead_id, []).append(dict(
        job=JOB, system="1c", action="zayavka.posted", ref=zay.ref, run_id=c.result.run_id,
        message=f"проведён документ «Заявка» № {rules.display_number(zay.number)}"))


def post_refused_note(number: str, reason: str) -> str:
    return (f"Документ Заявка № {rules.display_number(number)} создан в 1С, но 1С не проводит его "
            f"({_reason(reason)}). Попытки провести его будут повторяться автоматически; "
            "эта заметка не повторится.")


def _reason(error: str) -> str:
    """The gateway's «1C answered 500 to POST /…/Post?…: why» as a person reads it: «ответ 500: why»."""
    m = re.match(r"1C answered (\d+) to \S+ \S+: (.*)$", error, re.S)
    return f"ответ {m.group(1)}: {m.group(2).strip()}"[:300] if m else error[:300]


def _post_refused(c: _Cycle, lead: dict[str, Any], exc: _PostRefused) -> bool:
    """1C does not post the lead's «Заявка»: one note says so (on the first refusal only), and the
    lead is retried after its backoff."""
    lead_id = int(lead["id"])
    _reg, failure = c.rows.get(lead_id, (None, None))
    if failure is None or failure.code != POST_REFUSED:
        note = rules.finish_note(post_refused_note(exc.zay.number, str(exc.cause)))
        try:
            _fence(c)
            _confirmed(c.ctx.amocrm.add_notes([(lead_id, note)]), lead_id, "the note")
            record(c.ctx.store, job=JOB, system="amocrm", action="lead.note", lead_id=lead_id,
                   ref=exc.zay.ref, message=note, run_id=c.result.run_id)
        except (ItemError, RetriableError) as note_exc:
            log.warning("registration.note_failed", lead_id=lead_id, error=str(note_exc))
    c.result.count("post_refused")
    _failed(c, lead, f"1C does not post «Заявка» {exc.zay.number}: {exc.cause}", code=POST_REFUSED)
    return False


# --- write-back ---------------------------------------------------------------------------------


def _lead_patch(c: _Cycle, lead_id: int, number: str | None) -> dict[str, Any]:
    f = c.settings.fields
    cfv = [c.fm.cf(f.flag, False)]
    if number is not None and f.zayavka_number:
        cfv.append(c.fm.cf(f.zayavka_number, rules.display_number(number)))
    return {"id": lead_id, "custom_fields_values": cfv}


def _done(c: _Cycle, lead: dict[str, Any], zay: Any, note: str, fp: str, *, action: str) -> _WriteBack:
    lead_id = int(lead["id"])
    return _WriteBack(lead, rules.finish_note(note), _lead_patch(c, lead_id, zay.number), "done", zay=zay,
                      fingerprint=fp, action=action)


def _reject(c: _Cycle, lead: dict[str, Any], inv: Invalid) -> _WriteBack:
    """Validation failed: note + flag cleared, nothing in 1C."""
    c.result.count("invalid")
    return _WriteBack(lead, rules.finish_note(inv.message), _lead_patch(c, int(lead["id"]), None), "invalid",
                      action="lead.invalid", code=inv.code)


def _flush(c: _Cycle) -> None:
    """Write back a batch: ONE notes POST, then ONE PATCH of the leads whose note amoCRM took, then
    ONE store commit of the leads it patched (the order of the module docstring)."""
    batch, c.pending = c.pending, []
    if not batch:
        return
    amo = c.ctx.amocrm
    _fence(c)
    noted = _sent(c, batch, lambda items: amo.add_notes([(w.lead_id, w.note) for w in items]), "the note")
    _fence(c)
    patched = _sent(c, noted, lambda items: amo.update_leads([w.patch for w in items]), "the lead update")
    run_id = c.result.run_id
    registrations.record_batch_done(
        c.ctx.store,
        done=[dict(lead_id=w.lead_id, ref=w.zay.ref, number=w.zay.number, fingerprint=w.fingerprint,
                   entries=[*c.entries.pop(w.lead_id, []),
                            dict(job=JOB, system="amocrm", action=w.action, message=w.note,
                                 detail={"patch": w.patch}, run_id=run_id)])
              for w in patched if w.kind == "done"],
        invalid=[dict(lead_id=w.lead_id, note=w.note,
                      entry=dict(job=JOB, system="amocrm", action=w.action,
                                 detail={"code": w.code, "patch": w.patch}, run_id=run_id))
                 for w in patched if w.kind == "invalid"])
    for w in patched:
        w.handled = True
        c.claims.pop(w.lead_id, None)
        c.made.pop(w.lead_id, None)
    c.result.count("write_batches")


def _sent(c: _Cycle, items: list[_WriteBack], send: Callable[[list[Any]], Any], what: str) -> list[_WriteBack]:
    """The items amoCRM confirmed; each other one is recorded failed (and handled as such)."""
    if not items:
        return []
    try:
        outcome = send(items)
    except FatalError:
        raise
    except (ItemError, RetriableError) as exc:
        for w in items:
            _write_failed(c, w, exc)
        return []
    ok = []
    for w in items:
        try:
            _confirmed(outcome, w.lead_id, what)
            ok.append(w)
        except (ItemError, RetriableError) as exc:
            _write_failed(c, w, exc)
    return ok


def _write_failed(c: _Cycle, w: _WriteBack, exc: Exception) -> None:
    c.claims.pop(w.lead_id, None)
    error = str(exc) if w.kind == "done" else f"{w.note} (и не удалось записать заметку: {exc})"
    if isinstance(exc, ItemError):
        _failed(c, w.lead, error, code=exc.code, retry=False)
        w.handled = True
    else:
        _failed(c, w.lead, error)
        w.handled = False


def _confirmed(outcome: BatchResult, lead_id: int, what: str) -> None:
    if lead_id in outcome.failed:
        raise outcome.failed[lead_id]
    if lead_id not in outcome.ok:
        raise RetriableError(f"amoCRM did not confirm {what} on lead {lead_id}")


# --- reconciliation -----------------------------------------------------------------------------


def _reconcile(c: _Cycle, leads: list[dict[str, Any]]) -> None:
    """Rows left pending or failed: a lead amoCRM shows written back (unflagged, its «Заявка 1С»
    the row's number: the PATCH was carried out, its answer or our commit lost) is done; a lead
    amoCRM no longer has is ``deleted``."""
    now = _time.monotonic()
    if c.run.reconciled_at is not None and now - c.run.reconciled_at < RECONCILE_EVERY:
        return
    c.run.reconciled_at = now
    busy = {int(lead["id"]) for lead in leads if is_flagged(c.fm, lead, c.settings.fields.flag)}
    rows = [r for r in registrations.unsettled(c.ctx.store) if r.lead_id not in busy
            and not (r.claimed_by not in (None, c.run.owner) and r.claimed_until and r.claimed_until > c.now)]
    if not rows:
        return
    listed = {int(lead["id"]): lead for lead in leads}
    missing = [r.lead_id for r in rows if r.lead_id not in listed]
    if missing:
        listed.update({int(lead["id"]): lead for lead in c.ctx.amocrm.get_leads(missing)})
    for r in rows:
        lead = listed.get(r.lead_id)
        _fence(c)
        if lead is None:
            registrations.record_deleted(c.ctx.store, r.lead_id, entry=dict(
                job=JOB, system="amocrm", action="lead.deleted", run_id=c.result.run_id,
                message="сделки больше нет в amoCRM: регистрация снята с повторов"))
            c.result.count("leads_deleted")
        elif r.zayavka_ref and _written_back(c, lead, r):
            registrations.record_reconciled(c.ctx.store, r.lead_id, entry=dict(
                job=JOB, system="amocrm", action="lead.reconciled", run_id=c.result.run_id,
                message="amoCRM уже показывает записанный результат (флаг снят, номер заявки)"))
            c.result.count("reconciled")


def _written_back(c: _Cycle, lead: dict[str, Any], reg: Registration) -> bool:
    f = c.settings.fields
    if is_flagged(c.fm, lead, f.flag):
        return False
    if not f.zayavka_number or not reg.zayavka_number:
        return True
    return str(_raw_value(c.fm, lead, f.zayavka_number) or "").strip() == rules.display_number(reg.zayavka_number)


def _failed(c: _Cycle, lead: dict[str, Any], error: str, *, code: str | None = None, retry: bool = True) -> None:
    """Record a lead that failed: with ``retry`` (a passing fault) tried again after a backoff,
    else (an item error) only once the lead changed."""
    lead_id = int(lead["id"])
    c.result.count("failed")
    c.result.item_failed(f"lead {lead_id}: {error}")
    log.warning("registration.lead_failed", lead_id=lead_id, error=error, code=code, retry=retry)
    zay = c.made.pop(lead_id, None)
    item = registrations.record_failure(
        c.ctx.store, lead_id, error=error, code=code, retriable=retry, version=_version(lead),
        policy=retries.policy_of(c.settings), job=JOB, run_id=c.result.run_id,
        ref=zay.ref if zay is not None else None, number=zay.number if zay is not None else None,
        entries=c.entries.pop(lead_id, []), create_unsent=lead_id not in c.in_flight)
    c.claims.pop(lead_id, None)
    if item.state == retries.GIVEN_UP:
        c.result.count("given_up")
