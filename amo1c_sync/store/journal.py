"""The journal: every change written to either system, and every decision worth tracing for a lead."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from amo1c_sync.store.models import JournalEntry

if TYPE_CHECKING:
    from amo1c_sync.store.db import Store


def journal(session: Session, *, job: str, system: str, action: str, lead_id: int | None = None,
            ref: str | None = None, message: str | None = None, detail: dict[str, Any] | None = None,
            run_id: int | None = None) -> None:
    """Add an entry in the caller's transaction (with the change it tells of)."""
    session.add(JournalEntry(job=job, system=system, action=action, lead_id=lead_id, ref=ref,
                             message=message, detail=detail or {}, run_id=run_id))


def record(store: Store, **entry: Any) -> None:
    """Add an entry in a transaction of its own."""
    with store.session() as s:
        journal(s, **entry)


def of_lead(store: Store, lead_id: int) -> list[JournalEntry]:
    """Every entry for a lead, oldest first."""
    with store.session() as s:
        return list(s.scalars(select(JournalEntry).where(JournalEntry.lead_id == lead_id)
                              .order_by(JournalEntry.at, JournalEntry.id)))
