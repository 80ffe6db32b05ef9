"""An amoCRM API v4 emulator: a real HTTP server on loopback (werkzeug WSGI, threaded).

It implements what amo1c-sync uses, as amoCRM really behaves (SPEC section 4):

* ``POST /oauth2/access_token`` (JSON or form), grants ``authorization_code`` and
  ``refresh_token``; access tokens expire (``access_token_ttl``); refresh tokens are single-use:
  reusing one answers 401 problem JSON ``"hint": "Token has been revoked"`` and is counted in
  ``refresh_reuse_count``. Long-lived tokens (private integrations) never expire.
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
  ``GET /api/v4/account``.
* ``updated_at`` is bumped on every change of a lead, strictly increasing across the account
  (``max(now, last + 1)``), so that ordering by it is well defined. Adding a note does NOT bump it.
* Date fields are stored as the unix time of midnight in the account's time zone.

Control API under ``/_sandbox/`` (stable; tests, benchmarks and drills drive it):

* ``POST /_sandbox/leads`` ``{"name", "price"?, "fields": {"<field name>": value as typed}}`` ->
  201 ``{"id"}``. Values are what a person types: ``"22.12.2021"`` (or ``"2021-12-22"``) for a date,
  the option text for a select (an option not in the list is ADDED to the field, as the clinic's
  widget/directory sync would), ``true`` for a checkbox, ``"1500.50"`` or a number for numeric,
  ``null`` clears. ``PATCH /_sandbox/leads/<id>`` same shape; ``GET /_sandbox/leads/<id>`` ->
  ``{"id","name","price","updated_at","deleted","fields":{name: value},"notes":[text,...]}``
  (dates shown as ``DD.MM.YYYY``, numeric as a string); ``GET /_sandbox/leads`` lists them;
  ``DELETE /_sandbox/leads/<id>`` deletes the lead (the API then treats it as unknown).
* ``GET /_sandbox/fields`` -> the lead fields with their options.
* ``POST /_sandbox/faults`` ``{"count":N,"status":500,"delay_ms":0,"drop":false,
  "path_prefix":"/api/v4/leads","method":null}``; ``GET`` lists, ``DELETE`` clears them. Faults
  apply to every non-``/_sandbox/`` request (also the token endpoint) before anything else.
* ``GET /_sandbox/requests`` -> ``{"counts": {"GET /api/v4/leads": n, ...}, "total": n,
  "by_status": {...}, "max_per_second": m}``; ``DELETE`` resets them. ``max_per_second`` is the
  largest number of ``/api/`` requests that arrived within any 1-second window.
* ``POST /_sandbox/tokens/expire`` expires every access token; ``GET /_sandbox/tokens`` ->
  ``{"refresh_reuse_count","refresh_count","code_exchanges","active_refresh_tokens"}``;
  ``POST /_sandbox/tokens/long_lived`` -> ``{"token"}``.
* ``POST /_sandbox/oauth/code`` -> ``{"code","client_id","client_secret","redirect_uri"}`` (a fresh
  authorization code for the preset OAuth client).
* ``POST /_sandbox/block`` ``{"seconds": S}`` blocks the API (403) as if abused; ``DELETE`` lifts it.
"""

from __future__ import annotations

import collections
import json
import re
import secrets
import time
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from amo1c_sync.sandbox.base import DROPPED, LoopbackEmulator

DEFAULT_DOCTORS = ("Ефимова Е.В.", "Петрова А.С.", "Ишаева М.И.")


def default_time_grid(start: str = "08:00", end: str = "20:00", step: int = 5) -> list[str]:
    h, m = map(int, start.split(":"))
    eh, em = map(int, end.split(":"))
    out, t = [], h * 60 + m
    while t <= eh * 60 + em:
        out.append(f"{t // 60:02d}:{t % 60:02d}")
        t += step
    return out


# name, type, options (for selects)
DEFAULT_LEAD_FIELDS: tuple[tuple[str, str, Iterable[str]], ...] = (
    ("Дата записи к врачу", "date", ()),
    ("Врач", "select", DEFAULT_DOCTORS),
    ("Время записи", "select", default_time_grid()),
    ("ФИО клиента", "text", ()),
    ("Сумма1С", "numeric", ()),
    ("Зарегистрировать в 1С", "checkbox", ()),
    ("Заявка 1С", "text", ()),
)

_ENUM_TYPES = {"select", "multiselect", "radiobutton"}
_HTML_429 = ("<html><head><title>429 Too Many Requests</title></head><body>"
             "<center><h1>429 Too Many Requests</h1></center><hr><center>nginx</center>"
             "</body></html>")
_HTML_403 = ("<html><head><title>403 Forbidden</title></head><body>"
             "<center><h1>403 Forbidden</h1></center><hr><center>nginx</center></body></html>")


class _Problem(Exception):
    def __init__(self, status: int, detail: str, *, title: str | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.body = {"title": title or _TITLES.get(status, "Error"),
                     "type": f"https://httpstatus.es/{status}", "status": status,
                     "detail": detail, **extra}


_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed"}


def _problem_response(status: int, body: dict) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status,
                    content_type="application/problem+json")


def _hal(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status,
                    content_type="application/hal+json")


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status,
                    content_type="application/json")


