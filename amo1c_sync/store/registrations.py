"""F2's state: one row per lead that became (or should become) a «Заявка», with its failures in
the shared retry record. Each write comes with its journal entry, in one transaction.

Two guards against a second «Заявка» live on the row. The *claim* (``claimed_by`` until
``claimed_until``): one process at a time registers a lead, taken with one conditional UPDATE, so
it works the same on SQLite and PostgreSQL and a dead holder's claim simply runs out. The *intent*
(``create_sent_at``): committed before a create is sent and cleared when its ref is recorded; a
later attempt that finds it looks the «Заявка» up in 1C for the settle time before creating."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterable, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from amo1c_sync.domain.retry import ItemRetry
from amo1c_sync.store import retry as retries
from amo1c_sync.store.db import chunks
from amo1c_sync.store.journal import journal
from amo1c_sync.store.models import Registration, RetryItem, utcnow

if TYPE_CHECKING:
    from amo1c_sync.store.db import Store


def _row(s: Session, lead_id: int) -> Registration:
    reg = s.get(Registration, lead_id)
    if reg is None:
        reg = Registration(lead_id=lead_id)
        s.add(reg)
    return reg


def get(store: Store, lead_id: int) -> tuple[Registration | None, RetryItem | None]:
    """The lead's registration and its failure record, detached (read-only copies)."""
    with store.session() as s:
        reg = s.get(Registration, lead_id)
        failure = retries.get(s, retries.REGISTRATION, lead_id)
        for row in (reg, failure):
            if row is not None:
                s.expunge(row)
    return reg, failure


