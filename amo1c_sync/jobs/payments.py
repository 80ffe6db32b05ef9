"""F3 payments: posted «Оказание услуг» -> the lead's budget (price) and «Сумма1С».

One cycle (``run``):

1. Read the «Оказание услуг» of a window of document dates, only the fields needed: the hot window
   (``[sync] hot_window``) every cycle; the whole ``lookback`` every ``full_scan_interval`` (Cursor
   ``payments.last_full_scan``); ``ctx.since`` widens it for a backfill (progress bar on a TTY).
2. Documents whose DataVersion differs from the stored one are *changed*. Their base «Заявки» are
   resolved in batches to lead ids; a document without a base «Заявка», or whose «Заявка» has no
   (valid) «Номер AmoCRM», is *skipped* with the reason (journal once per change, counted,
   listed by ``skipped_documents``).
3. The changed documents' facts (lead, amount, posted, deletion mark) are written to the store at
   once, but their DataVersion is NOT: it is recorded only after every lead the document touches
   (its lead now and its lead before) has been accepted by amoCRM, so an unconfirmed document is
   re-read and re-evaluated next cycle. Every lead whose recomputed total differs from the last
   one pushed is marked ``pending`` in ``lead_totals`` in the same transaction, so a pending total
   survives any crash, whatever window the next cycle reads.
4. Each due lead (pending, or failed with its backoff elapsed) gets its total recomputed from the
   store and pushed in PATCHes of <= 50 leads: «Сумма1С» exact, price rounded half up. After each
   PATCH, one transaction records the accepted totals (``pushed_total``), their journal entries
   and the DataVersions now confirmed; rejected leads become ``failed`` with amoCRM's reason,
   ``attempts`` and an exponential ``next_attempt_at``. A crash between the write and the commit
   means the same (idempotent) PATCH again next cycle, and one journal entry.

A dry run reads both systems and writes nothing anywhere; the would-be PATCHes go to
``result.planned``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator, Sequence

from sqlalchemy import select

from amo1c_sync.domain import totals as T
from amo1c_sync.domain.registration import display_number
from amo1c_sync.domain.retry import backoff_seconds
from amo1c_sync.jobs.base import JobContext, JobResult, journal
from amo1c_sync.logs import get_logger
from amo1c_sync.store.models import Cursor, LeadTotal, OnecDocument, utcnow

log = get_logger("amo1c_sync.jobs.payments")

JOB = "payments"
CURSOR_FULL_SCAN = "payments.last_full_scan"
PATCH_BATCH = 50          # leads per PATCH (SPEC: <= 50)
DB_CHUNK = 500            # ids per IN (...) in store queries
BACKFILL_SLICE_DAYS = 7   # a --since backfill reads 1C a week at a time (one progress step each)
UNCONFIRMED = ""          # data_version of a document whose facts are stored but not yet confirmed


SKIP_NO_BASE = "no base document: 1C does not know which lead this payment is for"
SKIP_BASE_NOT_ZAYAVKA = "the base document is not a «Заявка» ({type})"
SKIP_NO_LEAD = "the base «Заявка» has no «Номер AmoCRM» (or no longer exists)"
SKIP_BAD_LEAD = "«Номер AmoCRM» «{value}» of the base «Заявка» is not a lead id"


# ---------------------------------------------------------------------------------------------
# window
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """Document dates to read: ``date_from <= Date`` (local, naive) up to the end of ``date_to``."""

    date_from: datetime
    date_to: date
    full: bool  # covers the whole lookback window (records the full scan)
    kind: str   # hot | full | since


def plan_window(*, now_utc: datetime, tz, hot_window: float, lookback: float,
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


def _slices(window: Window, days: int) -> list[tuple[datetime, datetime]]:
    """[from, to) slices of ``days`` days covering the window."""
    end = datetime.combine(window.date_to + timedelta(days=1), time(0, 0))
    out, lo = [], window.date_from
    while lo < end:
        hi = min(lo + timedelta(days=days), end)
        out.append((lo, hi))
        lo = hi
    return out


# ---------------------------------------------------------------------------------------------
# skipped documents (for `status`)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SkippedDocument:
    ref: str
    number: str | None
    doc_date: datetime | None
    amount: Decimal | None
    posted: bool
    deletion_mark: bool
    reason: str
    updated_at: datetime

    @property
    def display_number(self) -> str:
        return display_number(self.number)


def skipped_documents(store, *, counting_only: bool = False, limit: int | None = None) -> list[SkippedDocument]:
    """«Оказание услуг» that count for no lead, with the reason, newest first. ``counting_only``:
    only those posted and not marked for deletion (money that reached no lead)."""
    with store.session() as s:
        q = select(OnecDocument).where(OnecDocument.skip_reason.is_not(None))
        if counting_only:
            q = q.where(OnecDocument.posted.is_(True), OnecDocument.deletion_mark.is_(False))
        q = q.order_by(OnecDocument.doc_date.desc(), OnecDocument.ref)
        if limit:
            q = q.limit(limit)
        return [SkippedDocument(ref=r.ref, number=r.number, doc_date=r.doc_date, amount=r.amount,
                                posted=r.posted, deletion_mark=r.deletion_mark, reason=r.skip_reason,
                                updated_at=r.updated_at) for r in s.scalars(q)]


def unsettled_totals(store) -> list[LeadTotal]:
    """Leads whose latest total amoCRM has not accepted yet: ``pending`` (waiting for the next push)
    and ``failed`` (with amoCRM's reason, attempts and the next attempt's time), failed first."""
    with store.session() as s:
        q = select(LeadTotal).where(LeadTotal.status.in_(("pending", "failed")))
        rows = list(s.scalars(q))
    return sorted(rows, key=lambda r: (r.status != "failed", r.lead_id))


# ---------------------------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------------------------
@dataclass
class _Fresh:
    """A changed document as 1C holds it now."""

    ref: str
    number: str
    data_version: str
    doc_date: datetime | None  # aware UTC
    lead_id: int | None
    skip_reason: str | None
    state: T.DocState


@dataclass
class _Plan:
    fresh: dict[str, _Fresh] = field(default_factory=dict)
    stored: dict[str, T.DocState] = field(default_factory=dict)      # stored state of changed docs
    totals: dict[int, Decimal] = field(default_factory=dict)
    pushed: dict[int, Decimal | None] = field(default_factory=dict)
    push: dict[int, Decimal] = field(default_factory=dict)           # due now
    deferred: set[int] = field(default_factory=set)
    docs_of: dict[int, list[tuple[str, str | None, Decimal]]] = field(default_factory=dict)
    leads_of: dict[str, set[int]] = field(default_factory=dict)    # changed doc -> its leads now+before
    changed_of: dict[int, list[str]] = field(default_factory=dict)  # lead -> its changed docs


def run(ctx: JobContext, result: JobResult) -> None:
    sync = ctx.settings.sync
    tz = sync.tz
    now = utcnow()
    last_full = _last_full_scan(ctx.store)
    window = plan_window(now_utc=now, tz=tz, hot_window=sync.hot_window, lookback=sync.lookback,
                         full_scan_interval=sync.full_scan_interval, last_full_scan=last_full,
                         since=ctx.since)
    result.count(f"window_{window.kind}")
    log.debug("payments.window", date_from=window.date_from.isoformat(),
              date_to=window.date_to.isoformat(), kind=window.kind)

    services = _read_window(ctx, window)
    result.count("read", len(services))
    if ctx.stopping():
        return

    plan = _plan(ctx, result, services, now)
    if not ctx.dry_run:
        _record_facts(ctx, result, plan, now)
    if plan.push and not ctx.stopping():
        _push(ctx, result, plan)
    if window.full and not ctx.dry_run and not ctx.stopping():
        with ctx.store.session() as s:
            _set_cursor(s, CURSOR_FULL_SCAN, now.isoformat())


def _last_full_scan(store) -> datetime | None:
    with store.session() as s:
        row = s.get(Cursor, CURSOR_FULL_SCAN)
        if row is None:
            return None
        try:
            value = datetime.fromisoformat(row.value)
        except ValueError:
            return None
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _set_cursor(s, name: str, value: str) -> None:
    row = s.get(Cursor, name)
    if row is None:
        s.add(Cursor(name=name, value=value))
    else:
        row.value = value


def _progress(iterable, *, total: int, desc: str, unit: str, enabled: bool):
    """tqdm on a TTY, the bare iterable otherwise."""
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr)
    return iterable


def _read_window(ctx: JobContext, window: Window) -> list:
    """The window's «Оказание услуг», one per ref (the last read wins)."""
    if window.kind == "since":
        slices = _slices(window, BACKFILL_SLICE_DAYS)
        out: dict[str, Any] = {}
        for lo, hi in _progress(slices, total=len(slices), desc="1C «Оказание услуг»", unit="week",
                                enabled=True):
            if ctx.stopping():
                break
            for svc in ctx.onec.services_in_window(lo, hi):
                out[svc.ref] = svc
        return list(out.values())
    return list({svc.ref: svc for svc in ctx.onec.services_in_window(window.date_from, window.date_to)}.values())


