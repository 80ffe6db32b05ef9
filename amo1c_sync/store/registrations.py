"""F2's state: one row per lead that became (or should become) a «Заявка», with its failures in
the shared retry record. Each write comes with its journal entry, in one transaction.

Two guards against a second «Заявка» live on the row. The *claim* (``claimed_by`` until
``claimed_until``): one process at a time registers a lead, taken with one conditional UPDATE, so
it works the same on SQLite and PostgreSQL and a dead holder's claim simply runs out. The *intent*
(``create_sent_at``): committed before a create is sent and cleared when its ref is recorded; a
later attempt that finds it looks the «Заявка» up in 1C for the settle time before creating."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from amo1c_sync.domain.retry import ItemRetry
from amo1c_sync.store import retry as retries
from amo1c_sync.store.journal import journal
from amo1c_sync.store.models import Registration, RetryItem, utcnow


def _row(s: Session, lead_id: int) -> Registration:
    reg = s.get(Registration, lead_id)
    if reg is None:
        reg = Registration(lead_id=lead_id)
        s.add(reg)
    return reg


def get(store, lead_id: int) -> tuple[Registration | None, RetryItem | None]:
    """The lead's registration and its failure record, detached (read-only copies)."""
    with store.session() as s:
        reg = s.get(Registration, lead_id)
        failure = retries.get(s, retries.REGISTRATION, lead_id)
        for row in (reg, failure):
            if row is not None:
                s.expunge(row)
    return reg, failure


def record_ref(store, lead_id: int, *, ref: str, number: str | None, entry: dict[str, Any]) -> None:
    """A «Заявка» was created or changed in 1C: its ref and number, status pending."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.zayavka_ref, reg.zayavka_number, reg.status = ref, number, "pending"
        reg.create_sent_at = None
        journal(s, lead_id=lead_id, ref=ref, **entry)


def record_done(store, lead_id: int, *, ref: str, number: str | None, fingerprint: str,
                entry: dict[str, Any]) -> None:
    """amoCRM took the note and the PATCH: the registration is confirmed."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.zayavka_ref, reg.zayavka_number, reg.fingerprint = ref, number, fingerprint
        reg.status, reg.error = "done", None
        reg.claimed_by = reg.claimed_until = None
        retries.clear(s, retries.REGISTRATION, [lead_id])
        journal(s, lead_id=lead_id, ref=ref, **entry)


def record_invalid(store, lead_id: int, *, note: str, entry: dict[str, Any]) -> None:
    """The lead's data cannot become a «Заявка»; the note told it on the lead."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.status, reg.error = "invalid", note
        reg.claimed_by = reg.claimed_until = None
        retries.clear(s, retries.REGISTRATION, [lead_id])
        journal(s, lead_id=lead_id, message=note, **entry)


def record_failure(store, lead_id: int, *, error: str, code: str | None, retriable: bool,
                   version: str, policy: ItemRetry, job: str, run_id: int | None) -> RetryItem:
    """The lead failed: status failed, its retry record, and a journal entry that tells both."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.status = "failed"
        reg.claimed_by = reg.claimed_until = None
        item = retries.record_failure(s, retries.REGISTRATION, lead_id, error=error, code=code,
                                      retriable=retriable, version=version, policy=policy)
        journal(s, job=job, system="store", action="lead.failed", lead_id=lead_id, ref=reg.zayavka_ref,
                message=error[:2000],
                detail={"attempts": item.attempts, "code": code, "state": item.state,
                        "next_attempt_at": item.next_attempt_at.isoformat() if item.next_attempt_at else None},
                run_id=run_id)
        s.flush()
        s.expunge(item)
    return item


def load(store, lead_ids: Iterable[int]) -> dict[int, tuple[Registration | None, RetryItem | None]]:
    """``get`` for many leads in one transaction."""
    ids = list(dict.fromkeys(int(i) for i in lead_ids))
    out: dict[int, tuple[Registration | None, RetryItem | None]] = {}
    with store.session() as s:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            regs = {r.lead_id: r for r in s.scalars(select(Registration).where(Registration.lead_id.in_(chunk)))}
            failures = retries.load(s, retries.REGISTRATION, chunk)
            for lead_id in chunk:
                out[lead_id] = (regs.get(lead_id), failures.get(lead_id))
        s.expunge_all()
    return out