def record_failure(store: Store, lead_id: int, *, error: str, code: str | None, retriable: bool,
                   version: str, policy: ItemRetry, job: str, run_id: int | None,
                   ref: str | None = None, number: str | None = None,
                   entries: Iterable[dict[str, Any]] = (), create_unsent: bool = False) -> RetryItem:
    """The lead failed: status failed, its retry record, and a journal entry that tells both.
    ``ref``/``number``: the «Заявка» this attempt created or changed (with ``entries``, the journal
    entries of what it did in 1C); ``create_unsent``: no create of this attempt can be in flight."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.status = "failed"
        reg.claimed_by = reg.claimed_until = None
        if ref is not None:
            reg.zayavka_ref, reg.zayavka_number, reg.create_sent_at = ref, number, None
        elif create_unsent:
            reg.create_sent_at = None
        for entry in entries:
            journal(s, lead_id=lead_id, **entry)
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


def load(store: Store, lead_ids: Iterable[int]) -> dict[int, tuple[Registration | None, RetryItem | None]]:
    """``get`` for many leads in one transaction."""
    ids = list(dict.fromkeys(int(i) for i in lead_ids))
    out: dict[int, tuple[Registration | None, RetryItem | None]] = {}
    with store.session() as s:
        for chunk in chunks(ids):
            regs = {r.lead_id: r for r in s.scalars(select(Registration).where(Registration.lead_id.in_(chunk)))}
            failures = retries.load(s, retries.REGISTRATION, chunk)
            for lead_id in chunk:
                out[lead_id] = (regs.get(lead_id), failures.get(lead_id))
        s.expunge_all()
    return out


def claim(store: Store, lead_ids: Iterable[int], owner: str, *, lease: float, now: datetime | None = None,
          dead: Callable[[str], bool] | None = None) -> dict[int, Registration]:
    """Take (or renew) the claims of these leads for ``lease`` seconds, in one transaction: the
    rows of the leads now ours (detached), without those another process holds unexpired.
    ``dead(owner)``: True for a holder known to be gone (its claim is free at once)."""
    ids = list(dict.fromkeys(int(i) for i in lead_ids))
    if not ids:
        return {}
    now = now or utcnow()
    free = ((Registration.claimed_by.is_(None)) | (Registration.claimed_by == owner)
            | (Registration.claimed_until < now))
    with store.session() as s:
        have = set(s.scalars(select(Registration.lead_id).where(Registration.lead_id.in_(ids))))
        missing = [i for i in ids if i not in have]
        if missing:   # another process may insert one at the same time: then its row stands
            insert = pg_insert if store.dialect == "postgresql" else sqlite_insert
            s.execute(insert(Registration).on_conflict_do_nothing(index_elements=["lead_id"]),
                      [{"lead_id": i, "status": "pending", "updated_at": now} for i in missing])
        if dead is not None:
            holders = s.scalars(select(Registration.claimed_by).distinct().where(
                Registration.lead_id.in_(ids), Registration.claimed_by.is_not(None),
                Registration.claimed_by != owner, Registration.claimed_until >= now))
            gone = [h for h in holders if h is not None and dead(h)]
            if gone:
                free = free | Registration.claimed_by.in_(gone)
        s.execute(update(Registration).where(Registration.lead_id.in_(ids), free)
                  .values(claimed_by=owner, claimed_until=now + timedelta(seconds=lease))
                  .execution_options(synchronize_session=False))
        rows = {r.lead_id: r for r in s.scalars(select(Registration).where(Registration.lead_id.in_(ids)))
                if r.claimed_by == owner}
        s.expunge_all()
    return rows


def release(store: Store, lead_ids: Iterable[int], owner: str, *, create_unsent: Iterable[int] = ()) -> None:
    """Give up our claims on these leads (someone else's claim is left alone); for the leads in
    ``create_unsent`` no create can be in flight, so their intent goes too."""
    ids = list(lead_ids)
    if not ids:
        return
    unsent = [i for i in create_unsent if i in set(ids)]
    with store.session() as s:
        s.execute(update(Registration).where(Registration.lead_id.in_(ids), Registration.claimed_by == owner)
                  .values(claimed_by=None, claimed_until=None).execution_options(synchronize_session=False))
        if unsent:
            s.execute(update(Registration).where(Registration.lead_id.in_(unsent))
                      .values(create_sent_at=None).execution_options(synchronize_session=False))


def record_intent(store: Store, lead_id: int) -> None:
    """A create of the lead's «Заявка» is about to be sent (committed before it is)."""
    with store.session() as s:   # one statement: the claim made the row
        done = cast("CursorResult[Any]", s.execute(
            update(Registration).where(Registration.lead_id == lead_id).values(create_sent_at=utcnow())
            .execution_options(synchronize_session=False))).rowcount  # an UPDATE's result is a CursorResult
        if not done:
            _row(s, lead_id).create_sent_at = utcnow()


def record_batch_done(store: Store, done: list[dict[str, Any]], invalid: list[dict[str, Any]]) -> None:
    """One write-back batch confirmed by amoCRM: every lead's row, journal entries and retry record
    in ONE transaction. ``done`` items: lead_id, ref, number, fingerprint, entries (what was done
    in 1C and in amoCRM, in order); ``invalid``: lead_id, note, entry."""
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
            for entry in d["entries"]:
                journal(s, lead_id=d["lead_id"], **{"ref": d["ref"], **entry})
        for d in invalid:
            reg = rows.get(d["lead_id"]) or _row(s, d["lead_id"])
            reg.status, reg.error, reg.create_sent_at = "invalid", d["note"], None
            reg.claimed_by = reg.claimed_until = None
            journal(s, lead_id=d["lead_id"], message=d["note"], **d["entry"])
        retries.clear(s, retries.REGISTRATION, ids)


def unsettled(store: Store, *, limit: int = 250) -> list[Registration]:
    """Rows waiting for something (pending, failed), oldest first, detached."""
    with store.session() as s:
        rows = list(s.scalars(select(Registration).where(Registration.status.in_(("pending", "failed")))
                              .order_by(Registration.updated_at).limit(limit)))
        s.expunge_all()
    return rows


def record_reconciled(store: Store, lead_id: int, *, entry: dict[str, Any]) -> None:
    """A pending row whose lead amoCRM shows written back (the PATCH was carried out, its
    confirmation lost): done."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.status, reg.error, reg.create_sent_at = "done", None, None
        retries.clear(s, retries.REGISTRATION, [lead_id])
        journal(s, lead_id=lead_id, ref=reg.zayavka_ref, **entry)


def record_deleted(store: Store, lead_id: int, *, entry: dict[str, Any]) -> None:
    """The lead no longer exists in amoCRM: recorded as such, out of the retry queue."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.status, reg.claimed_by, reg.claimed_until = "deleted", None, None
        retries.clear(s, retries.REGISTRATION, [lead_id])
        journal(s, lead_id=lead_id, ref=reg.zayavka_ref, **entry)