def _chunks(seq: Sequence, n: int) -> Iterator[list]:
    seq = list(seq)
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _state_of(row: OnecDocument) -> T.DocState:
    return T.DocState(ref=row.ref, lead_id=None if row.skip_reason else row.lead_id,
                      amount=row.amount if row.amount is not None else T.ZERO,
                      posted=bool(row.posted), deletion_mark=bool(row.deletion_mark))


def _to_utc(value: datetime | None, tz) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(timezone.utc)


def _fresh(svc, leads_by_base: dict[str, str | None], tz) -> _Fresh:
    lead_id: int | None = None
    skip: str | None = None
    if not svc.base_ref:
        skip = SKIP_NO_BASE
    elif not svc.base_is_zayavka:
        skip = SKIP_BASE_NOT_ZAYAVKA.format(type=svc.base_type or "?")
    else:
        raw = leads_by_base.get(svc.base_ref)
        if raw is None or not str(raw).strip():
            skip = SKIP_NO_LEAD
        else:
            lead_id = T.parse_lead_id(raw)
            if lead_id is None:
                skip = SKIP_BAD_LEAD.format(value=str(raw).strip())
    amount = svc.amount if svc.amount is not None else T.ZERO
    state = T.DocState(ref=svc.ref, lead_id=lead_id, amount=amount, posted=bool(svc.posted),
                       deletion_mark=bool(svc.deletion_mark))
    return _Fresh(ref=svc.ref, number=svc.number, data_version=svc.data_version,
                  doc_date=_to_utc(svc.date, tz), lead_id=lead_id, skip_reason=skip, state=state)


