"""The account's data: lead fields (with select options), leads, notes.

``updated_at`` is the wall-clock second of a lead's last change (``clock``, injectable), and
every lead written by one request shares it: ties are normal, as in amoCRM, where a batch PATCH
stamps all its leads with one second and busy accounts have many leads on the same second (the
API gives ``updated_at`` as an int unix timestamp, whole seconds: the leads reference,
https://www.amocrm.ru/developers/content/crm_platform/leads-api). Adding a note does NOT bump it.
Date fields are stored as the unix time of midnight in the account's time zone.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable
from zoneinfo import ZoneInfo

from werkzeug.exceptions import NotFound

from amo1c_sync.sandbox.amocrm_emulator.events import EventLog
from amo1c_sync.sandbox.amocrm_emulator.pipelines import Pipelines
from amo1c_sync.sandbox.amocrm_emulator.problems import Problem
from amo1c_sync.sandbox.amocrm_emulator import validation

DEFAULT_DOCTORS = ("Ефимова Е.В.", "Петрова А.С.", "Ишаева М.И.")
ENUM_TYPES = validation.ENUM_TYPES


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
    ("Отменить запись в 1С", "checkbox", ()),
)


class LeadBook:
    """Fields, leads and notes of one account, behind one lock."""

    def __init__(self, *, timezone: str, account_id: int,
                 lead_fields: Iterable[tuple[str, str, Iterable[str]]] = DEFAULT_LEAD_FIELDS):
        self.lock = threading.RLock()
        self.tz = ZoneInfo(timezone)
        self.timezone_name = timezone
        self.account_id = account_id
        self.fields_by_id: dict[int, dict] = {}
        self.leads: dict[int, dict] = {}
        self._next_field_id = 1000001
        self._next_enum_id = 5000001
        self._next_lead_id = 30000001
        self._next_note_id = 70000001
        self.clock: Callable[[], float] = time.time
        self.events = EventLog(account_id, lambda: self.clock())
        self.pipelines = Pipelines(account_id)
        for name, ftype, options in lead_fields:
            self.add_field(name, ftype, options)

    # ------------------------------------------------------------------ fields
    def add_field(self, name: str, ftype: str, options: Iterable[str] = ()) -> int:
        with self.lock:
            fid = self._next_field_id
            self._next_field_id += 1
            field = {"id": fid, "name": name, "type": ftype, "sort": 500 + len(self.fields_by_id) * 10,
                     "enums": None}
            if ftype in ENUM_TYPES:
                field["enums"] = []
                for opt in options:
                    self.add_enum(field, opt)
            self.fields_by_id[fid] = field
            return fid

    def add_enum(self, field: dict, value: str, sort: int | None = None) -> dict:
        enum = {"id": self._next_enum_id, "value": str(value),
                "sort": sort if sort is not None else (len(field["enums"]) + 1) * 10}
        self._next_enum_id += 1
        field["enums"].append(enum)
        return enum

    def new_enum_id(self) -> int:
        self._next_enum_id += 1
        return self._next_enum_id - 1

    def field_by_name(self, name: str) -> dict:
        with self.lock:
            for f in self.fields_by_id.values():
                if f["name"] == name:
                    return f
        raise Problem(400, f"no lead field named {name!r}; fields: "
                           + ", ".join(f["name"] for f in self.fields_by_id.values()))

    def fields(self) -> list[dict]:
        with self.lock:
            return [json.loads(json.dumps(f)) for f in self.fields_by_id.values()]

    # ------------------------------------------------------------------ leads (a person's view)
    def create_lead(self, name: str = "", fields: dict | None = None, price: int | None = None,
                    status: str | None = None) -> int:
        with self.lock:
            lid = self._next_lead_id
            self._next_lead_id += 1
            now = int(self.clock())
            pipeline_id, status_id = self.pipelines.default_stage()
            self.leads[lid] = {"id": lid, "name": name or f"Сделка #{lid}", "price": 0,
                               "created_at": now, "updated_at": now, "deleted": False,
                               "pipeline_id": pipeline_id, "status_id": status_id,
                               "cf": {}, "notes": []}
            self.events.add("lead_added", lid, at=now)
            self.human_update(lid, {"fields": fields or {}, "price": price, "status": status})
            return lid

    def update_lead(self, lead_id: int, fields: dict | None = None, *, name: str | None = None,
                    price: int | None = None, status: str | None = None) -> None:
        with self.lock:
            self.lead_or_404(lead_id)
            self.human_update(lead_id, {"fields": fields or {}, "name": name, "price": price,
                                        "status": status})

    def delete_lead(self, lead_id: int) -> None:
        with self.lock:
            self.lead_or_404(lead_id)["deleted"] = True

    def lead(self, lead_id: int) -> dict:
        with self.lock:
            return self.human_view(self.lead_or_404(lead_id))

    def live_lead(self, lead_id: Any) -> dict | None:
        """The lead the API knows (not deleted), or None."""
        lead = self.leads.get(lead_id) if isinstance(lead_id, int) and not isinstance(lead_id, bool) else None
        return None if lead is None or lead["deleted"] else lead

    def lead_or_404(self, lead_id: int) -> dict:
        lead = self.leads.get(lead_id)
        if lead is None:
            raise NotFound(f"lead {lead_id} does not exist")
        return lead

    def bump(self, lead: dict, second: int | None = None) -> None:
        lead["updated_at"] = int(self.clock()) if second is None else second

    def midnight(self, d: date) -> int:
        return int(datetime(d.year, d.month, d.day, tzinfo=self.tz).timestamp())

    def _parse_human_date(self, value: Any) -> int:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.midnight(datetime.fromtimestamp(value, self.tz).date())
        s = str(value).strip()
        for fmt in ("%d.%m.%Y", "%Y-%m-%d", "%d.%m.%y"):
            try:
                return self.midnight(datetime.strptime(s, fmt).date())
            except ValueError:
                pass
        raise Problem(400, f"not a date: {value!r}; type it as DD.MM.YYYY")

    def human_update(self, lead_id: int, body: dict) -> None:
        """What a person types on the card: option texts, ``DD.MM.YYYY``, ``true``, ``"1500.50"``."""
        lead = self.leads[lead_id]
        if body.get("name") is not None:
            lead["name"] = str(body["name"])
        if body.get("price") is not None:
            lead["price"] = int(Decimal(str(body["price"])))
        if body.get("status"):
            lead["pipeline_id"], lead["status_id"] = self.pipelines.by_name(str(body["status"]))
        for name, value in (body.get("fields") or {}).items():
            field = self.field_by_name(name)
            before = lead["cf"].get(field["id"])
            if value is None or value == "":
                lead["cf"].pop(field["id"], None)
            else:
                lead["cf"][field["id"]] = [self._typed(field, value)]
            self.events.field_changed(field, lead_id, before, lead["cf"].get(field["id"]))
        self.bump(lead)

    def _typed(self, field: dict, value: Any) -> dict:
        t = field["type"]
        if t == "date":
            return {"value": self._parse_human_date(value)}
        if t in ENUM_TYPES:
            text = str(value)
            enum = next((e for e in field["enums"] if e["value"] == text), None)
            if enum is None:
                enum = self.add_enum(field, text)
            return {"value": enum["value"], "enum_id": enum["id"]}
        if t == "checkbox":
            flag = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "да", "yes", "on")
            return {"value": flag}
        if t == "numeric":
            try:
                num = Decimal(str(value).replace(",", ".").replace(" ", ""))
            except InvalidOperation:
                raise Problem(400, f"not a number: {value!r}") from None
            return {"value": format(num, "f")}
        return {"value": str(value)}

    def human_view(self, lead: dict) -> dict:
        fields = {}
        for fid, values in lead["cf"].items():
            field = self.fields_by_id.get(fid)
            if field is None or not values:
                continue
            v = values[0]["value"]
            if field["type"] == "date":
                v = datetime.fromtimestamp(v, self.tz).strftime("%d.%m.%Y")
            elif field["type"] in ENUM_TYPES:
                enum = next((e for e in field["enums"] if e["id"] == values[0].get("enum_id")), None)
                v = enum["value"] if enum else v
            fields[field["name"]] = v
        pipeline, status = self.pipelines.names(lead["pipeline_id"], lead["status_id"])
        return {"id": lead["id"], "name": lead["name"], "price": lead["price"],
                "updated_at": lead["updated_at"], "deleted": lead["deleted"], "fields": fields,
                "pipeline": pipeline, "status": status,
                "pipeline_id": lead["pipeline_id"], "status_id": lead["status_id"],
                "notes": [n["params"]["text"] for n in lead["notes"]]}

    def human_list(self) -> list[dict]:
        with self.lock:
            return [self.human_view(lead) for lead in self.leads.values()]

    # ------------------------------------------------------------------ writes through the API
    def apply_patches(self, items: list) -> list[tuple[str, dict]]:
        """Atomic: any invalid item rejects the whole batch (400, errors per ``request_id``)."""
        with self.lock:
            changes = validation.stage_all(items, lambda item: validation.lead_patch(self, item))
            out, second = [], int(self.clock())  # one request, one updated_at for all its leads
            for rid, change in changes:
                lead = self.leads[change["id"]]
                if "name" in change:
                    lead["name"] = change["name"]
                if "price" in change:
                    lead["price"] = change["price"]
                if "status_id" in change:
                    lead["pipeline_id"], lead["status_id"] = change["pipeline_id"], change["status_id"]
                for fid, values in (change.get("cf") or {}).items():
                    before = lead["cf"].get(fid)
                    if values is None:
                        lead["cf"].pop(fid, None)
                    else:
                        lead["cf"][fid] = values
                    self.events.field_changed(self.fields_by_id[fid], lead["id"], before, values, at=second)
                self.bump(lead, second)
                out.append((rid, lead))
            return out

    def create_api_leads(self, items: list) -> list[tuple[str, int]]:
        with self.lock:
            out = []
            for i, item in enumerate(items):
                staged: dict[int, Any] = {}
                if item.get("custom_fields_values"):
                    errors, staged = validation.custom_fields(self, item["custom_fields_values"])
                    if errors:
                        raise validation.failed([{"request_id": str(i), "errors": errors}])
                lid = self.create_lead(str(item.get("name") or ""), price=item.get("price"))
                self.leads[lid]["cf"].update(staged)
                for fid, values in staged.items():
                    self.events.field_changed(self.fields_by_id[fid], lid, None, values)
                out.append((str(i), lid))
            return out

    def add_notes(self, items: list, entity_id: int | None = None) -> list[tuple[str, dict]]:
        with self.lock:
            all_errors = [e for i, item in enumerate(items)
                          if (e := validation.note(self, i, item, entity_id)) is not None]
            if all_errors:
                raise validation.failed(all_errors)
            out = []
            for i, item in enumerate(items):
                eid = entity_id if entity_id is not None else item["entity_id"]
                note = {"id": self._next_note_id, "entity_id": eid, "note_type": item["note_type"],
                        "params": {"text": item["params"]["text"]}, "created_at": int(self.clock())}
                self._next_note_id += 1
                self.leads[eid]["notes"].append(note)
                out.append((str(item.get("request_id", i)), note))
            return out

    def create_fields(self, items: list) -> list[dict]:
        """``POST /api/v4/leads/custom_fields``: all of them, or none when one is invalid."""
        with self.lock:
            all_errors = [{"request_id": str(i), "errors": errs}
                          for i, errs in ((i, validation.field_create(x)) for i, x in enumerate(items)) if errs]
            if all_errors:
                raise validation.failed(all_errors)
            created = []
            for item in items:
                enums = sorted(item.get("enums") or [], key=lambda e: e.get("sort", 0))
                fid = self.add_field(item["name"].strip(), item["type"], [e["value"] for e in enums])
                if isinstance(item.get("sort"), int):
                    self.fields_by_id[fid]["sort"] = item["sort"]
                created.append(self.fields_by_id[fid])
            return created

    def patch_fields(self, items: list) -> list[dict]:
        with self.lock:
            all_errors, plans = [], []
            for i, item in enumerate(items):
                fid = item.get("id") if isinstance(item, dict) else None
                field = self.fields_by_id.get(fid) if isinstance(fid, int) else None
                errors = validation.field_patch(field, item)
                if errors:
                    all_errors.append({"request_id": str(i), "errors": errors})
                if field is not None:
                    plans.append((field, item))
            if all_errors:
                raise validation.failed(all_errors)
            for field, item in plans:
                self._apply_field_patch(field, item)
            return [field for field, _ in plans]

    def _apply_field_patch(self, field: dict, item: dict) -> None:
        if "name" in item:
            field["name"] = item["name"]
        if "sort" in item and isinstance(item["sort"], int):
            field["sort"] = item["sort"]
        if item.get("enums") is None:
            return
        old = {e["id"]: e for e in field["enums"]}
        new_enums = []
        for j, e in enumerate(item["enums"]):
            sort = e.get("sort") if isinstance(e.get("sort"), int) else (j + 1) * 10
            if "id" in e:
                kept = old[e["id"]]
                kept.update(value=e["value"], sort=sort)
                new_enums.append(kept)
            else:
                new_enums.append({"id": self.new_enum_id(), "value": e["value"], "sort": sort})
        field["enums"] = new_enums
