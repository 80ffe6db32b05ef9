"""Contacts of the emulated account: their fields (``PHONE`` with its enum codes, «Клиент 1С»), the
leads they are linked to (one of them the main contact), and the API and control routes for them.

As amoCRM has them (the official PHP library ``amocrm/amocrm-api-php``: ``ContactModel::fromArray``
reads ``name``, ``first_name``, ``last_name``, ``custom_fields_values`` and, inside a lead's
``_embedded.contacts``, ``is_main``; ``MultitextCustomFieldValueModel`` carries ``value``,
``enum_id`` and ``enum_code``; ``examples/contacts_actions.php`` finds the phone field by
``field_code`` ``PHONE`` and sets ``enum_code`` ``WORKDD``; the developer docs, «Контакты» -> «Список
контактов», list ``GET /api/v4/contacts`` with ``page``, ``limit`` (at most 250), ``filter``, ``order``
and answer HAL JSON):

* ``GET /api/v4/contacts`` (``filter[id][]`` in every spelling the leads list takes, ``page``,
  ``limit``; 204 on an empty page), ``GET /api/v4/contacts/<id>`` (204 when unknown);
* ``PATCH /api/v4/contacts`` (array, atomic like leads) and ``PATCH /api/v4/contacts/<id>``: a field
  by ``field_id`` or ``field_code``; a multitext value by ``enum_id`` or ``enum_code`` (``WORK``
  when neither); a PATCH replaces all values of the fields it names and leaves the others;
* ``GET /api/v4/contacts/custom_fields`` and ``POST`` (an array of ``{name, type, enums?}``, all or
  none, as for leads: amoCRM's «Пользовательские поля» take the entity type in the path,
  ``/api/v4/{leads|contacts|companies|customers}/custom_fields``);
* ``with=contacts`` on leads: ``_embedded.contacts`` = ``[{"id", "is_main", "_links"}]``.

Control API: ``POST /_sandbox/contacts`` ``{"name", "phones": ["8 (911) …" | {"value", "enum"}],
"fields": {"<field name>": value}}`` -> 201 ``{"id"}``; ``GET`` / ``PATCH /_sandbox/contacts/<id>``;
a lead's ``"contact"`` (and ``"contacts"``: a list, the first the main one, or ``{"id": …}`` for an
existing contact) in ``POST``/``PATCH /_sandbox/leads``; ``GET /_sandbox/leads/<id>`` shows them.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from amo1c_sync.sandbox.amocrm_emulator import validation
from amo1c_sync.sandbox.amocrm_emulator.problems import Problem, hal
from amo1c_sync.sandbox.amocrm_emulator.state import LeadBook

# the enum codes of amoCRM's predefined PHONE and EMAIL fields
PHONE_ENUMS = ("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER")
EMAIL_ENUMS = ("WORK", "PRIV", "OTHER")
# name, type, code, enums
DEFAULT_CONTACT_FIELDS: tuple[tuple[str, str, str | None, tuple[str, ...]], ...] = (
    ("Телефон", "multitext", "PHONE", PHONE_ENUMS),
    ("Email", "multitext", "EMAIL", EMAIL_ENUMS),
    ("Клиент 1С", "text", None, ()),
)
# a new account has only amoCRM's predefined contact fields («Клиент 1С» is what `setup amocrm` adds)
PREDEFINED_CONTACT_FIELDS = DEFAULT_CONTACT_FIELDS[:2]


class ContactBook:
    """Contacts and their links to leads; shares the lead book's lock and field-id counter."""

    def __init__(self, book: LeadBook, fields: Iterable[tuple[str, str, str | None, Iterable[str]]]
                 = DEFAULT_CONTACT_FIELDS):
        self.book = book
        self.lock = book.lock
        self.fields_by_id: dict[int, dict] = {}
        self.contacts: dict[int, dict] = {}
        self.links: dict[int, list[int]] = {}  # lead id -> contact ids, the main one first
        self._next_id = 40000001
        for name, ftype, code, enums in fields:
            self.add_field(name, ftype, code, enums)

    # what validation.coerce needs of a book
    @property
    def tz(self):
        return self.book.tz

    def midnight(self, d):
        return self.book.midnight(d)

    # ------------------------------------------------------------------ fields
    def add_field(self, name: str, ftype: str, code: str | None = None, enums: Iterable[str] = ()) -> int:
        with self.lock:
            fid = self.book._next_field_id
            self.book._next_field_id += 1
            field = {"id": fid, "name": name, "type": ftype, "code": code,
                     "sort": 10 + len(self.fields_by_id) * 10, "enums": None}
            if ftype == "multitext" or ftype in validation.ENUM_TYPES:
                field["enums"] = [{"id": self.book.new_enum_id(), "value": v, "sort": (i + 1) * 2}
                                  for i, v in enumerate(enums)]
            self.fields_by_id[fid] = field
            return fid

    def create_fields(self, items: list) -> list[dict]:
        """``POST /api/v4/contacts/custom_fields``: all of them, or none when one is invalid."""
        with self.lock:
            errors = [{"request_id": str(i), "errors": e}
                      for i, e in ((i, validation.field_create(x)) for i, x in enumerate(items)) if e]
            if errors:
                raise validation.failed(errors)
            return [self.fields_by_id[self.add_field(x["name"].strip(), x["type"], None,
                                                     [e["value"] for e in x.get("enums") or []])]
                    for x in items]

    def field(self, *, fid: Any = None, code: Any = None, name: str | None = None) -> dict | None:
        for f in self.fields_by_id.values():
            if (fid is not None and f["id"] == fid) or (code is not None and f["code"] == code) \
                    or (name is not None and f["name"] == name):
                return f
        return None

    def phone_field(self) -> dict:
        """``PHONE``, which every account has (the book creates it)."""
        phone = self.field(code="PHONE")
        if phone is None:
            raise LookupError("the account has no PHONE contact field")
        return phone

    # ------------------------------------------------------------------ contacts as a person makes them
    def create(self, name: str = "", phones: Iterable[Any] = (), fields: dict | None = None) -> int:
        with self.lock:
            cid = self._next_id
            self._next_id += 1
            now = int(time.time())
            self.contacts[cid] = {"id": cid, "name": name, "created_at": now, "updated_at": now, "cf": {}}
            self.human_update(cid, {"phones": list(phones), "fields": fields or {}})
            return cid

    def human_update(self, cid: int, body: dict) -> None:
        contact = self.contact_or_404(cid)
        if body.get("name") is not None:
            contact["name"] = str(body["name"])
        if body.get("phones") is not None:
            phone = self.phone_field()
            values = [self._phone_value(phone, p) for p in body["phones"]]
            self._set(contact, phone["id"], values)
        for name, value in (body.get("fields") or {}).items():
            field = self.field(name=name)
            if field is None:
                raise Problem(400, f"no contact field named {name!r}; fields: "
                                   + ", ".join(f["name"] for f in self.fields_by_id.values()))
            self._set(contact, field["id"], [] if value in (None, "") else [{"value": str(value)}])
        contact["updated_at"] = max(int(time.time()), contact["updated_at"] + 1)

    @staticmethod
    def _phone_value(field: dict, phone: Any) -> dict:
        value, code = (phone.get("value"), phone.get("enum", "WORK")) if isinstance(phone, dict) else (phone, "WORK")
        enum = next((e for e in field["enums"] if e["value"] == code), None)
        if enum is None:
            raise Problem(400, f"phone kind {code!r}: use one of {', '.join(PHONE_ENUMS)}")
        return {"value": str(value), "enum_id": enum["id"], "enum_code": code}

    @staticmethod
    def _set(contact: dict, fid: int, values: list[dict]) -> None:
        if values:
            contact["cf"][fid] = values
        else:
            contact["cf"].pop(fid, None)

    def contact_or_404(self, cid: int) -> dict:
        contact = self.contacts.get(cid)
        if contact is None:
            raise Problem(404, f"contact {cid} does not exist")
        return contact

    # ------------------------------------------------------------------ links to leads
    def attach(self, lead_id: int, body: dict) -> None:
        """A lead's ``"contact"`` / ``"contacts"`` from the control API: replaces its contacts."""
        given = body.get("contacts")
        if given is None and body.get("contact") is not None:
            given = [body["contact"]]
        if given is None:
            return
        if not isinstance(given, list) or not all(isinstance(c, dict) for c in given):
            raise Problem(400, 'contacts: a list of {"name", "phones"} or {"id"}')
        with self.lock:
            ids = [int(c["id"]) if "id" in c else
                   self.create(str(c.get("name") or ""), c.get("phones") or (), c.get("fields"))
                   for c in given]
            for cid in ids:
                self.contact_or_404(cid)
            self.links[lead_id] = ids

    def embedded(self, lead_id: int, host_url: str) -> list[dict]:
        return [{"id": cid, "is_main": i == 0,
                 "_links": {"self": {"href": f"{host_url}api/v4/contacts/{cid}"}}}
                for i, cid in enumerate(self.links.get(lead_id, []))]

    def lead_view(self, lead_id: int) -> dict:
        with self.lock:
            views = [dict(self.human_view(self.contacts[cid]), is_main=i == 0)
                     for i, cid in enumerate(self.links.get(lead_id, []))]
            return {"contact": views[0] if views else None, "contacts": views}

    def human_view(self, contact: dict) -> dict:
        phone = self.phone_field()
        fields = {}
        for fid, values in contact["cf"].items():
            field = self.fields_by_id[fid]
            if field is not phone:
                fields[field["name"]] = values[0]["value"] if len(values) == 1 else [v["value"] for v in values]
        return {"id": contact["id"], "name": contact["name"], "updated_at": contact["updated_at"],
                "phones": [v["value"] for v in contact["cf"].get(phone["id"], [])],
                "phone_kinds": [v["enum_code"] for v in contact["cf"].get(phone["id"], [])],
                "fields": fields}

    # ------------------------------------------------------------------ the API's shapes and writes
    def api_contact(self, contact: dict, host_url: str) -> dict:
        cfv = [{"field_id": fid, "field_name": self.fields_by_id[fid]["name"],
                "field_code": self.fields_by_id[fid]["code"], "field_type": self.fields_by_id[fid]["type"],
                "values": [dict(v) for v in values]} for fid, values in contact["cf"].items() if values]
        first, _, last = contact["name"].partition(" ")
        return {"id": contact["id"], "name": contact["name"], "first_name": first, "last_name": last,
                "responsible_user_id": 8000001, "group_id": 0, "created_by": 8000001, "updated_by": 0,
                "created_at": contact["created_at"], "updated_at": contact["updated_at"],
                "closest_task_at": None, "is_deleted": False, "is_unsorted": False,
                "custom_fields_values": cfv or None, "account_id": self.book.account_id,
                "_links": {"self": {"href": f"{host_url}api/v4/contacts/{contact['id']}"}},
                "_embedded": {"tags": [], "companies": []}}

    def apply_patches(self, items: list) -> list[tuple[str, dict]]:
        """Atomic, like leads: any invalid item rejects the batch (400, errors per ``request_id``)."""
        with self.lock:
            changes = validation.stage_all(items, self._patch_item)
            out = []
            for rid, (cid, name, staged) in changes:
                contact = self.contacts[cid]
                if name is not None:
                    contact["name"] = name
                for fid, values in staged.items():
                    self._set(contact, fid, values or [])
                contact["updated_at"] = max(int(time.time()), contact["updated_at"] + 1)
                out.append((rid, contact))
            return out

    def _patch_item(self, item: Any) -> tuple[list, tuple]:
        if not isinstance(item, dict):
            return [validation._wrong_type("", "object")], ()
        errors: list[dict] = []
        cid = item.get("id")
        if cid is None:
            errors.append(validation._err("FieldMissing", "id", "This field is missing."))
        elif not isinstance(cid, int) or cid not in self.contacts:
            errors.append(validation._err("NotFound", "id", "Entity not found."))
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            errors.append(validation._wrong_type("name", "string"))
        cf_errors, staged = self._custom_fields(item.get("custom_fields_values") or [])
        return errors + cf_errors, (cid, name, staged)

    def _custom_fields(self, cfv: Any) -> tuple[list, dict]:
        if not isinstance(cfv, list):
            return [validation._wrong_type("custom_fields_values", "array")], {}
        errors: list[dict] = []
        staged: dict[int, list | None] = {}
        for i, entry in enumerate(cfv):
            p = f"custom_fields_values.{i}"
            field = None
            if isinstance(entry, dict):
                field = self.field(fid=entry["field_id"]) if "field_id" in entry else \
                    self.field(code=entry.get("field_code")) if entry.get("field_code") else None
            if field is None:
                errors.append(validation._not_a_choice(f"{p}.field_id"))
                continue
            values = entry.get("values")
            if not values:
                staged[field["id"]] = None
                continue
            if not isinstance(values, list):
                errors.append(validation._wrong_type(f"{p}.values", "array"))
                continue
            ok_values: list[dict] = []
            for j, v in enumerate(values if field["type"] == "multitext" else values[:1]):
                ok, res = self._value(field, v, f"{p}.values.{j}")
                (ok_values if ok else errors).append(res)
            staged[field["id"]] = ok_values
        return errors, staged

    def _value(self, field: dict, v: Any, vp: str) -> tuple[bool, Any]:
        if not isinstance(v, dict):
            return False, validation._wrong_type(vp, "object")
        if field["type"] != "multitext":
            return validation.coerce(self, field, v, vp)
        if not isinstance(v.get("value"), str) or not v["value"]:
            return False, validation._wrong_type(f"{vp}.value", "string")
        if "enum_id" in v:
            enum = next((e for e in field["enums"] if e["id"] == v["enum_id"]), None)
        else:
            enum = next((e for e in field["enums"] if e["value"] == v.get("enum_code", "WORK")), None)
        if enum is None:
            return False, validation._not_a_choice(f"{vp}.enum_code")
        return True, {"value": v["value"], "enum_id": enum["id"], "enum_code": enum["value"]}


