"""F2's state: one row per lead that became (or should become) a «Заявка», with its failures in
the shared retry record. Each write comes with its journal entry, in one transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from amo1c_sync.domain.retry import ItemRetry
from amo1c_sync.store import retry as retries
from amo1c_sync.store.journal import journal
from amo1c_sync.store.models import Registration, RetryItem

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


def record_ref(store: Store, lead_id: int, *, ref: str, number: str | None, entry: dict[str, Any]) -> None:
    """A «Заявка» was created or changed in 1C: its ref and number, status pending."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.zayavka_ref, reg.zayavka_number, reg.status = ref, number, "pending"
        journal(s, lead_id=lead_id, ref=ref, **entry)


def record_done(store: Store, lead_id: int, *, ref: str, number: str | None, fingerprint: str,
                entry: dict[str, Any]) -> None:
    """amoCRM took the note and the PATCH: the registration is confirmed."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.zayavka_ref, reg.zayavka_number, reg.fingerprint = ref, number, fingerprint
        reg.status, reg.error = "done", None
        retries.clear(s, retries.REGISTRATION, [lead_id])
        journal(s, lead_id=lead_id, ref=ref, **entry)


def record_invalid(store: Store, lead_id: int, *, note: str, entry: dict[str, Any]) -> None:
    """The lead's data cannot become a «Заявка»; the note told it on the lead."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.status, reg.error = "invalid", note
        retries.clear(s, retries.REGISTRATION, [lead_id])
        journal(s, lead_id=lead_id, message=note, **entry)


def record_failure(store: Store, lead_id: int, *, error: str, code: str | None, retriable: bool,
                   version: str, policy: ItemRetry, job: str, run_id: int | None) -> RetryItem:
    """The lead failed: status failed, its retry record, and a journal entry that tells both."""
    with store.session() as s:
        reg = _row(s, lead_id)
        reg.status = "failed"
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