def _plan(ctx: JobContext, result: JobResult, services: list, now: datetime) -> _Plan:
    sync = ctx.settings.sync
    plan = _Plan()
    refs = [svc.ref for svc in services]
    stored_dv: dict[str, str] = {}
    with ctx.store.session() as s:
        for chunk in _chunks(refs, DB_CHUNK):
            for row in s.scalars(select(OnecDocument).where(OnecDocument.ref.in_(chunk))):
                stored_dv[row.ref] = row.data_version
                plan.stored[row.ref] = _state_of(row)
    changed = [svc for svc in services if stored_dv.get(svc.ref) != svc.data_version]
    changed_refs = {svc.ref for svc in changed}
    plan.stored = {ref: st for ref, st in plan.stored.items() if ref in changed_refs}
    result.count("changed", len(changed))

    bases = sorted({svc.base_ref for svc in changed if svc.base_ref and svc.base_is_zayavka})
    leads_by_base = ctx.onec.resolve_bases(bases) if bases else {}
    for svc in changed:
        f = _fresh(svc, leads_by_base, ctx.settings.sync.tz)
        plan.fresh[f.ref] = f
        if f.skip_reason:
            result.count("skipped")

    _index_changed(plan)
    affected = set(plan.changed_of)
    with ctx.store.session() as s:
        waiting = {r.lead_id: r for r in s.scalars(
            select(LeadTotal).where(LeadTotal.status.in_(("pending", "failed"))))}
        candidates = affected | set(waiting)
        if not candidates:
            return plan
        rows: dict[int, LeadTotal] = dict(waiting)
        docs: dict[str, T.DocState] = {}
        numbers: dict[str, str | None] = {}
        for chunk in _chunks(sorted(candidates), DB_CHUNK):
            for r in s.scalars(select(LeadTotal).where(LeadTotal.lead_id.in_(chunk))):
                rows[r.lead_id] = r
            for d in s.scalars(select(OnecDocument).where(OnecDocument.lead_id.in_(chunk))):
                docs[d.ref] = _state_of(d)
                numbers[d.ref] = d.number
    merged = T.merge(docs, {ref: f.state for ref, f in plan.fresh.items()})
    numbers.update({ref: f.number for ref, f in plan.fresh.items()})
    plan.totals = T.lead_totals(merged.values(), candidates)
    plan.pushed = {lead: (rows[lead].pushed_total if lead in rows else None) for lead in candidates}
    for d in merged.values():
        if d.lead_id in candidates and d.counts:
            plan.docs_of.setdefault(d.lead_id, []).append((d.ref, numbers.get(d.ref), d.amount))
    differing = T.leads_to_push(plan.totals, plan.pushed)
    for lead, value in differing.items():
        row = rows.get(lead)
        if row is not None and row.status == "failed":
            if sync.max_attempts and row.attempts >= sync.max_attempts:
                result.count("given_up")
                plan.deferred.add(lead)
                continue
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                result.count("deferred")
                plan.deferred.add(lead)
                continue
        plan.push[lead] = value
    result.count("unchanged_leads", len(candidates) - len(differing))
    return plan


