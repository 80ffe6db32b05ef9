"""The account's event log and ``GET /api/v4/events``, as amoCRM documents them (docs/api-facts.md,
"Events"): a lead's creation is a ``lead_added`` event; a change of a custom field's value is a
``custom_field_<field id>_value_changed`` event whose ``value_before`` / ``value_after`` are lists of
``{"custom_field_value": {"field_id", "field_type", "enum_id", "text"}}`` (empty when the field had
no value); each event has a string ``id``, ``entity_id``, ``entity_type`` ``lead``, ``created_by``
and ``created_at`` (unix seconds).

Values typed into a new lead are recorded as changes from nothing, after its ``lead_added`` (the
docs do not say whether amoCRM does so; the daemon's reconciliation repairs a lead it did not).

``GET /api/v4/events``: ``filter[type]`` (comma-separated or an array), ``filter[entity]``
(``lead`` …), ``filter[entity_id]``, ``filter[id]``, ``filter[created_at]`` (a timestamp: from it
on; ``a,b``; or ``[from]`` / ``[to]``), ``page``, ``limit`` (at most 100: a larger one gives 100),
newest first; HAL ``{_page, _links, _embedded: {events}}``; 204 when nothing matches.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from amo1c_sync.sandbox.amocrm_emulator.problems import Problem, hal

EVENTS_PAGE_MAX = 100
#: amoCRM's numeric field type codes, as the events' custom_field_value carries them
FIELD_TYPE_CODES = {"text": 1, "numeric": 2, "checkbox": 3, "select": 4, "multiselect": 5, "date": 6,
                    "url": 7, "multitext": 8, "textarea": 9, "radiobutton": 10}
_LIST_KEY = re.compile(r"^filter\[(type|entity|entity_id|id)\](\[\d*\])?$")


class EventLog:
    """Events in the order they happened; thread-safe on its own lock."""

    def __init__(self, account_id: int, clock: Callable[[], float]):
        self.account_id = account_id
        self.clock = clock
        self.lock = threading.RLock()
        self.events: list[dict] = []
        self._seq = 0

    def add(self, etype: str, lead_id: int, *, before: list | None = None, after: list | None = None,
            at: int | None = None) -> dict:
        with self.lock:
            self._seq += 1
            event = {"id": f"01emu{self._seq:021d}", "type": etype, "entity_id": int(lead_id),
                     "entity_type": "lead", "created_by": 0,
                     "created_at": int(self.clock()) if at is None else int(at),
                     "value_after": after or [], "value_before": before or [],
                     "account_id": self.account_id}
            self.events.append(event)
            return event

    def field_changed(self, field: dict, lead_id: int, before: list | None, after: list | None,
                      at: int | None = None) -> None:
        """Record ``custom_field_<id>_value_changed`` when the stored values differ."""
        if (before or []) == (after or []):
            return
        self.add(f"custom_field_{field['id']}_value_changed", lead_id, at=at,
                 before=[_cf_value(field, v) for v in before or []],
                 after=[_cf_value(field, v) for v in after or []])

    def matching(self, keep: Callable[[dict], bool]) -> list[dict]:
        with self.lock:
            return [dict(e) for e in reversed(self.events) if keep(e)]


def _cf_value(field: dict, v: dict) -> dict:
    value = v.get("value")
    if field["type"] == "checkbox":
        text = "1" if value else "0"
    else:
        text = "" if value is None else str(value)
    return {"custom_field_value": {"field_id": field["id"], "field_type": FIELD_TYPE_CODES.get(field["type"], 1),
                                   "enum_id": v.get("enum_id"), "text": text}}


class EventRoutes:
    """``GET /api/v4/events`` over an EventLog."""

    def __init__(self, log: EventLog, *, page_links: Callable[..., dict]):
        self.log = log
        self._page_links = page_links

    def rules(self) -> list[Rule]:
        return [Rule("/api/v4/events", endpoint=self.list_, methods=["GET"])]

    def list_(self, request: Request) -> Response:
        page, limit = _page_args(request)
        found = self.log.matching(_event_filter(request))
        chunk = found[(page - 1) * limit: page * limit]
        if not chunk:
            return Response(status=204)
        host = request.host_url
        for e in chunk:
            e["_links"] = {"self": {"href": f"{host}api/v4/events/{e['id']}"}}
            e["_embedded"] = {"entity": {"id": e["entity_id"],
                                         "_links": {"self": {"href": f"{host}api/v4/leads/{e['entity_id']}"}}}}
        return hal({"_page": page, "_links": self._page_links(request, page, len(found) > page * limit),
                    "_embedded": {"events": chunk}})


def _page_args(request: Request) -> tuple[int, int]:
    try:
        page = int(request.args.get("page", 1))
        limit = int(request.args.get("limit", 50))
    except ValueError:
        raise Problem(400, "page and limit must be integers") from None
    if page < 1 or limit < 1:
        raise Problem(400, "page and limit must be positive")
    return page, min(limit, EVENTS_PAGE_MAX)


def _list_args(request: Request) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for key in request.args:
        m = _LIST_KEY.match(key)
        if m:
            for raw in request.args.getlist(key):
                out.setdefault(m.group(1), set()).update(p.strip() for p in raw.split(",") if p.strip())
    return out


def _ts(request: Request, key: str) -> int | None:
    raw = request.args.get(key)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise Problem(400, f"{key}: not a unix timestamp: {raw!r}") from None


def _created_range(request: Request) -> tuple[int | None, int | None]:
    plain = request.args.get("filter[created_at]")
    if plain:
        parts = [p.strip() for p in plain.split(",")]
        try:
            bounds = [int(p) for p in parts]
        except ValueError:
            raise Problem(400, f"filter[created_at]: not a unix timestamp: {plain!r}") from None
        return bounds[0], (bounds[1] if len(bounds) > 1 else None)
    return _ts(request, "filter[created_at][from]"), _ts(request, "filter[created_at][to]")


def _event_filter(request: Request) -> Callable[[dict], bool]:
    lists = _list_args(request)
    lo, hi = _created_range(request)
    entities = {"leads" if e == "lead" else e for e in lists.get("entity", ())}

    def keep(e: dict) -> bool:
        checks: list[tuple[str, Any]] = [("type", e["type"]), ("entity_id", str(e["entity_id"])),
                                         ("id", e["id"])]
        if any(k in lists and v not in lists[k] for k, v in checks):
            return False
        if entities and "leads" not in entities:
            return False
        return (lo is None or e["created_at"] >= lo) and (hi is None or e["created_at"] <= hi)
    return keep
