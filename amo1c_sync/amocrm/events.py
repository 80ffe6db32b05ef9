"""amoCRM's events list (``GET /api/v4/events``, docs/api-facts.md "Events"): what changed in the
account, by event type, without listing the entities themselves."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

EVENTS_PAGE = 100   # amoCRM's maximum page size for events


def field_changed_type(field_id: int) -> str:
    """The event type of a change of one custom field's value."""
    return f"custom_field_{int(field_id)}_value_changed"


def lead_events(amo: Any, types: Iterable[str], *, since: int) -> Iterator[dict]:
    """Lead events of these types created at or after ``since`` (unix seconds), each id once.

    amoCRM lists them newest first; an event added while we page pushes the older ones down a
    page, so a page may repeat one already seen (skipped) but never skips one. 204 ends it."""
    params = {"filter[type]": ",".join(types), "filter[entity]": "lead",
              "filter[created_at][from]": int(since), "limit": EVENTS_PAGE}
    seen: set[str] = set()
    for items in amo._pages("/api/v4/events", params, "events"):  # noqa: SLF001 - the gateway's paging helper, kept for the amoCRM package
        for event in items:
            key = str(event.get("id"))
            if key not in seen:
                seen.add(key)
                yield event


def set_value(event: dict) -> bool:
    """Whether a field-change event left the field with a value that is set (a checkbox ticked, a
    non-empty text)."""
    for item in event.get("value_after") or []:
        value = (item or {}).get("custom_field_value") if isinstance(item, dict) else None
        if not isinstance(value, dict):
            continue
        text = str(value.get("text") if value.get("text") is not None else "").strip().lower()
        if text not in ("", "0", "false", "нет", "no", "off") or value.get("enum_id"):
            return True
    return False
