"""F7's state: per «Заявка» followed, the state last mirrored to its lead and the write under way.

The lifecycle job writes through these functions; `status`, `trace` and the tests read through
them. A row's ``pending`` is the intent of one amoCRM write (recorded before it, in one
transaction for the whole batch) and is cleared by its confirmation (after it, with the journal
entry); a row whose ``pending`` survives a crash is finished by the next cycle.

Two writers share a row: the lifecycle job, and the registration job when it writes the card's
reschedule or cancel to 1C (``set_written``, ``record_rescheduled``). The lifecycle's intents and
confirmations are a compare-and-set on the stored state its change was computed from
(``Change.base``), under the row's lock (``FOR UPDATE`` on PostgreSQL; SQLite's transactions are
serial already), so the card's write is never overwritten by a change computed before it.

A lead's stage has two writers too: the lifecycle (its intents) and a cancel from the card. They
take turns per lead, decided under one store lock (``STAGE_WRITERS``): ``record_intents`` drops the
writes of a lead with a cancel under way, and ``begin_cancel`` tells whether the lead has a
lifecycle write under way (recorded, not confirmed), which the cancel waits for. Without it a
lifecycle PATCH decided before the cancel and sent after it (rate-limit waits, retries) would put
a cancelled lead back in «Оплачено».
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from amo1c_sync.domain.lifecycle import Appointment
from amo1c_sync.store.db import chunks
from amo1c_sync.store.journal import journal
from amo1c_sync.store.models import (
    CardCancel,
    Cursor,
    LeadTotal,
    LifecycleZayavka,
    utcnow,
)

if TYPE_CHECKING:
    from amo1c_sync.store.db import Store

UNCONFIRMED = ""      # data_version of a row whose state is known but not yet mirrored at a version
UNCHECKED = "unchecked"  # Change.base of an intent recorded before there were bases: no compare
FULL_SCAN = "lifecycle.last_full_scan"
#: the store lock under which a lead's two stage writers take turns
STAGE_WRITERS = "lifecycle.stage_writers"


def to_json(a: Appointment | None) -> dict[str, Any] | None:
    if a is None:
        return None
    d = asdict(a)
    d["day"], d["start"] = a.day.isoformat(), a.start.strftime("%H:%M:%S")
    return d


def from_json(d: dict[str, Any] | None) -> Appointment | None:
    if not d:
        return None
    return Appointment(number=d["number"], day=date.fromisoformat(d["day"]),
                       start=time.fromisoformat(d["start"]), doctor=d["doctor"],
                       posted=bool(d.get("posted", True)), deleted=bool(d.get("deleted", False)),
                       state=d.get("state", ""))


@dataclass(frozen=True)
class Followed:
    """A followed «Заявка» as stored: its version, its lead, what was mirrored, the write under way."""

    ref: str
    data_version: str
    number: str
    lead_id: int | None
    mirrored: Appointment | None
    passed: tuple[int, ...] = ()
    done: tuple[str, ...] = ()
    pending: dict[str, Any] | None = None
    skip_reason: str | None = None
    updated_at: datetime | None = None


def state_of(f: Followed | None) -> list[Any] | None:
    """What a compare-and-set compares: the stored version and state (None: no row yet)."""
    return None if f is None else [f.data_version, to_json(f.mirrored)]


def _state(row: LifecycleZayavka | None) -> list[Any] | None:
    if row is None or (row.data_version == UNCONFIRMED and row.mirrored is None):
        return None   # absent, or made by an intent only
    return [row.data_version, to_json(from_json(row.mirrored))]


def _followed(row: LifecycleZayavka) -> Followed:
    return Followed(ref=row.ref, data_version=row.data_version, number=row.number, lead_id=row.lead_id,
                    mirrored=from_json(row.mirrored), passed=tuple(row.passed or ()),
                    done=tuple(row.done or ()), pending=row.pending, skip_reason=row.skip_reason,
                    updated_at=row.updated_at)


# --- readers ----------------------------------------------------------------------------------
def followed(store: Store, refs: Sequence[str]) -> dict[str, Followed]:
    out: dict[str, Followed] = {}
    with store.session() as s:
        for chunk in chunks(refs):
            for row in s.scalars(select(LifecycleZayavka).where(LifecycleZayavka.ref.in_(chunk))):
                out[row.ref] = _followed(row)
    return out


def mirrored_between(store: Store, lo: date, hi: date) -> set[str]:
    """The refs of the followed «Заявки» whose appointment, as last mirrored, is in ``[lo, hi]``."""
    with store.session() as s:
        rows = s.execute(select(LifecycleZayavka.ref, LifecycleZayavka.mirrored)
                         .where(LifecycleZayavka.skip_reason.is_(None),
                                LifecycleZayavka.mirrored.is_not(None))).all()
    out = set()
    for ref, mirrored in rows:
        day = (mirrored or {}).get("day")
        if day and lo.isoformat() <= str(day) <= hi.isoformat():
            out.add(ref)
    return out


def pending(store: Store) -> list[Followed]:
    """Rows whose amoCRM write was intended and not confirmed (a crash, or amoCRM unreachable)."""
    with store.session() as s:
        return [_followed(r) for r in s.scalars(select(LifecycleZayavka)
                                                .where(LifecycleZayavka.pending.is_not(None))
                                                .order_by(LifecycleZayavka.ref))]


def of_lead(store: Store, lead_id: int) -> list[Followed]:
    with store.session() as s:
        return [_followed(r) for r in s.scalars(select(LifecycleZayavka)
                                                .where(LifecycleZayavka.lead_id == int(lead_id))
                                                .order_by(LifecycleZayavka.number))]


def paid_candidates(store: Store) -> list[Followed]:
    """Followed «Заявки» of leads the payments flow pushed a non-zero total to, whose «paid»
    stage is not handled yet."""
    with store.session() as s:
        rows = s.execute(select(LifecycleZayavka, LeadTotal.pushed_total)
                         .join(LeadTotal, LeadTotal.lead_id == LifecycleZayavka.lead_id)
                         .where(LifecycleZayavka.skip_reason.is_(None),
                                LifecycleZayavka.pending.is_(None),
                                LeadTotal.pushed_total.is_not(None))).all()
        return [_followed(r) for r, total in rows
                if total is not None and Decimal(total) != 0 and "paid" not in (r.done or ())]


def skipped(store: Store, limit: int | None = None) -> list[Followed]:
    with store.session() as s:
        q = (select(LifecycleZayavka).where(LifecycleZayavka.skip_reason.is_not(None))
             .order_by(LifecycleZayavka.updated_at.desc()))
        return [_followed(r) for r in s.scalars(q.limit(limit) if limit else q)]


def counts(store: Store) -> dict[str, int]:
    """followed, skipped, pending — for `status`."""
    with store.session() as s:
        def n(*where: Any) -> int:
            return s.scalar(select(func.count()).select_from(LifecycleZayavka).where(*where)) or 0
        return {"followed": n(LifecycleZayavka.skip_reason.is_(None)),
                "skipped": n(LifecycleZayavka.skip_reason.is_not(None)),
                "pending": n(LifecycleZayavka.pending.is_not(None))}


def last_full_scan(store: Store) -> datetime | None:
    with store.session() as s:
        row = s.get(Cursor, FULL_SCAN)
        if row is None:
            return None
        try:
            at = datetime.fromisoformat(row.value)
        except ValueError:
            return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


# --- writers ----------------------------------------------------------------------------------
@dataclass
class Change:
    """What one cycle decided for one «Заявка»: the new baseline at ``version``, and (when the lead
    is written) the intent: ``patch`` (one element of a batched lead PATCH, or None), ``notes``,
    the stage moved to, and the journal entries the confirmation adds."""

    ref: str
    version: str
    number: str
    lead_id: int | None
    mirrored: Appointment | None
    patch: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    stage: int | None = None
    done: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    skip_reason: str | None = None
    base: Any = UNCHECKED   # state_of() the stored row this change was computed against

    @property
    def writes(self) -> bool:
        return bool(self.patch or self.notes)

    def intent(self) -> dict[str, Any]:
        return {"version": self.version, "number": self.number, "lead_id": self.lead_id,
                "mirrored": to_json(self.mirrored), "patch": self.patch, "notes": self.notes,
                "stage": self.stage, "done": self.done, "entries": self.entries, "base": self.base}

    @staticmethod
    def of_intent(ref: str, intent: dict[str, Any]) -> Change:
        return Change(ref=ref, version=intent["version"], number=intent["number"],
                      lead_id=intent["lead_id"], mirrored=from_json(intent["mirrored"]),
                      patch=intent.get("patch"), notes=list(intent.get("notes") or []),
                      stage=intent.get("stage"), done=list(intent.get("done") or []),
                      entries=list(intent.get("entries") or []), base=intent.get("base", UNCHECKED))


def _row(s: Session, ref: str, number: str) -> LifecycleZayavka:
    """The row, locked until the transaction ends (made when absent)."""
    row = s.get(LifecycleZayavka, ref, with_for_update=True)
    if row is None:
        row = LifecycleZayavka(ref=ref, data_version=UNCONFIRMED, number=number, passed=[], done=[])
        s.add(row)
    return row


def _moved_on(row: LifecycleZayavka, c: Change) -> bool:
    """The stored state is no longer the one ``c`` was computed against: the card's write landed
    in between, and ``c`` may be its echo or may undo it."""
    return bool(c.base != UNCHECKED and _state(row) != c.base)


def record_intents(store: Store, changes: Iterable[Change]) -> list[Change]:
    """Before the amoCRM write: every change's intent, in one transaction. Returns the changes
    recorded; one whose stored state moved on meanwhile, or whose lead has a cancel from the card
    under way, is dropped (the next cycle decides again against the new state)."""
    kept = []
    with store.exclusive(STAGE_WRITERS) as s:
        cancelling = {int(i) for i in s.scalars(select(CardCancel.lead_id))}
        for c in changes:
            if c.lead_id is not None and int(c.lead_id) in cancelling:
                continue
            row = _row(s, c.ref, c.number)
            if _moved_on(row, c):
                continue
            row.pending = c.intent()
            kept.append(c)
    return kept


def confirm(store: Store, changes: Iterable[Change], *, job: str, run_id: int | None) -> None:
    """After the amoCRM write (or with none needed): the new baseline, the stages passed, the
    journal; the intent cleared. A skipped «Заявка» is journaled only when its reason or version
    changed (once per change, never retried). Compare-and-set: when the stored state moved on
    since the change was computed, the newer state stays (its unconfirmed version makes the next
    cycle read the «Заявка» again); what was written to the lead is still journaled."""
    with store.session() as s:
        for c in changes:
            row = _row(s, c.ref, c.number)
            if c.skip_reason and (row.skip_reason, row.data_version) == (c.skip_reason, c.version):
                continue
            moved_on = _moved_on(row, c)
            if moved_on and not c.writes:
                continue
            if not moved_on:
                row.data_version, row.number, row.lead_id = c.version, c.number, c.lead_id
                row.skip_reason = c.skip_reason
                if c.mirrored is not None or c.skip_reason:
                    row.mirrored = to_json(c.mirrored) if c.mirrored is not None else row.mirrored
            if c.stage is not None and c.stage not in (row.passed or []):
                row.passed = [*(row.passed or []), c.stage]
            if c.done:
                row.done = sorted({*(row.done or []), *c.done})
            row.pending = None
            row.updated_at = utcnow()
            for e in c.entries:
                journal(s, job=job, system=e.get("system", "amocrm"), action=e["action"],
                        lead_id=c.lead_id, ref=c.ref, message=e.get("message"),
                        detail=e.get("detail") or {}, run_id=run_id)


def set_written(store: Store, ref: str, number: str, lead_id: int, written: Appointment, *, job: str,
                run_id: int | None, entry: dict[str, Any], stage: int | None = None) -> None:
    """What amo1c-sync itself wrote to 1C from the card becomes the baseline (so it does not come
    back as an event); the DataVersion is left unconfirmed, so the next cycle re-reads it."""
    with store.session() as s:
        row = _row(s, ref, number)
        row.lead_id, row.mirrored, row.skip_reason = lead_id, to_json(written), None
        row.data_version = UNCONFIRMED
        if stage is not None and stage not in (row.passed or []):
            row.passed = [*(row.passed or []), stage]
        row.done = sorted({*(row.done or []), "cancelled"})
        journal(s, job=job, system=entry.get("system", "1c"), action=entry["action"], lead_id=lead_id,
                ref=ref, message=entry.get("message"), detail=entry.get("detail") or {}, run_id=run_id)


def record_rescheduled(store: Store, ref: str, lead_id: int, *, day: date, start: time,
                       doctor: str) -> bool:
    """The card's reschedule, written to 1C by the registration job, becomes the baseline of a
    «Заявка» the lifecycle follows (so it never comes back as «Запись перенесена», even when the
    card moved on again meanwhile); the DataVersion is left unconfirmed, so the next cycle re-reads
    it. A «Заявка» not followed yet is left alone: its first sight is a baseline anyway."""
    with store.session() as s:
        row = s.get(LifecycleZayavka, ref, with_for_update=True)
        before = from_json(row.mirrored) if row is not None else None
        if row is None or before is None or row.lead_id != int(lead_id):
            return False
        row.mirrored = to_json(replace(before, day=day, start=start, doctor=doctor))
        row.data_version = UNCONFIRMED
        return True


def record_full_scan(store: Store, at: datetime) -> None:
    with store.session() as s:
        row = s.get(Cursor, FULL_SCAN)
        if row is None:
            s.add(Cursor(name=FULL_SCAN, value=at.isoformat()))
        else:
            row.value = at.isoformat()


# --- cancels from the card ----------------------------------------------------------------------
@dataclass(frozen=True)
class Cancel:
    """A cancel from the card under way: its lead, the «Заявка» it cancels and the note planned."""

    lead_id: int
    zayavka_ref: str | None
    number: str | None
    note: str | None


def cancels_under_way(store: Store) -> list[Cancel]:
    with store.session() as s:
        return [Cancel(r.lead_id, r.zayavka_ref, r.number, r.note)
                for r in s.scalars(select(CardCancel).order_by(CardCancel.lead_id))]


def leads_cancelling(store: Store) -> set[int]:
    """The leads with a cancel from the card under way."""
    with store.session() as s:
        return {int(i) for i in s.scalars(select(CardCancel.lead_id))}


def begin_cancel(store: Store, lead_ids: Iterable[int]) -> set[int]:
    """The intents, before anything is written to 1C or amoCRM. Returns the leads (of these and
    of the cancels already under way) with a lifecycle write under way: their cancel waits."""
    ids = {int(i) for i in lead_ids}
    with store.exclusive(STAGE_WRITERS) as s:
        have = {int(i) for i in s.scalars(select(CardCancel.lead_id))}
        for lead_id in sorted(ids - have):
            s.add(CardCancel(lead_id=lead_id))
        s.flush()
        writing = set()
        for pending in s.scalars(select(LifecycleZayavka.pending).where(LifecycleZayavka.pending.is_not(None))):
            lead = (pending or {}).get("lead_id")
            if lead is not None:
                writing.add(int(lead))
        return writing & (ids | have)


def plan_cancel(store: Store, lead_id: int, *, ref: str | None, number: str | None, note: str) -> None:
    """Which «Заявка» is cancelled and the note the lead gets (fixed before the 1C write, so a
    retry writes the same note, not «already cancelled»)."""
    with store.session() as s:
        row = s.get(CardCancel, int(lead_id)) or CardCancel(lead_id=int(lead_id))
        row.zayavka_ref, row.number, row.note = ref, number, note
        s.add(row)


def finish_cancel(store: Store, lead_id: int, *, job: str, run_id: int | None,
                  entries: Iterable[dict[str, Any]]) -> None:
    with store.session() as s:
        row = s.get(CardCancel, int(lead_id))
        if row is not None:
            s.delete(row)
        for e in entries:
            journal(s, job=job, system=e.get("system", "amocrm"), action=e["action"], lead_id=int(lead_id),
                    ref=e.get("ref"), message=e.get("message"), detail=e.get("detail") or {}, run_id=run_id)
