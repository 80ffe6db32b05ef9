"""The one retry record of registrations and payment totals (``RetryItem``).

A passing fault (RetriableError) waits an exponential backoff and counts towards ``[retry]
item_max_attempts``; an item error, and an item whose retries were given up, wait until the item
changes. The numbers are the item level of ``domain.retry.RetryPolicy``. Every function works
inside the caller's session, so that a failure is recorded in the same transaction as the journal
entry that tells it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from amo1c_sync.domain.retry import ItemRetry
from amo1c_sync.store.models import LeadTotal, Registration, RetryItem, utcnow

if TYPE_CHECKING:
    from amo1c_sync.config import Settings
    from amo1c_sync.store.db import Store

REGISTRATION = "registration"
PAYMENT = "payment"

RETRYING, ITEM_ERROR, GIVEN_UP = "retrying", "item_error", "given_up"

Decision = Literal["due", "deferred", "waiting"]


def policy_of(settings: Settings) -> ItemRetry:
    """The item level of the retry policy in force ([retry] in sync.ini)."""
    return settings.retry.policy().item


def decide(item: RetryItem | None, *, now: datetime, changed: bool) -> Decision:
    """``due``: try it now; ``deferred``: its backoff has not passed; ``waiting``: it waits for a
    change of the item (``changed``: the item is not what it was when it failed)."""
    if item is None or changed:
        return "due"
    if item.state != RETRYING:
        return "waiting"
    if item.next_attempt_at is not None and item.next_attempt_at > now:
        return "deferred"
    return "due"


def load(s: Session, kind: str, lead_ids: Iterable[int] | None = None) -> dict[int, RetryItem]:
    """The retry records of ``kind`` (of ``lead_ids`` when given), by lead."""
    q = select(RetryItem).where(RetryItem.kind == kind)
    if lead_ids is not None:
        ids = list(lead_ids)
        if not ids:
            return {}
        q = q.where(RetryItem.lead_id.in_(ids))
    return {r.lead_id: r for r in s.scalars(q)}


def get(s: Session, kind: str, lead_id: int) -> RetryItem | None:
    return s.get(RetryItem, (kind, lead_id))


def failure_of(store: Store, kind: str, lead_id: int) -> RetryItem | None:
    """The item's retry record, detached (a read-only copy)."""
    with store.session() as s:
        item = get(s, kind, lead_id)
        if item is not None:
            s.expunge(item)
        return item


def record_failure(s: Session, kind: str, lead_id: int, *, error: str, policy: ItemRetry,
                   retriable: bool, code: str | None = None, version: str | None = None,
                   now: datetime | None = None) -> RetryItem:
    """One more failure of the item: its state, attempts and next attempt."""
    now = now or utcnow()
    item = get(s, kind, lead_id)
    if item is None:
        item = RetryItem(kind=kind, lead_id=lead_id, attempts=0)
        s.add(item)
    item.attempts = (item.attempts or 0) + 1
    item.error, item.code, item.version = error[:4000], code, version
    item.updated_at = now
    if not retriable:
        item.state, item.next_attempt_at = ITEM_ERROR, None
    elif policy.gives_up(item.attempts):
        item.state, item.next_attempt_at = GIVEN_UP, None
    else:
        delay = policy.delay(item.attempts)
        item.state, item.next_attempt_at = RETRYING, now + timedelta(seconds=delay)
    return item


def clear(s: Session, kind: str, lead_ids: Iterable[int]) -> None:
    """The items succeeded: forget their failures."""
    for item in load(s, kind, lead_ids).values():
        s.delete(item)


def unsettled(store: Store, *, limit: int) -> tuple[dict[str, dict[str, int]], list[tuple[str, Any, RetryItem | None]]]:
    """For `status`: rows per status of each kind, and the newest rows not settled (registration not
    done, total not ok) of each kind with their retry record: ``(kind, row, failure)``."""
    counts: dict[str, dict[str, int]] = {}
    items: list[tuple[str, Any, RetryItem | None]] = []
    with store.session() as s:
        # a registration whose lead amoCRM deleted is settled too: nothing is left to do for it
        kinds: tuple[tuple[str, type[Registration | LeadTotal], tuple[str, ...]], ...] = (
            (REGISTRATION, Registration, ("done", "deleted")), (PAYMENT, LeadTotal, ("ok",)))
        for kind, model, good in kinds:
            counts[kind] = {st: n for st, n in s.execute(select(model.status, func.count())
                                                         .group_by(model.status))}
            rows: list[Registration | LeadTotal] = list(s.scalars(select(model).where(model.status.not_in(good))
                                  .order_by(model.updated_at.desc()).limit(limit)))
            failures = load(s, kind, [r.lead_id for r in rows])
            items += [(kind, row, failures.get(row.lead_id)) for row in rows]
    return counts, items