class ContactRoutes:
    """The API routes for contacts, added to the API's map (rate limit and auth come first)."""

    def __init__(self, contacts: ContactBook, *, page_args: Callable, page_links: Callable,
                 array_body: Callable, object_body: Callable, id_filter: Callable):
        self.c = contacts
        self._page_args, self._page_links = page_args, page_links
        self._array_body, self._object_body, self._id_filter = array_body, object_body, id_filter

    def rules(self) -> list[Rule]:
        return [
            Rule("/api/v4/contacts", endpoint=self.list_, methods=["GET"]),
            Rule("/api/v4/contacts", endpoint=self.patch, methods=["PATCH"]),
            Rule("/api/v4/contacts/custom_fields", endpoint=self.fields, methods=["GET"]),
            Rule("/api/v4/contacts/custom_fields", endpoint=self.create_fields, methods=["POST"]),
            Rule("/api/v4/contacts/<int:cid>", endpoint=self.get_one, methods=["GET"]),
            Rule("/api/v4/contacts/<int:cid>", endpoint=self.patch_one, methods=["PATCH"]),
        ]

    def list_(self, request: Request) -> Response:
        page, limit = self._page_args(request)
        keep = self._id_filter(request)
        with self.c.lock:
            found = sorted((c for c in self.c.contacts.values() if keep(c)), key=lambda c: c["id"])
            chunk = found[(page - 1) * limit: page * limit]
            if not chunk:
                return Response(status=204)
            return hal({"_page": page, "_links": self._page_links(request, page, len(found) > page * limit),
                        "_embedded": {"contacts": [self.c.api_contact(c, request.host_url) for c in chunk]}})

    def get_one(self, request: Request, cid: int) -> Response:
        with self.c.lock:
            contact = self.c.contacts.get(cid)
            if contact is None:
                return Response(status=204)
            return hal(self.c.api_contact(contact, request.host_url))

    def _patched(self, request: Request, items: list) -> list[dict]:
        return [{"id": c["id"], "name": c["name"], "updated_at": c["updated_at"], "request_id": rid,
                 "_links": {"self": {"href": f"{request.host_url}api/v4/contacts/{c['id']}"}}}
                for rid, c in self.c.apply_patches(items)]

    def patch(self, request: Request) -> Response:
        out = self._patched(request, self._array_body(request))
        return hal({"_links": {"self": {"href": request.base_url}}, "_embedded": {"contacts": out}})

    def patch_one(self, request: Request, cid: int) -> Response:
        out = self._patched(request, [{**self._object_body(request), "id": cid}])
        return hal({k: v for k, v in out[0].items() if k != "request_id"})

    def _shaped(self, f: dict, request: Request) -> dict:
        return {"id": f["id"], "name": f["name"], "type": f["type"], "code": f["code"],
                "sort": f["sort"], "account_id": self.c.book.account_id, "is_api_only": False,
                "enums": [dict(e) for e in f["enums"]] if f["enums"] is not None else None,
                "is_predefined": f["code"] is not None, "is_deletable": f["code"] is None,
                "entity_type": "contacts", "group_id": None, "required_statuses": [],
                "_links": {"self": {"href": f"{request.host_url}api/v4/contacts/custom_fields/{f['id']}"}}}

    def create_fields(self, request: Request) -> Response:
        created = self.c.create_fields(self._array_body(request))
        with self.c.lock:
            shaped = [self._shaped(f, request) for f in created]
        return hal({"_total_items": len(shaped), "_embedded": {"custom_fields": shaped}})

    def fields(self, request: Request) -> Response:
        with self.c.lock:
            fields = sorted(self.c.fields_by_id.values(), key=lambda f: (f["sort"], f["id"]))
            shaped = [self._shaped(f, request) for f in fields]
        return hal({"_total_items": len(shaped), "_page": 1, "_page_count": 1,
                    "_links": {"self": {"href": request.base_url}}, "_embedded": {"custom_fields": shaped}})