def _leads_of(plan: _Plan, ref: str) -> set[int]:
    return plan.leads_of[ref]


def _index_changed(plan: _Plan) -> None:
    """Each changed document's leads (now and before), and each lead's changed documents."""
    for ref, f in plan.fresh.items():
        leads = T.affected_leads(plan.stored, [f.state])
        plan.leads_of[ref] = leads
        for lead in leads:
            plan.changed_of.setdefault(lead, []).append(ref)


def _record_facts(ctx: JobContext, result: JobResult, plan: _Plan, now: datetime) -> None:
    """Changed documents' facts; DataVersions of those touching no unsettled lead; pending leads."""
    unsettled = set(plan.push) | plan.deferred
    with ctx.store.session() as s:
        existing: dict[str, OnecDocument] = {}
        for chunk in _chunks(list(plan.fresh), DB_CHUNK):
            for row in s.scalars(select(OnecDocument).where(OnecDocument.ref.in_(chunk))):
                existing[row.ref] = row
        for ref, f in plan.fresh.items():
            row = existing.get(ref)
            confirm = not (_leads_of(plan, ref) & unsettled)
            if row is None:
                row = OnecDocument(ref=ref, data_version=UNCONFIRMED)
                s.add(row)
                facts_before = None
            else:
                facts_before = (row.lead_id, row.amount, row.posted, row.deletion_mark, row.skip_reason)
            row.number = f.number
            row.doc_date = f.doc_date
            row.lead_id = f.lead_id
            row.amount = f.state.amount
            row.posted = f.state.posted
            row.deletion_mark = f.state.deletion_mark
            row.skip_reason = f.skip_reason
            if confirm:
                row.data_version = f.data_version
            facts_now = (f.lead_id, f.state.amount, f.state.posted, f.state.deletion_mark, f.skip_reason)
            if f.skip_reason and facts_before != facts_now:
                journal(s, job=JOB, system="store", action="document.skipped", ref=ref,
                        message=f"«Оказание услуг» № {display_number(f.number)}: {f.skip_reason}",
                        detail={"number": f.number, "amount": str(f.state.amount),
                                "posted": f.state.posted, "deletion_mark": f.state.deletion_mark,
                                "data_version": f.data_version, "reason": f.skip_reason},
                        run_id=result.run_id)
        leads = set(plan.totals)
        rows: dict[int, LeadTotal] = {}
        for chunk in _chunks(sorted(leads), DB_CHUNK):
            for r in s.scalars(select(LeadTotal).where(LeadTotal.lead_id.in_(chunk))):
                rows[r.lead_id] = r
        for lead in leads:
            row = rows.get(lead)
            if lead in plan.push or lead in plan.deferred:
                if row is None:
                    s.add(LeadTotal(lead_id=lead, pushed_total=None, status="pending", attempts=0))
                elif row.status == "ok":
                    row.status = "pending"
            elif row is not None and row.status != "ok":
                # its total is what amoCRM already has: nothing left to do for it
                row.status, row.error, row.attempts, row.next_attempt_at = "ok", None, 0, None


def _patch(field_map, sum_field: str, lead: int, value: Decimal) -> dict:
    return {"id": lead, "price": T.budget(value),
            "custom_fields_values": [{"field_id": field_map.id(sum_field),
                                      "values": [{"value": T.sum_field_value(value)}]}]}