class AmoCRMEmulator(LoopbackEmulator):
    """The emulator. ``with AmoCRMEmulator() as emu: emu.url`` or ``start()`` / ``stop()``."""

    thread_name = "amocrm-emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, rate_limit: float = 7,
                 block_after: int = 30, block_window: float = 10.0, block_seconds: float = 60.0,
                 timezone: str = "Europe/Moscow", access_token_ttl: int = 86400,
                 refresh_token_ttl: int = 90 * 86400,
                 client_id: str = "amo1c-sandbox-client",
                 client_secret: str = "amo1c-sandbox-secret",
                 redirect_uri: str = "https://127.0.0.1/amo1c-sync/oauth",
                 long_lived_token: str | None = None,
                 lead_fields: Iterable[tuple[str, str, Iterable[str]]] = DEFAULT_LEAD_FIELDS,
                 subdomain: str = "clinic", account_id: int = 29000001):
        super().__init__(host, port)
        self.rate_limit = rate_limit
        self.block_after, self.block_window, self.block_seconds = block_after, block_window, block_seconds
        self.tz = ZoneInfo(timezone)
        self.timezone_name = timezone
        self.access_token_ttl, self.refresh_token_ttl = access_token_ttl, refresh_token_ttl
        self.client_id, self.client_secret, self.redirect_uri = client_id, client_secret, redirect_uri
        self.subdomain, self.account_id = subdomain, account_id
        # data
        self._fields: dict[int, dict] = {}
        self._next_field_id = 1000001
        self._next_enum_id = 5000001
        self._leads: dict[int, dict] = {}
        self._next_lead_id = 30000001
        self._next_note_id = 70000001
        self._last_updated_at = 0
        for name, ftype, options in lead_fields:
            self.add_field(name, ftype, options)
        # oauth
        self._codes: dict[str, float] = {}
        self._access: dict[str, float] = {}      # token -> expires_at (wall clock); inf = long-lived
        self._refresh: dict[str, dict] = {}      # token -> {"used": bool, "expires_at": float}
        self.refresh_reuse_count = 0
        self.refresh_count = 0
        self.code_exchanges = 0
        if long_lived_token:
            self._access[long_lived_token] = float("inf")
        # traffic
        self._counts: collections.Counter = collections.Counter()
        self._by_status: collections.Counter = collections.Counter()
        self._arrivals: collections.deque = collections.deque()   # every /api/ request
        self._accepted: collections.deque = collections.deque()   # /api/ requests let through
        self._rejections: collections.deque = collections.deque()  # 429s, for the block rule
        self.max_per_second = 0
        self._blocked_until = 0.0
        self._url_map = Map([
            Rule("/oauth2/access_token", endpoint="token", methods=["POST"]),
            Rule("/api/v4/account", endpoint="account", methods=["GET"]),
            Rule("/api/v4/leads", endpoint="leads_list", methods=["GET"]),
            Rule("/api/v4/leads", endpoint="leads_patch", methods=["PATCH"]),
            Rule("/api/v4/leads", endpoint="leads_create", methods=["POST"]),
            Rule("/api/v4/leads/notes", endpoint="notes_add", methods=["POST"]),
            Rule("/api/v4/leads/custom_fields", endpoint="fields_list", methods=["GET"]),
            Rule("/api/v4/leads/custom_fields", endpoint="fields_patch", methods=["PATCH"]),
            Rule("/api/v4/leads/custom_fields/<int:fid>", endpoint="field_get", methods=["GET"]),
            Rule("/api/v4/leads/custom_fields/<int:fid>", endpoint="field_patch_one", methods=["PATCH"]),
            Rule("/api/v4/leads/<int:lid>", endpoint="lead_get", methods=["GET"]),
            Rule("/api/v4/leads/<int:lid>", endpoint="lead_patch_one", methods=["PATCH"]),
            Rule("/api/v4/leads/<int:lid>/notes", endpoint="lead_notes", methods=["GET", "POST"]),
            Rule("/_sandbox/leads", endpoint="sb_leads", methods=["GET", "POST"]),
            Rule("/_sandbox/leads/<int:lid>", endpoint="sb_lead", methods=["GET", "PATCH", "DELETE"]),
            Rule("/_sandbox/fields", endpoint="sb_fields", methods=["GET"]),
            Rule("/_sandbox/faults", endpoint="sb_faults", methods=["GET", "POST", "DELETE"]),
            Rule("/_sandbox/requests", endpoint="sb_requests", methods=["GET", "DELETE"]),
            Rule("/_sandbox/tokens", endpoint="sb_tokens", methods=["GET"]),
            Rule("/_sandbox/tokens/expire", endpoint="sb_tokens_expire", methods=["POST"]),
            Rule("/_sandbox/tokens/long_lived", endpoint="sb_long_lived", methods=["POST"]),
            Rule("/_sandbox/oauth/code", endpoint="sb_code", methods=["POST"]),
            Rule("/_sandbox/block", endpoint="sb_block", methods=["POST", "DELETE"]),
        ])

    # ------------------------------------------------------------------ lifecycle

    # ------------------------------------------------------------------ in-process accessors
    def add_field(self, name: str, ftype: str, options: Iterable[str] = ()) -> int:
        with self._lock:
            fid = self._next_field_id
            self._next_field_id += 1
            field = {"id": fid, "name": name, "type": ftype, "sort": 500 + len(self._fields) * 10,
                     "enums": None}
            if ftype in _ENUM_TYPES:
                field["enums"] = []
                for opt in options:
                    self._add_enum(field, opt)
            self._fields[fid] = field
            return fid

    def field_id(self, name: str) -> int:
        return self._field_by_name(name)["id"]

    def fields(self) -> list[dict]:
        with self._lock:
            return [json.loads(json.dumps(f)) for f in self._fields.values()]

    def create_lead(self, name: str = "", fields: dict | None = None, price: int | None = None) -> int:
        with self._lock:
            lid = self._next_lead_id
            self._next_lead_id += 1
            now = int(time.time())
            self._leads[lid] = {"id": lid, "name": name or f"Сделка #{lid}", "price": 0,
                                "created_at": now, "updated_at": now, "deleted": False,
                                "cf": {}, "notes": []}
            self._human_update(lid, {"fields": fields or {}, "price": price})
            return lid

    def update_lead(self, lead_id: int, fields: dict | None = None, *, name: str | None = None,
                    price: int | None = None) -> None:
        with self._lock:
            self._lead_or_404(lead_id)
            self._human_update(lead_id, {"fields": fields or {}, "name": name, "price": price})

    def delete_lead(self, lead_id: int) -> None:
        with self._lock:
            self._lead_or_404(lead_id)["deleted"] = True

    def lead(self, lead_id: int) -> dict:
        with self._lock:
            return self._human_view(self._lead_or_404(lead_id))

    def requests(self) -> dict:
        with self._lock:
            return {"counts": dict(self._counts), "total": sum(self._counts.values()),
                    "by_status": {str(k): v for k, v in self._by_status.items()},
                    "max_per_second": self.max_per_second}

    def reset_requests(self) -> None:
        with self._lock:
            self._counts.clear()
            self._by_status.clear()
            self._arrivals.clear()
            self.max_per_second = 0

    def token_stats(self) -> dict:
        with self._lock:
            return {"refresh_reuse_count": self.refresh_reuse_count,
                    "refresh_count": self.refresh_count, "code_exchanges": self.code_exchanges,
                    "active_refresh_tokens": sum(1 for r in self._refresh.values() if not r["used"])}

    def expire_tokens(self) -> None:
        with self._lock:
            now = time.time()
            for tok, exp in list(self._access.items()):
                if exp != float("inf"):
                    self._access[tok] = min(exp, now - 1)

    def new_auth_code(self) -> dict:
        with self._lock:
            code = "def502" + secrets.token_hex(40)
            self._codes[code] = time.time() + 20 * 60
            return {"code": code, "client_id": self.client_id,
                    "client_secret": self.client_secret, "redirect_uri": self.redirect_uri}

    def issue_long_lived_token(self) -> str:
        with self._lock:
            tok = "ll." + secrets.token_urlsafe(48)
            self._access[tok] = float("inf")
            return tok

    def block(self, seconds: float) -> None:
        with self._lock:
            self._blocked_until = time.monotonic() + seconds

    def unblock(self) -> None:
        with self._lock:
            self._blocked_until = 0.0
            self._rejections.clear()

    # ------------------------------------------------------------------ WSGI
    def wsgi_app(self, environ, start_response):
        request = Request(environ)
        try:
            response = self._dispatch(request, environ)
        except _Problem as p:
            response = _problem_response(p.status, p.body)
        except HTTPException as e:
            response = _problem_response(e.code or 500, {
                "title": e.name, "type": f"https://httpstatus.es/{e.code}", "status": e.code,
                "detail": e.description or e.name})
        if response is None:  # connection dropped on purpose: the write below fails quietly
            response = Response(b"", status=500)
        if not request.path.startswith("/_sandbox/"):
            with self._lock:
                self._by_status[response.status_code] += 1
        return response(environ, start_response)

    def _dispatch(self, request: Request, environ) -> Response | None:
        path = request.path
        sandbox = path.startswith("/_sandbox/")
        if not sandbox:
            with self._lock:
                self._counts[f"{request.method} {path}"] += 1
            struck = self.strike(request, environ)
            if struck is not None:
                return None if struck is DROPPED else struck
            if path.startswith("/api/"):
                limited = self._rate_check()
                if limited is not None:
                    return limited
        adapter = self._url_map.bind_to_environ(environ)
        endpoint, args = adapter.match()
        if path.startswith("/api/"):
            self._authenticate(request)
        handler = getattr(self, f"_h_{endpoint}")
        return handler(request, **args)

    def _fault_response(self, status: int) -> Response:
        if status == 429:
            return Response(_HTML_429, status=429, content_type="text/html")
        if status == 403:
            return Response(_HTML_403, status=403, content_type="text/html")
        if status >= 500:
            return Response(f"<html><body><h1>{status}</h1>nginx</body></html>", status=status,
                            content_type="text/html")
        return _problem_response(status, _Problem(status, "Injected fault").body)

    def _rate_check(self) -> Response | None:
        now = time.monotonic()
        with self._lock:
            self._arrivals.append(now)
            while self._arrivals and self._arrivals[0] <= now - 1.0:
                self._arrivals.popleft()
            self.max_per_second = max(self.max_per_second, len(self._arrivals))
            if now < self._blocked_until:
                return Response(_HTML_403, status=403, content_type="text/html")
            while self._accepted and self._accepted[0] <= now - 1.0:
                self._accepted.popleft()
            if len(self._accepted) >= self.rate_limit:
                self._rejections.append(now)
                while self._rejections and self._rejections[0] <= now - self.block_window:
                    self._rejections.popleft()
                if len(self._rejections) >= self.block_after:
                    self._blocked_until = now + self.block_seconds
                    self._rejections.clear()
                return Response(_HTML_429, status=429, content_type="text/html")
            self._accepted.append(now)
        return None

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise _Problem(401, "Unauthorized")
        token = header[7:].strip()
        with self._lock:
            exp = self._access.get(token)
        if exp is None or exp <= time.time():
            raise _Problem(401, "Unauthorized")

    # ------------------------------------------------------------------ OAuth
    def _new_pair(self) -> dict:
        access = "at." + secrets.token_urlsafe(48)
        refresh = "rt." + secrets.token_urlsafe(48)
        now = time.time()
        self._access[access] = now + self.access_token_ttl
        self._refresh[refresh] = {"used": False, "expires_at": now + self.refresh_token_ttl}
        return {"token_type": "Bearer", "expires_in": self.access_token_ttl,
                "access_token": access, "refresh_token": refresh}

    @staticmethod
    def _oauth_problem(hint: str, status: int = 401) -> _Problem:
        return _Problem(status, "В запросе отсутствует ряд параметров или параметры невалидны",
                        title="Некорректный запрос", hint=hint,
                        type="https://developers.amocrm.ru/v3/errors/OAuthProblemJson")

    def _h_token(self, request: Request) -> Response:
        if request.mimetype == "application/json":
            data = request.get_json(silent=True) or {}
        else:
            data = request.form.to_dict()
        with self._lock:
            if data.get("client_id") != self.client_id or data.get("client_secret") != self.client_secret:
                raise self._oauth_problem("Client authentication failed")
            grant = data.get("grant_type")
            if grant == "authorization_code":
                code = data.get("code") or ""
                exp = self._codes.pop(code, None)
                if exp is None or exp < time.time():
                    raise self._oauth_problem("Authorization code has been revoked", 400)
                if data.get("redirect_uri") != self.redirect_uri:
                    raise self._oauth_problem("redirect_uri mismatch", 400)
                self.code_exchanges += 1
                return _json(self._new_pair())
            if grant == "refresh_token":
                rt = self._refresh.get(data.get("refresh_token") or "")
                if rt is None:
                    raise self._oauth_problem("Cannot decrypt the refresh token")
                if rt["used"]:
                    self.refresh_reuse_count += 1
                    raise self._oauth_problem("Token has been revoked")
                if rt["expires_at"] < time.time():
                    raise self._oauth_problem("Token has expired")
                rt["used"] = True
                self.refresh_count += 1
                return _json(self._new_pair())
        raise self._oauth_problem("The authorization grant type is not supported", 400)

    # ------------------------------------------------------------------ helpers
    def _field_by_name(self, name: str) -> dict:
        with self._lock:
            for f in self._fields.values():
                if f["name"] == name:
                    return f
        raise _Problem(400, f"no lead field named {name!r}; fields: "
                            + ", ".join(f["name"] for f in self._fields.values()))

    def _add_enum(self, field: dict, value: str, sort: int | None = None) -> dict:
        enum = {"id": self._next_enum_id, "value": str(value),
                "sort": sort if sort is not None else (len(field["enums"]) + 1) * 10}
        self._next_enum_id += 1
        field["enums"].append(enum)
        return enum

    def _lead_or_404(self, lead_id: int) -> dict:
        lead = self._leads.get(lead_id)
        if lead is None:
            raise NotFound(f"lead {lead_id} does not exist")
        return lead

    def _bump(self, lead: dict) -> None:
        ts = max(int(time.time()), self._last_updated_at + 1)
        self._last_updated_at = ts
        lead["updated_at"] = ts

    def _midnight(self, d: date) -> int:
        return int(datetime(d.year, d.month, d.day, tzinfo=self.tz).timestamp())

    def _parse_human_date(self, value: Any) -> int:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self._midnight(datetime.fromtimestamp(value, self.tz).date())
        s = str(value).strip()
        for fmt in ("%d.%m.%Y", "%Y-%m-%d", "%d.%m.%y"):
            try:
                return self._midnight(datetime.strptime(s, fmt).date())
            except ValueError:
                pass
        raise _Problem(400, f"not a date: {value!r}; type it as DD.MM.YYYY")

    def _human_update(self, lead_id: int, body: dict) -> None:
        lead = self._leads[lead_id]
        if body.get("name") is not None:
            lead["name"] = str(body["name"])
        if body.get("price") is not None:
            lead["price"] = int(Decimal(str(body["price"])))
        for name, value in (body.get("fields") or {}).items():
            field = self._field_by_name(name)
            fid = field["id"]
            if value is None or value == "":
                lead["cf"].pop(fid, None)
                continue
            t = field["type"]
            if t == "date":
                lead["cf"][fid] = [{"value": self._parse_human_date(value)}]
            elif t in _ENUM_TYPES:
                text = str(value)
                enum = next((e for e in field["enums"] if e["value"] == text), None)
                if enum is None:
                    enum = self._add_enum(field, text)
                lead["cf"][fid] = [{"value": enum["value"], "enum_id": enum["id"]}]
            elif t == "checkbox":
                flag = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "да", "yes", "on")
                lead["cf"][fid] = [{"value": flag}]
            elif t == "numeric":
                try:
                    num = Decimal(str(value).replace(",", ".").replace(" ", ""))
                except InvalidOperation:
                    raise _Problem(400, f"not a number: {value!r}") from None
                lead["cf"][fid] = [{"value": format(num, "f")}]
            else:
                lead["cf"][fid] = [{"value": str(value)}]
        self._bump(lead)

    def _human_view(self, lead: dict) -> dict:
        fields = {}
        for fid, values in lead["cf"].items():
            field = self._fields.get(fid)
            if field is None or not values:
                continue
            v = values[0]["value"]
            if field["type"] == "date":
                v = datetime.fromtimestamp(v, self.tz).strftime("%d.%m.%Y")
            elif field["type"] in _ENUM_TYPES:
                enum = next((e for e in field["enums"] if e["id"] == values[0].get("enum_id")), None)
                v = enum["value"] if enum else v
            fields[field["name"]] = v
        return {"id": lead["id"], "name": lead["name"], "price": lead["price"],
                "updated_at": lead["updated_at"], "deleted": lead["deleted"], "fields": fields,
                "notes": [n["params"]["text"] for n in lead["notes"]]}

    def _api_lead(self, lead: dict, request: Request, with_: set[str]) -> dict:
        cfv = []
        for fid, values in lead["cf"].items():
            field = self._fields.get(fid)
            if field is None or not values:
                continue
            out_values = []
            for v in values:
                item = {"value": v["value"]}
                if "enum_id" in v:
                    enum = next((e for e in field["enums"] or [] if e["id"] == v["enum_id"]), None)
                    item = {"value": enum["value"] if enum else v["value"], "enum_id": v["enum_id"],
                            "enum_code": None}
                out_values.append(item)
            cfv.append({"field_id": fid, "field_name": field["name"], "field_code": None,
                        "field_type": field["type"], "values": out_values})
        body = {"id": lead["id"], "name": lead["name"], "price": lead["price"],
                "responsible_user_id": 8000001, "group_id": 0, "status_id": 142000001,
                "pipeline_id": 7000001, "loss_reason_id": None, "created_by": 8000001,
                "updated_by": 0, "created_at": lead["created_at"], "updated_at": lead["updated_at"],
                "closed_at": None, "closest_task_at": None, "is_deleted": False,
                "custom_fields_values": cfv or None, "score": None,
                "account_id": self.account_id, "labor_cost": None,
                "_links": {"self": {"href": f"{request.host_url}api/v4/leads/{lead['id']}"}},
                "_embedded": {"tags": [], "companies": []}}
        if "contacts" in with_:
            body["_embedded"]["contacts"] = []
        return body

    def _api_field(self, field: dict, request: Request) -> dict:
        return {"id": field["id"], "name": field["name"], "type": field["type"],
                "account_id": self.account_id, "code": None, "sort": field["sort"],
                "is_api_only": False,
                "enums": ([dict(e) for e in field["enums"]] if field["enums"] is not None else None),
                "group_id": None, "required_statuses": [], "is_deletable": True,
                "is_predefined": False, "entity_type": "leads", "remind": None, "settings": None,
                "_links": {"self": {"href": f"{request.host_url}api/v4/leads/custom_fields/{field['id']}"}}}

    @staticmethod
    def _page_args(request: Request, default_limit: int = 50) -> tuple[int, int]:
        try:
            page = int(request.args.get("page", 1))
            limit = int(request.args.get("limit", default_limit))
        except ValueError:
            raise _Problem(400, "page and limit must be integers") from None
        if limit > 250:
            raise _Problem(400, "Request validation failed", **{"validation-errors": [
                {"request_id": "0", "errors": [{"code": "InvalidLimit", "path": "limit",
                                                "detail": "This value should be 250 or less."}]}]})
        if page < 1 or limit < 1:
            raise _Problem(400, "page and limit must be positive")
        return page, limit

    @staticmethod
    def _page_links(request: Request, page: int, has_next: bool) -> dict:
        base = request.base_url
        args = request.args.to_dict(flat=False)
        links = {"self": {"href": base + "?" + urlencode({**args, "page": page}, doseq=True)}}
        if has_next:
            links["next"] = {"href": base + "?" + urlencode({**args, "page": page + 1}, doseq=True)}
        if page > 1:
            links["prev"] = {"href": base + "?" + urlencode({**args, "page": page - 1}, doseq=True)}
        return links

    _FILTER_ID = re.compile(r"^filter\[id\](\[\d*\])?$")

    # ------------------------------------------------------------------ API handlers
    def _h_account(self, request: Request) -> Response:
        return _hal({"id": self.account_id, "name": "Клиника", "subdomain": self.subdomain,
                     "country": "RU", "currency": "RUB", "timezone": self.timezone_name,
                     "_links": {"self": {"href": request.base_url}}})

    def _h_leads_list(self, request: Request) -> Response:
        page, limit = self._page_args(request)
        ids: set[int] = set()
        id_filter = False
        for key in request.args.keys():
            if self._FILTER_ID.match(key):
                id_filter = True
                for raw in request.args.getlist(key):
                    for part in str(raw).split(","):
                        if part.strip():
                            try:
                                ids.add(int(part))
                            except ValueError:
                                raise _Problem(400, f"filter[id]: not an id: {part!r}") from None

        def _int_arg(key: str) -> int | None:
            v = request.args.get(key)
            if v is None or v == "":
                return None
            try:
                return int(v)
            except ValueError:
                raise _Problem(400, f"{key}: not a unix timestamp") from None

        upd_from = _int_arg("filter[updated_at][from]")
        upd_to = _int_arg("filter[updated_at][to]")
        order_key, order_dir = "id", "asc"
        for key in ("updated_at", "created_at", "id"):
            v = request.args.get(f"order[{key}]")
            if v:
                if v not in ("asc", "desc"):
                    raise _Problem(400, f"order[{key}] must be asc or desc")
                order_key, order_dir = key, v
                break
        with_ = set(filter(None, request.args.get("with", "").split(",")))
        with self._lock:
            leads = [l for l in self._leads.values() if not l["deleted"]]
            if id_filter:
                leads = [l for l in leads if l["id"] in ids]
            if upd_from is not None:
                leads = [l for l in leads if l["updated_at"] >= upd_from]
            if upd_to is not None:
                leads = [l for l in leads if l["updated_at"] <= upd_to]
            leads.sort(key=lambda l: (l[order_key], l["id"]), reverse=(order_dir == "desc"))
            chunk = leads[(page - 1) * limit: page * limit]
            if not chunk:
                return Response(status=204)
            body = {"_page": page,
                    "_links": self._page_links(request, page, len(leads) > page * limit),
                    "_embedded": {"leads": [self._api_lead(l, request, with_) for l in chunk]}}
        return _hal(body)

    def _h_lead_get(self, request: Request, lid: int) -> Response:
        with self._lock:
            lead = self._leads.get(lid)
            if lead is None or lead["deleted"]:
                return Response(status=204)
            with_ = set(filter(None, request.args.get("with", "").split(",")))
            return _hal(self._api_lead(lead, request, with_))

    def _h_leads_create(self, request: Request) -> Response:
        items = request.get_json(silent=True)
        if not isinstance(items, list) or not items:
            raise _Problem(400, "Invalid request body: expected a JSON array")
        with self._lock:
            out = []
            for i, item in enumerate(items):
                lid = self.create_lead(str(item.get("name") or ""), price=item.get("price"))
                if item.get("custom_fields_values"):
                    errors, staged = self._validate_cfv(item["custom_fields_values"])
                    if errors:
                        raise _Problem(400, "Request validation failed", **{"validation-errors": [
                            {"request_id": str(i), "errors": errors}]})
                    self._leads[lid]["cf"].update(staged)
                out.append({"id": lid, "request_id": str(i),
                            "_links": {"self": {"href": f"{request.host_url}api/v4/leads/{lid}"}}})
        return _hal({"_links": {"self": {"href": request.base_url}}, "_embedded": {"leads": out}})

    def _validate_cfv(self, cfv: Any, prefix: str = "custom_fields_values") -> tuple[list, dict]:
        """Validate custom_fields_values; return (errors, {field_id: stored values or None})."""
        errors: list[dict] = []
        staged: dict[int, list | None] = {}
        if not isinstance(cfv, list):
            return [{"code": "InvalidType", "path": prefix, "detail": "This value should be of type array."}], {}
        for i, entry in enumerate(cfv):
            p = f"{prefix}.{i}"
            if not isinstance(entry, dict):
                errors.append({"code": "InvalidType", "path": p, "detail": "This value should be of type object."})
                continue
            field = self._fields.get(entry.get("field_id")) if isinstance(entry.get("field_id"), int) else None
            if field is None:
                errors.append({"code": "NotSupportedChoice", "path": f"{p}.field_id",
                               "detail": "The value you selected is not a valid choice."})
                continue
            values = entry.get("values")
            if values is None or values == []:
                staged[field["id"]] = None
                continue
            if not isinstance(values, list):
                errors.append({"code": "InvalidType", "path": f"{p}.values", "detail": "This value should be of type array."})
                continue
            stored = []
            for j, v in enumerate(values[:1] if field["type"] not in ("multiselect",) else values):
                vp = f"{p}.values.{j}"
                if not isinstance(v, dict):
                    errors.append({"code": "InvalidType", "path": vp, "detail": "This value should be of type object."})
                    continue
                ok, res = self._coerce(field, v, vp)
                if ok:
                    stored.append(res)
                else:
                    errors.append(res)
            staged[field["id"]] = stored
        return errors, staged

    def _coerce(self, field: dict, v: dict, vp: str) -> tuple[bool, Any]:
        t = field["type"]
        value = v.get("value")
        if t in _ENUM_TYPES:
            if "enum_id" in v:
                enum = next((e for e in field["enums"] if e["id"] == v["enum_id"]), None)
                if enum is None:
                    return False, {"code": "NotSupportedChoice", "path": f"{vp}.enum_id",
                                   "detail": "The value you selected is not a valid choice."}
            else:
                enum = next((e for e in field["enums"] if e["value"] == value), None)
                if enum is None:
                    return False, {"code": "NotSupportedChoice", "path": f"{vp}.value",
                                   "detail": "The value you selected is not a valid choice."}
            return True, {"value": enum["value"], "enum_id": enum["id"]}
        if t == "checkbox":
            if not isinstance(value, bool):
                return False, {"code": "InvalidType", "path": f"{vp}.value",
                               "detail": "This value should be of type bool."}
            return True, {"value": value}
        if t == "numeric":
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                return False, {"code": "InvalidType", "path": f"{vp}.value",
                               "detail": "This value should be of type numeric."}
            try:
                num = Decimal(str(value))
                if not num.is_finite():
                    raise InvalidOperation
            except InvalidOperation:
                return False, {"code": "InvalidType", "path": f"{vp}.value",
                               "detail": "This value should be of type numeric."}
            return True, {"value": format(num, "f")}
        if t in ("date", "date_time", "birthday"):
            if isinstance(value, bool):
                ok = False
            elif isinstance(value, int):
                ok, ts = True, value
            elif isinstance(value, str):
                try:
                    ts = int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()) \
                        if "T" in value or ":" in value else \
                        self._midnight(date.fromisoformat(value))
                    ok = True
                except ValueError:
                    ok = False
            else:
                ok = False
            if not ok:
                return False, {"code": "InvalidType", "path": f"{vp}.value",
                               "detail": "This value should be a unix timestamp or a date."}
            if t != "date_time":
                ts = self._midnight(datetime.fromtimestamp(ts, self.tz).date())
            return True, {"value": ts}
        # text, textarea, url, ...
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return False, {"code": "InvalidType", "path": f"{vp}.value",
                           "detail": "This value should be of type string."}
        return True, {"value": str(value)}

    def _validate_lead_patch(self, item: Any) -> tuple[list, dict]:
        if not isinstance(item, dict):
            return [{"code": "InvalidType", "path": "", "detail": "This value should be of type object."}], {}
        errors: list[dict] = []
        lead_id = item.get("id")
        lead = self._leads.get(lead_id) if isinstance(lead_id, int) and not isinstance(lead_id, bool) else None
        if lead_id is None:
            errors.append({"code": "FieldMissing", "path": "id", "detail": "This field is missing."})
        elif lead is None or lead["deleted"]:
            errors.append({"code": "NotFound", "path": "id", "detail": "Entity not found."})
        change: dict[str, Any] = {"id": lead_id}
        if "name" in item:
            if not isinstance(item["name"], str):
                errors.append({"code": "InvalidType", "path": "name", "detail": "This value should be of type string."})
            else:
                change["name"] = item["name"]
        if "price" in item:
            p = item["price"]
            if isinstance(p, bool) or not isinstance(p, int) or p < 0:
                errors.append({"code": "InvalidType", "path": "price", "detail": "This value should be of type int."})
            else:
                change["price"] = p
        if "custom_fields_values" in item and item["custom_fields_values"] is not None:
            cf_errors, staged = self._validate_cfv(item["custom_fields_values"])
            errors.extend(cf_errors)
            change["cf"] = staged
        return errors, change

    def _apply_patches(self, items: list, request: Request) -> Response:
        with self._lock:
            all_errors, changes = [], []
            for i, item in enumerate(items):
                errors, change = self._validate_lead_patch(item)
                rid = str(item.get("request_id", i)) if isinstance(item, dict) else str(i)
                if errors:
                    all_errors.append({"request_id": rid, "errors": errors})
                changes.append((rid, change))
            if all_errors:
                raise _Problem(400, "Request validation failed", **{"validation-errors": all_errors})
            out = []
            for rid, change in changes:
                lead = self._leads[change["id"]]
                if "name" in change:
                    lead["name"] = change["name"]
                if "price" in change:
                    lead["price"] = change["price"]
                for fid, values in (change.get("cf") or {}).items():
                    if values is None:
                        lead["cf"].pop(fid, None)
                    else:
                        lead["cf"][fid] = values
                self._bump(lead)
                out.append({"id": lead["id"], "updated_at": lead["updated_at"], "request_id": rid,
                            "_links": {"self": {"href": f"{request.host_url}api/v4/leads/{lead['id']}"}}})
        return out

    def _h_leads_patch(self, request: Request) -> Response:
        items = request.get_json(silent=True)
        if not isinstance(items, list) or not items:
            raise _Problem(400, "Invalid request body: expected a non-empty JSON array")
        if len(items) > 250:
            raise _Problem(400, "Too many entities in one request: at most 250")
        out = self._apply_patches(items, request)
        return _hal({"_links": {"self": {"href": request.base_url}}, "_embedded": {"leads": out}})

    def _h_lead_patch_one(self, request: Request, lid: int) -> Response:
        item = request.get_json(silent=True)
        if not isinstance(item, dict):
            raise _Problem(400, "Invalid request body: expected a JSON object")
        out = self._apply_patches([{**item, "id": lid}], request)
        return _hal({k: v for k, v in out[0].items() if k != "request_id"})

    def _add_notes(self, items: Any, request: Request, entity_id: int | None = None) -> Response:
        if not isinstance(items, list) or not items:
            raise _Problem(400, "Invalid request body: expected a non-empty JSON array")
        if len(items) > 250:
            raise _Problem(400, "Too many entities in one request: at most 250")
        with self._lock:
            all_errors = []
            for i, item in enumerate(items):
                errors = []
                if not isinstance(item, dict):
                    all_errors.append({"request_id": str(i), "errors": [
                        {"code": "InvalidType", "path": "", "detail": "This value should be of type object."}]})
                    continue
                eid = entity_id if entity_id is not None else item.get("entity_id")
                lead = self._leads.get(eid) if isinstance(eid, int) else None
                if lead is None or lead["deleted"]:
                    errors.append({"code": "NotFound", "path": "entity_id", "detail": "Entity not found."})
                if item.get("note_type") not in ("common", "service_message"):
                    errors.append({"code": "NotSupportedChoice", "path": "note_type",
                                   "detail": "The value you selected is not a valid choice."})
                text = (item.get("params") or {}).get("text")
                if not isinstance(text, str) or not text:
                    errors.append({"code": "FieldMissing", "path": "params.text", "detail": "This field is missing."})
                if errors:
                    all_errors.append({"request_id": str(item.get("request_id", i)), "errors": errors})
            if all_errors:
                raise _Problem(400, "Request validation failed", **{"validation-errors": all_errors})
            out = []
            for i, item in enumerate(items):
                eid = entity_id if entity_id is not None else item["entity_id"]
                note = {"id": self._next_note_id, "entity_id": eid, "note_type": item["note_type"],
                        "params": {"text": item["params"]["text"]}, "created_at": int(time.time())}
                self._next_note_id += 1
                self._leads[eid]["notes"].append(note)
                out.append({"id": note["id"], "entity_id": eid, "request_id": str(item.get("request_id", i)),
                            "_links": {"self": {"href": f"{request.host_url}api/v4/leads/{eid}/notes/{note['id']}"}}})
        return _hal({"_links": {"self": {"href": request.base_url}}, "_embedded": {"notes": out}})

    def _h_notes_add(self, request: Request) -> Response:
        return self._add_notes(request.get_json(silent=True), request)

    def _h_lead_notes(self, request: Request, lid: int) -> Response:
        if request.method == "POST":
            return self._add_notes(request.get_json(silent=True), request, entity_id=lid)
        page, limit = self._page_args(request)
        with self._lock:
            lead = self._leads.get(lid)
            notes = [] if lead is None or lead["deleted"] else list(lead["notes"])
            chunk = notes[(page - 1) * limit: page * limit]
            if not chunk:
                return Response(status=204)
            return _hal({"_page": page, "_links": self._page_links(request, page, len(notes) > page * limit),
                         "_embedded": {"notes": [dict(n) for n in chunk]}})

    def _h_fields_list(self, request: Request) -> Response:
        page, limit = self._page_args(request)
        with self._lock:
            fields = sorted(self._fields.values(), key=lambda f: (f["sort"], f["id"]))
            chunk = fields[(page - 1) * limit: page * limit]
            if not chunk:
                return Response(status=204)
            return _hal({"_total_items": len(fields), "_page": page,
                         "_page_count": (len(fields) + limit - 1) // limit,
                         "_links": self._page_links(request, page, len(fields) > page * limit),
                         "_embedded": {"custom_fields": [self._api_field(f, request) for f in chunk]}})

    def _h_field_get(self, request: Request, fid: int) -> Response:
        with self._lock:
            field = self._fields.get(fid)
            if field is None:
                return Response(status=204)
            return _hal(self._api_field(field, request))

    def _patch_fields(self, items: list) -> list[dict]:
        with self._lock:
            all_errors, plans = [], []
            for i, item in enumerate(items):
                errors = []
                field = self._fields.get(item.get("id")) if isinstance(item, dict) else None
                if field is None:
                    all_errors.append({"request_id": str(i), "errors": [
                        {"code": "NotFound", "path": "id", "detail": "Entity not found."}]})
                    continue
                enums = item.get("enums")
                if enums is not None:
                    if field["type"] not in _ENUM_TYPES or not isinstance(enums, list):
                        errors.append({"code": "InvalidType", "path": "enums", "detail": "This field has no enums."})
                    else:
                        known = {e["id"] for e in field["enums"]}
                        seen = set()
                        for j, e in enumerate(enums):
                            if not isinstance(e, dict) or not isinstance(e.get("value"), str) or not e["value"]:
                                errors.append({"code": "FieldMissing", "path": f"enums.{j}.value",
                                               "detail": "This field is missing."})
                            elif "id" in e and e["id"] not in known:
                                errors.append({"code": "NotSupportedChoice", "path": f"enums.{j}.id",
                                               "detail": "The value you selected is not a valid choice."})
                            elif e["value"] in seen:
                                errors.append({"code": "NotUnique", "path": f"enums.{j}.value",
                                               "detail": "This value is already used."})
                            else:
                                seen.add(e["value"])
                if "name" in item and not isinstance(item["name"], str):
                    errors.append({"code": "InvalidType", "path": "name", "detail": "This value should be of type string."})
                if errors:
                    all_errors.append({"request_id": str(i), "errors": errors})
                plans.append((field, item))
            if all_errors:
                raise _Problem(400, "Request validation failed", **{"validation-errors": all_errors})
            for field, item in plans:
                if "name" in item:
                    field["name"] = item["name"]
                if "sort" in item and isinstance(item["sort"], int):
                    field["sort"] = item["sort"]
                if item.get("enums") is not None:
                    old = {e["id"]: e for e in field["enums"]}
                    new_enums = []
                    for j, e in enumerate(item["enums"]):
                        sort = e.get("sort") if isinstance(e.get("sort"), int) else (j + 1) * 10
                        if "id" in e:
                            kept = old[e["id"]]
                            kept.update(value=e["value"], sort=sort)
                            new_enums.append(kept)
                        else:
                            new_enums.append({"id": self._next_enum_id, "value": e["value"], "sort": sort})
                            self._next_enum_id += 1
                    field["enums"] = new_enums
            return [field for field, _ in plans]

    def _h_fields_patch(self, request: Request) -> Response:
        items = request.get_json(silent=True)
        if not isinstance(items, list) or not items:
            raise _Problem(400, "Invalid request body: expected a non-empty JSON array")
        fields = self._patch_fields(items)
        return _hal({"_embedded": {"custom_fields": [self._api_field(f, request) for f in fields]}})

    def _h_field_patch_one(self, request: Request, fid: int) -> Response:
        item = request.get_json(silent=True)
        if not isinstance(item, dict):
            raise _Problem(400, "Invalid request body: expected a JSON object")
        fields = self._patch_fields([{**item, "id": fid}])
        return _hal(self._api_field(fields[0], request))

    # ------------------------------------------------------------------ control API
    def _h_sb_leads(self, request: Request) -> Response:
        if request.method == "GET":
            with self._lock:
                return _json([self._human_view(l) for l in self._leads.values()])
        body = request.get_json(silent=True) or {}
        lid = self.create_lead(str(body.get("name") or ""), body.get("fields") or {},
                               price=body.get("price"))
        return _json({"id": lid}, 201)

    def _h_sb_lead(self, request: Request, lid: int) -> Response:
        if request.method == "GET":
            return _json(self.lead(lid))
        if request.method == "DELETE":
            self.delete_lead(lid)
            return Response(status=204)
        body = request.get_json(silent=True) or {}
        self.update_lead(lid, body.get("fields") or {}, name=body.get("name"), price=body.get("price"))
        return _json(self.lead(lid))

    def _h_sb_fields(self, request: Request) -> Response:
        return _json(self.fields())

    def _h_sb_faults(self, request: Request) -> Response:
        if request.method == "POST":
            self.add_fault_from_json(request.get_json(silent=True) or {})
        elif request.method == "DELETE":
            self.clear_faults()
        return _json(self.pending_faults())

    def _h_sb_requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.reset_requests()
        return _json(self.requests())

    def _h_sb_tokens(self, request: Request) -> Response:
        return _json(self.token_stats())

    def _h_sb_tokens_expire(self, request: Request) -> Response:
        self.expire_tokens()
        return _json(self.token_stats())

    def _h_sb_long_lived(self, request: Request) -> Response:
        return _json({"token": self.issue_long_lived_token()}, 201)

    def _h_sb_code(self, request: Request) -> Response:
        return _json(self.new_auth_code(), 201)

    def _h_sb_block(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.unblock()
        else:
            self.block(float((request.get_json(silent=True) or {}).get("seconds", self.block_seconds)))
        return _json({"blocked": time.monotonic() < self._blocked_until})