def claim(store, lead_id: int, owner: str, *, lease: float,
          now: datetime | None = None) -> Registration | None:
    """Take (or renew) the lead's claim for ``lease`` seconds; the fresh row (detached), or None
    when another process holds an unexpired claim."""
    now = now or utcnow()
    until = now + timedelta(seconds=lease)
    free = ((Registration.claimed_by.is_(None)) | (Registration.claimed_by == owner)
            | (Registration.claimed_until < now))
    try:
        with store.session() as s:
            done = s.execute(update(Registration).where(Registration.lead_id == lead_id, free)
                             .values(claimed_by=owner, claimed_until=until)
                             .execution_options(synchronize_session=False)).rowcount
            reg = s.get(Registration, lead_id)
            if not done:
                if reg is not None:
                    return None
                reg = Registration(lead_id=lead_id, status="pending", claimed_by=owner, claimed_until=until)
                s.add(reg)
                s.flush()
            s.expunge(reg)
    except IntegrityError:   # another process inserted the row first: it holds the claim
        return None
    return reg


def release(store, lead_ids: Iterable[int], owner: str) -> None:
    """Give up our claims on these leads (someone else's claim is left alone)."""
    ids = list(lead_ids)
    if not ids:
        return
    with store.session() as s:
        s.execute(update(Registration).where(Registration.lead_id.in_(ids), Registration.claimed_by == owner)
                  .values(claimed_by=None, claimed_until=None).execution_options(synchronize_session=False))


def record_intent(store, lead_id: int) -> None:
    """A create of the lead's «Заявка» is about to be sent (committed before it is)."""
    with store.session() as s:
        _row(s, lead_id).create_sent_at = utcnow()


def clear_intent(store, lead_id: int) -> None:
    """1C refused the create outright: nothing is in flight."""
    with store.session() as s:
        reg = s.get(Registration, lead_id)
        if reg is not None:
            reg.create_sent_at = None


def record_batch_done(store, done: list[dict[str, Any]], invalid: list[dict[str, Any]]) -> None:
    """One write-back batch confirmed by amoCRM: every lead's row, journal entry and retry record
    in ONE transaction. ``done`` items: lead_id, ref, number, fingerprint, entry; ``invalid``:
    lead_id, note, entry."""
    if not done and not invalid:
        return
    with store.session() as s:
        ids = [d["lead_id"] for d in done] + [d["lead_id"] for d in invalid]
        rows = {r.lead_id: r for r in s.scalars(select(Registration).where(Registration.lead_id.in_(ids)))}
        for d in done:
            reg = rows.get(d["lead_id"]) or _row(s, d["lead_id"])
            reg.zayavka_ref, reg.zayavka_number, reg.fingerprint = d["ref"], d["number"], d["fingerprint"]
            reg.status, reg.error, reg.create_sent_at = "done", None, None
            reg.claimed_by = reg.claimed_until = None
            journal(s, lead_id=d["lead_id"], ref=d["ref"], **d["entry"])
        for d in invalid:
            reg = rows.get(d["lead_id"]) or _row(s, d["lead_id"])
            reg.status, reg.error = "invalid", d["note"]
            reg.claimed_by = reg.claimed_until = None
            journal(s, lead_id=d["lead_id"], message=d["note"], **d["entry"])
        retries.clear(s, retries.REGISTRATION, ids)


def unsettled(store, *, limit: int = 250) -> list[Registration]:
    """Rows waiting for something (pending, failed), oldest first, detached."""
    with store.session() as s:
        rows = list(s.scalars(select(Registration).where(Registration.status.in_(("pending", "failed")))
                              .order_by(Registration.updated_at).limit(limit)))
        s.expunge_all()
    return rows


def record_reconciled(store, lead_id: int, *, entry: dict[str, Any]) -> None:
    """A pending row whose lead amoCRM shows written back (the PATCH was carried out, its
    confirmation lost): done."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.status, reg.error, reg.create_sent_at = "done", None, None
        retries.clear(s, retries.REGISTRATION, [lead_id])
        journal(s, lead_id=lead_id, ref=reg.zayavka_ref, **entry)


def record_deleted(store, lead_id: int, *, entry: dict[str, Any]) -> None:
    """The lead no longer exists in amoCRM: recorded as such, out of the retry queue."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.status, reg.claimed_by, reg.claimed_until = "deleted", None, None
        retries.clear(s, retries.REGISTRATION, [lead_id])
        journal(s, lead_id=lead_id, ref=reg.zayavka_ref, **entry)
