"""F3's state: the «Оказание услуг» seen (with the DataVersion each was counted at) and the total
last accepted by amoCRM per lead. The payments job writes through it; `status`, `trace` and the
tests read through the same functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from amo1c_sync.domain import totals as T
from amo1c_sync.domain.retry import ItemRetry
from amo1c_sync.errors import ItemError
from amo1c_sync.store import retry as retries
from amo1c_sync.store.db import chunks
from amo1c_sync.store.journal import journal
from amo1c_sync.store.models import Cursor, LeadTotal, OnecBase, OnecDocument, RetryItem, utcnow

if TYPE_CHECKING:
    from amo1c_sync.store.db import Store

UNCONFIRMED = ""          # data_version of a document whose facts are stored but not yet confirmed
UNSETTLED = ("pending", "failed")


# --- readers ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SkippedDocument:
    """«Оказание услуг» that counts for no lead, and why."""

    ref: str
    number: str | None
    doc_date: datetime | None
    lead_id: int | None
    amount: Decimal | None
    posted: bool
    deletion_mark: bool
    reason: str
    updated_at: datetime


def skipped_documents(store: Store, *, counting_only: bool = False, limit: int | None = None) -> list[SkippedDocument]:
    """«Оказание услуг» that count for no lead, with the reason, newest first. ``counting_only``:
    only those posted and not marked for deletion (money that reached no lead)."""
    with store.session() as s:
        q = select(OnecDocument).where(OnecDocument.skip_reason.is_not(None))
        if counting_only:
            q = q.where(OnecDocument.posted.is_(True), OnecDocument.deletion_mark.is_(False))
        q = q.order_by(OnecDocument.doc_date.desc(), OnecDocument.ref)
        if limit:
            q = q.limit(limit)
        return [SkippedDocument(ref=r.ref, number=r.number, doc_date=r.doc_date, lead_id=r.lead_id,
                                amount=r.amount, posted=r.posted, deletion_mark=r.deletion_mark,
                                reason=r.skip_reason or "", updated_at=r.updated_at) for r in s.scalars(q)]


def count_skipped(store: Store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(OnecDocument)
                        .where(OnecDocument.skip_reason.is_not(None))) or 0


def unsettled_totals(store: Store) -> list[LeadTotal]:
    """Leads whose latest total amoCRM has not accepted yet: ``pending`` (waiting for the next push)
    and ``failed`` (see their RetryItem), failed first."""
    with store.session() as s:
        rows = list(s.scalars(select(LeadTotal).where(LeadTotal.status.in_(UNSETTLED))))
    return sorted(rows, key=lambda r: (r.status != "failed", r.lead_id))


def total_of(store: Store, lead_id: int) -> LeadTotal | None:
    with store.session() as s:
        return s.get(LeadTotal, lead_id)


def documents_of(store: Store, lead_id: int) -> list[OnecDocument]:
    """The documents counted (or once counted) for a lead, by date."""
    with store.session() as s:
        return list(s.scalars(select(OnecDocument).where(OnecDocument.lead_id == lead_id)
                              .order_by(OnecDocument.doc_date)))


# --- what the job reads -----------------------------------------------------------------------
def state_of(row: OnecDocument) -> T.DocState:
    return T.DocState(ref=row.ref, lead_id=None if row.skip_reason else row.lead_id,
                      amount=row.amount if row.amount is not None else T.ZERO,
                      posted=bool(row.posted), deletion_mark=bool(row.deletion_mark))


@dataclass(frozen=True)
class StoredDoc:
    """A document as the store last recorded it."""

    data_version: str
    state: T.DocState
    base_ref: str | None


_DOC_COLUMNS = (OnecDocument.ref, OnecDocument.data_version, OnecDocument.lead_id, OnecDocument.amount,
                OnecDocument.posted, OnecDocument.deletion_mark, OnecDocument.skip_reason,
                OnecDocument.base_ref)


def stored_documents(store: Store, refs: Iterable[str]) -> dict[str, StoredDoc]:
    """ref -> what is recorded of the documents already seen (plain rows, no ORM objects)."""
    out: dict[str, StoredDoc] = {}
    with store.session() as s:
        for chunk in chunks(refs):
            for ref, dv, lead, amount, posted, mark, skip, base in s.execute(
                    select(*_DOC_COLUMNS).where(OnecDocument.ref.in_(chunk))):
                state = T.DocState(ref=ref, lead_id=None if skip else lead,
                                   amount=amount if amount is not None else T.ZERO,
                                   posted=bool(posted), deletion_mark=bool(mark))
                out[ref] = StoredDoc(dv, state, base)
    return out


def documents_of_bases(store: Store, bases: Iterable[str]) -> set[str]:
    """Refs of the stored documents whose base is one of ``bases``, wherever they are dated: a
    relinked or deleted «Заявка» moves them all, not only those of the window read."""
    out: set[str] = set()
    with store.session() as s:
        for chunk in chunks(sorted(bases)):
            out.update(s.scalars(select(OnecDocument.ref).where(OnecDocument.base_ref.in_(chunk))))
    return out


def refs_dated(store: Store, date_from: datetime, date_to: datetime) -> set[str]:
    """Refs of the stored documents dated ``date_from <= doc_date < date_to`` (aware UTC)."""
    with store.session() as s:
        return set(s.scalars(select(OnecDocument.ref).where(OnecDocument.doc_date >= date_from,
                                                             OnecDocument.doc_date < date_to)))


@dataclass(frozen=True)
class KnownBase:
    """A base «Заявка» as last read: what tells a later scan whether its lead mapping changed."""

    data_version: str
    lead_raw: str | None
    doc_date: datetime | None


def known_bases(store: Store, refs: Iterable[str]) -> dict[str, KnownBase]:
    """The base «Заявки» already seen: their DataVersion and «Номер AmoCRM» then."""
    out: dict[str, KnownBase] = {}
    with store.session() as s:
        for chunk in chunks(refs):
            for ref, dv, lead, when in s.execute(select(OnecBase.ref, OnecBase.data_version, OnecBase.lead_raw,
                                                        OnecBase.doc_date).where(OnecBase.ref.in_(chunk))):
                out[ref] = KnownBase(dv, lead, when)
    return out


def base_date_range(store: Store, date_from: datetime, date_to: datetime) -> tuple[datetime | None, datetime | None]:
    """The earliest and latest Date of the known bases of the documents dated in [date_from, date_to)."""
    with store.session() as s:
        row = s.execute(select(func.min(OnecBase.doc_date), func.max(OnecBase.doc_date))
                        .join(OnecDocument, OnecDocument.base_ref == OnecBase.ref)
                        .where(OnecDocument.doc_date >= date_from, OnecDocument.doc_date < date_to)).one()
        return row[0], row[1]


@dataclass
class LeadsState:
    """The stored side of a set of leads: their pushed totals, their documents, their failures."""

    pushed: dict[int, Decimal | None] = field(default_factory=dict)
    docs: dict[str, T.DocState] = field(default_factory=dict)
    numbers: dict[str, str | None] = field(default_factory=dict)
    failures: dict[int, RetryItem] = field(default_factory=dict)
    in_flight: set[int] = field(default_factory=set)   # a PATCH sent, never confirmed


def unsettled_leads(store: Store) -> set[int]:
    """Leads amoCRM may not hold the current total of: pending, failed, or with a push in flight."""
    with store.session() as s:
        return set(s.scalars(select(LeadTotal.lead_id).where(
            LeadTotal.status.in_(UNSETTLED) | LeadTotal.pushing_total.is_not(None))))


def leads_state(store: Store, leads: set[int]) -> LeadsState:
    out = LeadsState()
    with store.session() as s:
        out.failures = retries.load(s, retries.PAYMENT, leads)
        for item in out.failures.values():
            s.expunge(item)
        for chunk in chunks(sorted(leads)):
            for r in s.scalars(select(LeadTotal).where(LeadTotal.lead_id.in_(chunk))):
                out.pushed[r.lead_id] = r.pushed_total
                if r.pushing_total is not None:
                    out.in_flight.add(r.lead_id)
            for d in s.scalars(select(OnecDocument).where(OnecDocument.lead_id.in_(chunk))):
                out.docs[d.ref] = state_of(d)
                out.numbers[d.ref] = d.number
    return out


SCAN_SLICE = "payments.full_scan_from"   # where the full scan in progress goes on (local time)


def scan_slice(store: Store) -> datetime | None:
    """Where the periodic full scan in progress goes on (naive local), or None when none is."""
    with store.session() as s:
        row = s.get(Cursor, SCAN_SLICE)
        return datetime.fromisoformat(row.value) if row is not None and row.value else None


def record_scan_slice(store: Store, at: datetime | None) -> None:
    """After a slice: where the next one starts; None when the scan is complete."""
    with store.session() as s:
        row = s.get(Cursor, SCAN_SLICE)
        if at is None:
            if row is not None:
                s.delete(row)
        elif row is None:
            s.add(Cursor(name=SCAN_SLICE, value=at.isoformat()))
        else:
            row.value = at.isoformat()


# --- what the job writes ----------------------------------------------------------------------
@dataclass
class DocumentFacts:
    """A changed document as 1C holds it now; ``skipped_entry``: the journal entry to add when it
    is skipped and its facts changed."""

    ref: str
    number: str
    data_version: str
    doc_date: datetime | None  # aware UTC
    lead_id: int | None
    skip_reason: str | None
    state: T.DocState
    skipped_entry: dict[str, Any] | None = None
    base_ref: str | None = None
    gone: bool = False   # no longer in 1C (deleted outright): its row goes

    def facts(self) -> tuple[int | None, Decimal, bool, bool, str | None]:
        return (self.lead_id, self.state.amount, self.state.posted, self.state.deletion_mark, self.skip_reason)


def record_facts(store: Store, facts: Iterable[DocumentFacts], *, confirmed: set[str], unsettled: set[int],
                 settled: set[int], job: str, run_id: int | None,
                 bases: Iterable[tuple[str, KnownBase]] = (), intent: dict[int, Decimal] | None = None) -> None:
    """One transaction: the changed documents' facts (their DataVersion only for ``confirmed``;
    a gone one's row deleted), the bases read, ``unsettled`` leads marked pending, ``settled``
    leads (amoCRM has their total) ok, and the ``intent`` of the PATCH about to be sent."""
    facts = list(facts)
    with store.session() as s:
        existing = {}
        for chunk in chunks([f.ref for f in facts]):
            existing.update({r.ref: r for r in s.scalars(select(OnecDocument).where(OnecDocument.ref.in_(chunk)))})
        new_rows = []
        for f in facts:
            row = existing.get(f.ref)
            if row is None and not f.gone:   # a new document: one bulk INSERT for all of them
                new_rows.append(_new_row(f, f.ref in confirmed))
                if f.skipped_entry is not None:
                    journal(s, job=job, run_id=run_id, **f.skipped_entry)
                continue
            _record_one(s, row, f, f.ref in confirmed, job, run_id)
        if new_rows:
            s.execute(insert(OnecDocument), new_rows)
        _record_bases(s, dict(bases))
        _mark_leads(s, unsettled, settled)
        if intent:
            s.flush()
            _set_intent(s, intent)


def _new_row(f: DocumentFacts, confirmed: bool) -> dict[str, Any]:
    return {"ref": f.ref, "data_version": f.data_version if confirmed else UNCONFIRMED, "number": f.number,
            "doc_date": f.doc_date, "lead_id": f.lead_id, "skip_reason": f.skip_reason, "amount": f.state.amount,
            "posted": f.state.posted, "deletion_mark": f.state.deletion_mark, "base_ref": f.base_ref}


def _record_one(s: Session, row: OnecDocument | None, f: DocumentFacts, confirmed: bool, job: str,
                run_id: int | None) -> None:
    if f.gone:
        if row is not None:
            journal(s, job=job, run_id=run_id, system="1c", action="document.gone", ref=f.ref,
                    lead_id=row.lead_id, message=f"«Оказание услуг» № {f.number or row.number}: no longer in 1C "
                    f"(deleted); its amount {T.money_text(row.amount)} no longer counts",
                    detail={"number": row.number, "amount": T.money_text(row.amount), "lead_id": row.lead_id})
            s.delete(row)
        return
    before = None
    if row is None:
        row = OnecDocument(ref=f.ref, data_version=UNCONFIRMED)
        s.add(row)
    else:
        before = (row.lead_id, row.amount, row.posted, row.deletion_mark, row.skip_reason)
    row.number, row.doc_date, row.lead_id, row.skip_reason = f.number, f.doc_date, f.lead_id, f.skip_reason
    row.amount, row.posted, row.deletion_mark = f.state.amount, f.state.posted, f.state.deletion_mark
    row.base_ref = f.base_ref
    if confirmed:
        row.data_version = f.data_version
    if f.skipped_entry is not None and before != f.facts():
        journal(s, job=job, run_id=run_id, **f.skipped_entry)


def _record_bases(s: Session, bases: dict[str, KnownBase]) -> None:
    rows: dict[str, OnecBase] = {}
    for chunk in chunks(sorted(bases)):
        rows.update({r.ref: r for r in s.scalars(select(OnecBase).where(OnecBase.ref.in_(chunk)))})
    new_rows = []
    for ref, b in bases.items():
        row = rows.get(ref)
        if row is None:
            new_rows.append({"ref": ref, "data_version": b.data_version, "lead_raw": b.lead_raw,
                             "doc_date": b.doc_date})
            continue
        row.data_version, row.lead_raw, row.doc_date = b.data_version, b.lead_raw, b.doc_date
    if new_rows:
        s.execute(insert(OnecBase), new_rows)


def _mark_leads(s: Session, unsettled: set[int], settled: set[int]) -> None:
    rows: dict[int, LeadTotal] = {}
    for chunk in chunks(sorted(unsettled | settled)):
        rows.update({r.lead_id: r for r in s.scalars(select(LeadTotal).where(LeadTotal.lead_id.in_(chunk)))})
    new_rows = []
    for lead in unsettled:
        row = rows.get(lead)
        if row is None:
            new_rows.append({"lead_id": lead, "pushed_total": None, "status": "pending"})
        elif row.status == "ok":
            row.status = "pending"
    if new_rows:
        s.execute(insert(LeadTotal), new_rows)
    cleared = []
    for lead in settled:
        row = rows.get(lead)
        if row is not None and row.status != "ok":
            row.status = "ok"
            cleared.append(lead)
    for chunk in chunks(cleared):
        retries.clear(s, retries.PAYMENT, chunk)


def record_intent(store: Store, totals: dict[int, Decimal]) -> None:
    """Before a PATCH: the totals about to be sent. Until ``record_push`` confirms one, amoCRM may
    hold it, so the lead is pushed again with its current total whatever ``pushed_total`` says."""
    with store.session() as s:
        _set_intent(s, totals)


def _set_intent(s: Session, totals: dict[int, Decimal]) -> None:
    rows = {r.lead_id: r for chunk in chunks(sorted(totals))
            for r in s.scalars(select(LeadTotal).where(LeadTotal.lead_id.in_(chunk)))}
    for lead, value in totals.items():
        row = rows.get(lead)
        if row is None:
            row = LeadTotal(lead_id=lead, pushed_total=None, status="pending")
            s.add(row)
        row.pushing_total = value


Describe = Callable[[int, Decimal | None, Decimal], tuple[str, dict[str, Any]]]


def record_push(store: Store, *, totals: dict[int, Decimal], accepted: set[int], failed: Mapping[int, Exception],
                versions: dict[str, str], policy: ItemRetry, describe: Describe, job: str,
                run_id: int | None) -> list[tuple[int, str]]:
    """One PATCH's outcome in one transaction: each accepted total (journalled with
    ``describe(lead, old, new)``), each refusal's retry record, and the DataVersions now confirmed.
    Returns the refusals (lead, reason)."""
    now = utcnow()
    refusals = []
    with store.session() as s:
        rows = {r.lead_id: r for r in s.scalars(select(LeadTotal).where(LeadTotal.lead_id.in_(list(totals))))}
        retries.clear(s, retries.PAYMENT, [lead for lead in totals if lead in accepted])
        for lead, new in totals.items():
            row = rows.get(lead)
            if row is None:
                row = LeadTotal(lead_id=lead, status="pending")
                s.add(row)
            if lead in accepted:
                message, detail = describe(lead, row.pushed_total, new)
                row.pushed_total, row.pushed_at, row.status, row.pushing_total = new, now, "ok", None
                journal(s, job=job, system="amocrm", action="lead.total_pushed", lead_id=lead,
                        message=message, detail=detail, run_id=run_id)
                continue
            refusals.append((lead, _refused(s, row, lead, new, failed.get(lead), policy, now, job, run_id)))
        for chunk in chunks(sorted(versions)):
            for doc in s.scalars(select(OnecDocument).where(OnecDocument.ref.in_(chunk))):
                doc.data_version = versions[doc.ref]
    return refusals


def _refused(s: Session, row: LeadTotal, lead: int, new: Decimal, err: Exception | None,
             policy: ItemRetry, now: datetime, job: str, run_id: int | None) -> str:
    reason = str(err) if err is not None else "amoCRM did not confirm the write"
    row.status = "failed"
    if isinstance(err, ItemError):  # amoCRM refused it: nothing was written
        row.pushing_total = None
    item = retries.record_failure(s, retries.PAYMENT, lead, error=reason, now=now, policy=policy,
                                  retriable=not isinstance(err, ItemError), code=getattr(err, "code", None))
    journal(s, job=job, system="amocrm", action="lead.total_rejected", lead_id=lead, message=reason,
            detail={"old_total": T.money_text(row.pushed_total), "new_total": T.money_text(new),
                    "attempts": item.attempts, "state": item.state, "code": item.code,
                    "next_attempt_at": item.next_attempt_at.isoformat() if item.next_attempt_at else None},
            run_id=run_id)
    return reason
