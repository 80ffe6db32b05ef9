"""amoCRM API v4 handlers (what amo1c-sync uses), routed with a werkzeug Map.

* ``POST /oauth2/access_token`` (JSON or form), grants ``authorization_code`` and ``refresh_token``.
* Bearer auth on ``/api/``: missing, unknown or expired token -> 401 problem JSON.
* ``rate_limit`` requests in any sliding 1-second window (accepted ``/api/`` requests only); above
  that 429 with an HTML body and no Retry-After. ``block_after`` 429s within ``block_window``
  seconds -> every ``/api/`` request answers 403 (HTML) for ``block_seconds``.
* ``GET /api/v4/leads`` (HAL, 204 on an empty page, ``limit`` <= 250 else 400, ``page``,
  ``filter[updated_at][from|to]``, ``filter[id][]`` / ``filter[id][0]`` / repeated ``filter[id]``,
  ``order[updated_at|id|created_at]=asc|desc``, ``with=contacts``), ``GET /api/v4/leads/<id>``
  (204 when unknown or deleted), ``PATCH /api/v4/leads`` (array, <= 250 items, atomic: any
  validation error rejects the whole batch with 400 ``validation-errors`` per ``request_id`` =
  index), ``PATCH /api/v4/leads/<id>``, ``POST /api/v4/leads/notes``,
  ``GET /api/v4/leads/<id>/notes``, ``GET/PATCH /api/v4/leads/custom_fields[/<id>]``,
  ``POST /api/v4/leads/custom_fields`` (an array of ``{name, type, sort?, enums?: [{value,
  sort?}]}``, ``type`` a string — text, numeric, checkbox, select, date, …; enums only for the
  list types; all or none: one bad item rejects the batch with 400 ``validation-errors``; 200 with
  the created fields),
  ``GET /api/v4/account``, ``GET /api/v4/events`` (see :mod:`.events`), ``GET /api/v4/leads/pipelines``
  (:mod:`.pipelines`; a lead PATCH may carry ``pipeline_id``/``status_id``, an unknown one is a
  ``NotSupportedChoice``).
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from amo1c_sync.sandbox.amocrm_emulator.contacts import ContactBook, ContactRoutes
from amo1c_sync.sandbox.amocrm_emulator.events import EventRoutes
from amo1c_sync.sandbox.amocrm_emulator.oauth import Tokens
from amo1c_sync.sandbox.amocrm_emulator.problems import (
    HTML_403, HTML_429, Problem, hal, html, problem_response)
from amo1c_sync.sandbox.amocrm_emulator.state import LeadBook

_FILTER_ID = re.compile(r"^filter\[id\](\[\d*\])?$")


class RateLimiter:
    """At most ``rate_limit`` accepted requests in any sliding second; ``block_after`` refusals
    within ``block_window`` seconds block the API (403) for ``block_seconds``."""

    def __init__(self, rate_limit: float, block_after: int, block_window: float, block_seconds: float):
        self.rate_limit = rate_limit
        self.block_after, self.block_window, self.block_seconds = block_after, block_window, block_seconds
        self._lock = threading.Lock()
        self._accepted: collections.deque = collections.deque()
        self._rejections: collections.deque = collections.deque()
        self.blocked_until = 0.0

    def check(self) -> Response | None:
        now = time.monotonic()
        with self._lock:
            if now < self.blocked_until:
                return html(HTML_403, 403)
            while self._accepted and self._accepted[0] <= now - 1.0:
                self._accepted.popleft()
            if len(self._accepted) >= self.rate_limit:
                self._rejections.append(now)
                while self._rejections and self._rejections[0] <= now - self.block_window:
                    self._rejections.popleft()
                if len(self._rejections) >= self.block_after:
                    self.blocked_until = now + self.block_seconds
                    self._rejections.clear()
                return html(HTML_429, 429)
            self._accepted.append(now)
        return None

    def block(self, seconds: float) -> None:
        with self._lock:
            self.blocked_until = time.monotonic() + seconds

    def unblock(self) -> None:
        with self._lock:
            self.blocked_until = 0.0
            self._rejections.clear()

    @property
    def blocked(self) -> bool:
        return time.monotonic() < self.blocked_until


def page_args(request: Request, default_limit: int = 50) -> tuple[int, int]:
    try:
        page = int(request.args.get("page", 1))
        limit = int(request.args.get("limit", default_limit))
    except ValueError:
        raise Problem(400, "page and limit must be integers") from None
    if page < 1 or limit < 1:
        raise Problem(400, "page and limit must be positive")
    # "limit … (Максимум – 250)" (https://www.amocrm.ru/developers/content/crm_platform/leads-api);
    # a larger one is not refused, the page just holds 250 ("api/v4 возвращает не более 250
    # записей на одной странице", amoCRM's maintainer in amocrm/amocrm-api-php#210)
    return page, min(limit, 250)


def page_links(request: Request, page: int, has_next: bool) -> dict:
    base = request.base_url
    args = request.args.to_dict(flat=False)
    links = {"self": {"href": base + "?" + urlencode({**args, "page": page}, doseq=True)}}
    if has_next:
        links["next"] = {"href": base + "?" + urlencode({**args, "page": page + 1}, doseq=True)}
    if page > 1:
        links["prev"] = {"href": base + "?" + urlencode({**args, "page": page - 1}, doseq=True)}
    return links


def _array_body(request: Request, limit: int | None = 250) -> list:
    items = request.get_json(silent=True)
    if not isinstance(items, list) or not items:
        raise Problem(400, "Invalid request body: expected a non-empty JSON array")
    if limit is not None and len(items) > limit:
        raise Problem(400, f"Too many entities in one request: at most {limit}")
    return items


def _object_body(request: Request) -> dict:
    item = request.get_json(silent=True)
    if not isinstance(item, dict):
        raise Problem(400, "Invalid request body: expected a JSON object")
    return item


class AmoAPI:
    """The API: rate limit, then Bearer auth, then the handler for the route."""

    def __init__(self, book: LeadBook, tokens: Tokens, limiter: RateLimiter, *, subdomain: str,
                 contacts: ContactBook | None = None):
        self.book, self.tokens, self.limiter, self.subdomain = book, tokens, limiter, subdomain
        self.contacts = contacts if contacts is not None else ContactBook(book)
        contact_routes = ContactRoutes(self.contacts, page_args=page_args, page_links=page_links,
                                       array_body=_array_body, object_body=_object_body,
                                       id_filter=_lead_filter)
        self.url_map = Map([
            Rule("/oauth2/access_token", endpoint="token", methods=["POST"]),
            Rule("/api/v4/account", endpoint="account", methods=["GET"]),
            Rule("/api/v4/leads", endpoint="leads_list", methods=["GET"]),
            Rule("/api/v4/leads", endpoint="leads_patch", methods=["PATCH"]),
            Rule("/api/v4/leads", endpoint="leads_create", methods=["POST"]),
            Rule("/api/v4/leads/notes", endpoint="notes_add", methods=["POST"]),
            Rule("/api/v4/leads/pipelines", endpoint="pipelines", methods=["GET"]),
            Rule("/api/v4/leads/custom_fields", endpoint="fields_list", methods=["GET"]),
            Rule("/api/v4/leads/custom_fields", endpoint="fields_patch", methods=["PATCH"]),
            Rule("/api/v4/leads/custom_fields", endpoint="fields_create", methods=["POST"]),
            Rule("/api/v4/leads/custom_fields/<int:fid>", endpoint="field_get", methods=["GET"]),
            Rule("/api/v4/leads/custom_fields/<int:fid>", endpoint="field_patch_one", methods=["PATCH"]),
            Rule("/api/v4/leads/<int:lid>", endpoint="lead_get", methods=["GET"]),
            Rule("/api/v4/leads/<int:lid>", endpoint="lead_patch_one", methods=["PATCH"]),
            Rule("/api/v4/leads/<int:lid>/notes", endpoint="lead_notes", methods=["GET", "POST"]),
            *contact_routes.rules(),
            *EventRoutes(book.events, page_links=page_links).rules(),
        ])

    def __call__(self, request: Request) -> Response:
        try:
            if request.path.startswith("/api/"):
                limited = self.limiter.check()
                if limited is not None:
                    return limited
            endpoint, args = self.url_map.bind_to_environ(request.environ).match()
            if request.path.startswith("/api/"):
                self._authenticate(request)
            handler = endpoint if callable(endpoint) else getattr(self, f"_h_{endpoint}")
            return handler(request, **args)
        except Problem as p:
            return problem_response(p.status, p.body)
        except HTTPException as e:
            return problem_response(e.code or 500, {
                "title": e.name, "type": f"https://httpstatus.es/{e.code}", "status": e.code,
                "detail": e.description or e.name})

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not self.tokens.valid(header[7:].strip()):
            raise Problem(401, "Unauthorized")

    # ------------------------------------------------------------------ shapes
    def _lead(self, lead: dict, request: Request, with_: set[str]) -> dict:
        cfv = []
        for fid, values in lead["cf"].items():
            field = self.book.fields_by_id.get(fid)
            if field is None or not values:
                continue
            cfv.append({"field_id": fid, "field_name": field["name"], "field_code": None,
                        "field_type": field["type"], "values": [_api_value(field, v) for v in values]})
        body = {"id": lead["id"], "name": lead["name"], "price": lead["price"],
                "responsible_user_id": 8000001, "group_id": 0, "status_id": lead["status_id"],
                "pipeline_id": lead["pipeline_id"], "loss_reason_id": None, "created_by": 8000001,
                "updated_by": 0, "created_at": lead["created_at"], "updated_at": lead["updated_at"],
                "closed_at": None, "closest_task_at": None, "is_deleted": False,
                "custom_fields_values": cfv or None, "score": None,
                "account_id": self.book.account_id, "labor_cost": None,
                "_links": {"self": {"href": f"{request.host_url}api/v4/leads/{lead['id']}"}},
                "_embedded": {"tags": [], "companies": []}}
        if "contacts" in with_:
            body["_embedded"]["contacts"] = self.contacts.embedded(lead["id"], request.host_url)
        return body

    def _field(self, field: dict, request: Request) -> dict:
        return {"id": field["id"], "name": field["name"], "type": field["type"],
                "account_id": self.book.account_id, "code": None, "sort": field["sort"],
                "is_api_only": False,
                "enums": ([dict(e) for e in field["enums"]] if field["enums"] is not None else None),
                "group_id": None, "required_statuses": [], "is_deletable": True,
                "is_predefined": False, "entity_type": "leads", "remind": None, "settings": None,
                "_links": {"self": {"href": f"{request.host_url}api/v4/leads/custom_fields/{field['id']}"}}}

    # ------------------------------------------------------------------ handlers
    def _h_token(self, request: Request) -> Response:
        if request.mimetype == "application/json":
            data = request.get_json(silent=True) or {}
        else:
            data = request.form.to_dict()
        return _plain_json(self.tokens.grant(data))

    def _h_account(self, request: Request) -> Response:
        """The time zone is not a top-level key: it comes in ``_embedded.datetime_settings`` with
        ``?with=datetime_settings`` (https://developers.kommo.com/reference/account-parameters,
        the "with" parameters; the keys as amocrm/amocrm-api-php reads them in
        src/AmoCRM/Models/AccountSettings/DateTimeSettings.php, ``date_formant`` spelt so)."""
        body = {"id": self.book.account_id, "name": "Клиника", "subdomain": self.subdomain,
                "created_at": 1577836800, "created_by": 8000001, "current_user_id": 8000001,
                "country": "RU", "currency": "RUB", "currency_symbol": "₽",
                "customers_mode": "disabled", "is_unsorted_on": True, "version": 11,
                "_links": {"self": {"href": request.base_url}}}
        if "datetime_settings" in _with(request):
            body["_embedded"] = {"datetime_settings": self._datetime_settings()}
        return hal(body)

    def _datetime_settings(self) -> dict:
        offset = datetime.now(self.book.tz).strftime("%z")
        return {"date_pattern": "d.m.Y H:i", "short_date_pattern": "d.m.Y", "short_time_pattern": "H:i",
                "date_formant": "d.m.Y", "time_format": "H:i:s", "timezone": self.book.timezone_name,
                "timezone_offset": f"{offset[:3]}:{offset[3:]}"}

    def _h_pipelines(self, request: Request) -> Response:
        with self.book.lock:
            return hal(self.book.pipelines.api_view(request.host_url))

    def _h_leads_list(self, request: Request) -> Response:
        page, limit = page_args(request)
        flt = _lead_filter(request)
        with self.book.lock:
            leads = [lead for lead in self.book.leads.values() if not lead["deleted"] and flt(lead)]
            key, direction = _lead_order(request)
            leads.sort(key=lambda lead: (lead[key], lead["id"]), reverse=(direction == "desc"))
            chunk = leads[(page - 1) * limit: page * limit]
            if not chunk:
                return Response(status=204)
            with_ = _with(request)
            return hal({"_page": page,
                        "_links": page_links(request, page, len(leads) > page * limit),
                        "_embedded": {"leads": [self._lead(lead, request, with_) for lead in chunk]}})

    def _h_lead_get(self, request: Request, lid: int) -> Response:
        with self.book.lock:
            lead = self.book.live_lead(lid)
            if lead is None:
                return Response(status=204)
            return hal(self._lead(lead, request, _with(request)))

    def _patched(self, request: Request, items: list) -> list[dict]:
        return [{"id": lead["id"], "updated_at": lead["updated_at"], "request_id": rid,
                 "_links": {"self": {"href": f"{request.host_url}api/v4/leads/{lead['id']}"}}}
                for rid, lead in self.book.apply_patches(items)]

    def _h_leads_patch(self, request: Request) -> Response:
        out = self._patched(request, _array_body(request))
        return hal({"_links": {"self": {"href": request.base_url}}, "_embedded": {"leads": out}})

    def _h_lead_patch_one(self, request: Request, lid: int) -> Response:
        out = self._patched(request, [{**_object_body(request), "id": lid}])
        return hal({k: v for k, v in out[0].items() if k != "request_id"})

    def _h_leads_create(self, request: Request) -> Response:
        created = self.book.create_api_leads(_array_body(request, limit=None))
        out = [{"id": lid, "request_id": rid,
                "_links": {"self": {"href": f"{request.host_url}api/v4/leads/{lid}"}}} for rid, lid in created]
        return hal({"_links": {"self": {"href": request.base_url}}, "_embedded": {"leads": out}})

    def _notes(self, request: Request, entity_id: int | None = None) -> Response:
        notes = self.book.add_notes(_array_body(request), entity_id)
        out = [{"id": n["id"], "entity_id": n["entity_id"], "request_id": rid,
                "_links": {"self": {"href": f"{request.host_url}api/v4/leads/{n['entity_id']}/notes/{n['id']}"}}}
               for rid, n in notes]
        return hal({"_links": {"self": {"href": request.base_url}}, "_embedded": {"notes": out}})

    def _h_notes_add(self, request: Request) -> Response:
        return self._notes(request)

    def _h_lead_notes(self, request: Request, lid: int) -> Response:
        if request.method == "POST":
            return self._notes(request, entity_id=lid)
        page, limit = page_args(request)
        with self.book.lock:
            lead = self.book.live_lead(lid)
            notes = [] if lead is None else list(lead["notes"])
            chunk = notes[(page - 1) * limit: page * limit]
            if not chunk:
                return Response(status=204)
            return hal({"_page": page, "_links": page_links(request, page, len(notes) > page * limit),
                        "_embedded": {"notes": [dict(n) for n in chunk]}})

    def _h_fields_list(self, request: Request) -> Response:
        page, limit = page_args(request)
        with self.book.lock:
            fields = sorted(self.book.fields_by_id.values(), key=lambda f: (f["sort"], f["id"]))
            chunk = fields[(page - 1) * limit: page * limit]
            if not chunk:
                return Response(status=204)
            return hal({"_total_items": len(fields), "_page": page,
                        "_page_count": (len(fields) + limit - 1) // limit,
                        "_links": page_links(request, page, len(fields) > page * limit),
                        "_embedded": {"custom_fields": [self._field(f, request) for f in chunk]}})

    def _h_field_get(self, request: Request, fid: int) -> Response:
        with self.book.lock:
            field = self.book.fields_by_id.get(fid)
            if field is None:
                return Response(status=204)
            return hal(self._field(field, request))

    def _h_fields_patch(self, request: Request) -> Response:
        fields = self.book.patch_fields(_array_body(request, limit=None))
        return hal({"_embedded": {"custom_fields": [self._field(f, request) for f in fields]}})

    def _h_fields_create(self, request: Request) -> Response:
        fields = self.book.create_fields(_array_body(request, limit=None))
        return hal({"_total_items": len(fields),
                    "_embedded": {"custom_fields": [self._field(f, request) for f in fields]}})

    def _h_field_patch_one(self, request: Request, fid: int) -> Response:
        fields = self.book.patch_fields([{**_object_body(request), "id": fid}])
        return hal(self._field(fields[0], request))


def _plain_json(body: Any) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), content_type="application/json")


def _api_value(field: dict, v: dict) -> dict:
    if "enum_id" not in v:
        return {"value": v["value"]}
    enum = next((e for e in field["enums"] or [] if e["id"] == v["enum_id"]), None)
    return {"value": enum["value"] if enum else v["value"], "enum_id": v["enum_id"], "enum_code": None}


def _with(request: Request) -> set[str]:
    return set(filter(None, request.args.get("with", "").split(",")))


def _int_arg(request: Request, key: str) -> int | None:
    v = request.args.get(key)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise Problem(400, f"{key}: not a unix timestamp") from None


def _lead_filter(request: Request):
    """A predicate for ``filter[id]`` (every spelling) and ``filter[updated_at][from|to]``."""
    ids: set[int] | None = None
    for key in request.args.keys():
        if _FILTER_ID.match(key):
            ids = ids if ids is not None else set()
            for raw in request.args.getlist(key):
                for part in filter(None, (p.strip() for p in str(raw).split(","))):
                    try:
                        ids.add(int(part))
                    except ValueError:
                        raise Problem(400, f"filter[id]: not an id: {part!r}") from None
    upd_from = _int_arg(request, "filter[updated_at][from]")
    upd_to = _int_arg(request, "filter[updated_at][to]")

    def keep(lead: dict) -> bool:
        return ((ids is None or lead["id"] in ids)
                and (upd_from is None or lead["updated_at"] >= upd_from)
                and (upd_to is None or lead["updated_at"] <= upd_to))
    return keep


def _lead_order(request: Request) -> tuple[str, str]:
    for key in ("updated_at", "created_at", "id"):
        v = request.args.get(f"order[{key}]")
        if v:
            if v not in ("asc", "desc"):
                raise Problem(400, f"order[{key}] must be asc or desc")
            return key, v
    return "id", "asc"