def _push(ctx: JobContext, result: JobResult, plan: _Plan) -> None:
    sync = ctx.settings.sync
    sum_field = ctx.settings.fields.sum
    field_map = ctx.amocrm.field_map([sum_field], tz=sync.timezone)
    leads = sorted(plan.push)
    settled = set(plan.totals) - set(plan.push) - plan.deferred
    waiting_docs = {ref for ref in plan.fresh if _leads_of(plan, ref) - settled}
    batches = list(_chunks(leads, PATCH_BATCH))
    for batch in _progress(batches, total=len(batches), desc="amoCRM leads", unit="PATCH",
                           enabled=ctx.since is not None):
        if ctx.stopping():
            break
        patches = [_patch(field_map, sum_field, lead, plan.push[lead]) for lead in batch]
        if ctx.dry_run:
            for lead, p in zip(batch, patches):
                result.planned.append({"system": "amocrm", "request": "PATCH /api/v4/leads",
                                       "lead_id": lead, "old_total": _s(plan.pushed.get(lead)),
                                       "new_total": _s(plan.push[lead]), "body": p})
            result.count("planned", len(batch))
            continue
        outcome = ctx.amocrm.update_leads(patches)
        result.count("patch_batches")
        accepted = set(outcome.ok) - set(outcome.failed)
        settled |= accepted
        touched = {ref for lead in accepted for ref in plan.changed_of.get(lead, ())}
        confirm = {ref for ref in touched & waiting_docs if not (_leads_of(plan, ref) - settled)}
        waiting_docs -= confirm
        now = utcnow()
        with ctx.store.session() as s:
            rows = {r.lead_id: r for r in s.scalars(select(LeadTotal).where(LeadTotal.lead_id.in_(batch)))}
            for lead in batch:
                row = rows.get(lead)
                if row is None:
                    row = LeadTotal(lead_id=lead, status="pending", attempts=0)
                    s.add(row)
                new = plan.push[lead]
                if lead in accepted:
                    old = row.pushed_total
                    row.pushed_total, row.pushed_at = new, now
                    row.status, row.error, row.attempts, row.next_attempt_at = "ok", None, 0, None
                    docs = plan.docs_of.get(lead, [])
                    changed = sorted(plan.changed_of.get(lead, ()))
                    journal(s, job=JOB, system="amocrm", action="lead.total_pushed", lead_id=lead,
                            message=f"«{sum_field}» {_s(old) or '—'} -> {_s(new)}, budget {T.budget(new)}",
                            detail={"old_total": _s(old), "new_total": _s(new), "price": T.budget(new),
                                    "documents": [{"ref": r, "number": n, "amount": _s(a)}
                                                  for r, n, a in sorted(docs, key=lambda x: x[0])],
                                    "changed_documents": changed},
                            run_id=result.run_id)
                    result.count("pushed")
                else:
                    err = outcome.failed.get(lead)
                    reason = str(err) if err is not None else "amoCRM did not confirm the write"
                    row.status, row.error = "failed", reason
                    row.attempts = (row.attempts or 0) + 1
                    row.next_attempt_at = now + timedelta(
                        seconds=backoff_seconds(row.attempts, sync.retry_backoff_base, sync.retry_backoff_max))
                    journal(s, job=JOB, system="amocrm", action="lead.total_rejected", lead_id=lead,
                            message=reason,
                            detail={"old_total": _s(row.pushed_total), "new_total": _s(new),
                                    "attempts": row.attempts,
                                    "next_attempt_at": row.next_attempt_at.isoformat()},
                            run_id=result.run_id)
                    result.count("failed")
                    result.item_failed(f"lead {lead}: {reason}")
            for chunk in _chunks(sorted(confirm), DB_CHUNK):
                for row in s.scalars(select(OnecDocument).where(OnecDocument.ref.in_(chunk))):
                    row.data_version = plan.fresh[row.ref].data_version


def _s(value: Decimal | None) -> str | None:
    """Money for people and the journal: at least two decimals ("150.00", "0.00", "1.005")."""
    if value is None:
        return None
    if value.as_tuple().exponent > -2:  # type: ignore[operator]
        value = value.quantize(Decimal("0.01"))
    return format(value, "f")
