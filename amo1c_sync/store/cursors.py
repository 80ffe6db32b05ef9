"""Where the incremental polls resume: the registration cursor and the last full payments scan.

``LeadingRun`` is the rule the registration cursor follows: it advances only past the leading run
of handled items, so that an item not handled (a passing fault, a stop) is polled again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from datetime import datetime, timezone

from amo1c_sync.store.models import Cursor

if TYPE_CHECKING:
    from amo1c_sync.store.db import Store

REGISTRATION = "registration.updated_at"
PAYMENTS_FULL_SCAN = "payments.last_full_scan"


class LeadingRun:
    """The highest position reached by an unbroken run of handled items, in poll order.

    ``start``: the cursor as it was; ``handled(pos)`` moves it to ``pos`` (never back) while no
    earlier item was left unhandled; ``unhandled()`` ends the run."""

    def __init__(self, start: int):
        self.value = int(start)
        self._broken = False

    def handled(self, position: int) -> None:
        if not self._broken:
            self.value = max(self.value, int(position))

    def unhandled(self) -> None:
        self._broken = True


def _get(store: Store, name: str) -> str | None:
    with store.session() as s:
        row = s.get(Cursor, name)
        return None if row is None else row.value


def _set(store: Store, name: str, value: str) -> None:
    with store.session() as s:
        row = s.get(Cursor, name)
        if row is None:
            s.add(Cursor(name=name, value=value))
        else:
            row.value = value


def registration(store: Store) -> int | None:
    """The ``updated_at`` (unix seconds) the registration poll resumes from; None before the first."""
    value = (_get(store, REGISTRATION) or "").strip()
    return int(value) if value.lstrip("-").isdigit() else None


def advance_registration(store: Store, value: int) -> None:
    """Move the registration cursor forward to ``value`` (never back)."""
    with store.session() as s:
        row = s.get(Cursor, REGISTRATION)
        if row is None:
            s.add(Cursor(name=REGISTRATION, value=str(int(value))))
        elif not row.value.strip().lstrip("-").isdigit() or int(row.value) < value:
            row.value = str(int(value))


def last_full_scan(store: Store) -> datetime | None:
    """When the payments job last read its whole lookback window (aware UTC), or None."""
    value = _get(store, PAYMENTS_FULL_SCAN)
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def record_full_scan(store: Store, at: datetime) -> None:
    _set(store, PAYMENTS_FULL_SCAN, at.isoformat())


REGISTRATION_EVENTS = "registration.events"


def registration_events(store: Store) -> dict[str, Any] | None:
    """Where the registration's events read resumes (see jobs/flagged.py), or None before the
    first: ``{"at", "seen", "open", "reconciled_at", "repairs_total"}``."""
    raw = _get(store, REGISTRATION_EVENTS)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("seen"), dict) else None


def save_registration_events(store: Store, state: dict[str, Any]) -> None:
    """One write: the events cursor and the leads still open move together."""
    _set(store, REGISTRATION_EVENTS, json.dumps(state, sort_keys=True))
