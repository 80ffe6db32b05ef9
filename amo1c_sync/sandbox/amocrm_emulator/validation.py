"""amoCRM's request validation: the ``validation-errors`` it answers, per item and path."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, TypeVar

from amo1c_sync.sandbox.amocrm_emulator.problems import Problem, validation_failed

ENUM_TYPES = {"select", "multiselect", "radiobutton"}
# lead field types amoCRM creates through the API (its documented list of field types)
FIELD_TYPES = {"text", "numeric", "checkbox", "select", "multiselect", "date", "url", "textarea",
               "radiobutton", "streetaddress", "birthday", "date_time", "price", "category",
               "legal_entity", "tracking_data", "monetary", "file", "smart_address"}


def failed(errors: list[dict]) -> Problem:
    return validation_failed(errors)


C = TypeVar("C")  # what one item of a batch changes


def stage_all(items: list, check: Callable[[Any], tuple[list, C]]) -> list[tuple[str, C]]:
    """Check every item of a batch before any is applied, since amoCRM takes a batch PATCH whole
    or not at all: ``[(request_id, change)]``, or the 400 naming every bad item."""
    all_errors, changes = [], []
    for i, item in enumerate(items):
        errors, change = check(item)
        rid = str(item.get("request_id", i)) if isinstance(item, dict) else str(i)
        if errors:
            all_errors.append({"request_id": rid, "errors": errors})
        changes.append((rid, change))
    if all_errors:
        raise failed(all_errors)
    return changes


def _err(code: str, path: str, detail: str) -> dict:
    return {"code": code, "path": path, "detail": detail}


def _not_a_choice(path: str) -> dict:
    return _err("NotSupportedChoice", path, "The value you selected is not a valid choice.")


def _wrong_type(path: str, what: str) -> dict:
    return _err("InvalidType", path, f"This value should be of type {what}.")


def lead_patch(book, item: Any) -> tuple[list, dict]:
    """(errors, the change to apply) for one item of ``PATCH /api/v4/leads``."""
    if not isinstance(item, dict):
        return [_wrong_type("", "object")], {}
    errors: list[dict] = []
    lead_id = item.get("id")
    if lead_id is None:
        errors.append(_err("FieldMissing", "id", "This field is missing."))
    elif book.live_lead(lead_id) is None:
        errors.append(_err("NotFound", "id", "Entity not found."))
    change: dict[str, Any] = {"id": lead_id}
    if "name" in item:
        if not isinstance(item["name"], str):
            errors.append(_wrong_type("name", "string"))
        else:
            change["name"] = item["name"]
    if "price" in item:
        p = item["price"]
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            errors.append(_wrong_type("price", "int"))
        else:
            change["price"] = p
    if "custom_fields_values" in item and item["custom_fields_values"] is not None:
        cf_errors, staged = custom_fields(book, item["custom_fields_values"])
        errors.extend(cf_errors)
        change["cf"] = staged
    if "pipeline_id" in item or "status_id" in item:
        errors.extend(_stage(book, book.live_lead(lead_id), item, change))
    return errors, change


def _stage(book, lead: dict | None, item: dict, change: dict) -> list[dict]:
    """``pipeline_id``/``status_id`` of a lead PATCH: a stage of that pipeline (the lead's own when
    only ``status_id`` is given; the pipeline's first ordinary stage when only ``pipeline_id`` is)."""
    pid, sid = item.get("pipeline_id"), item.get("status_id")
    for key, v in (("pipeline_id", pid), ("status_id", sid)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            return [_wrong_type(key, "int")]
    if lead is None:
        return []
    pipelines = book.pipelines
    pid = lead["pipeline_id"] if pid is None else pid
    if pid not in pipelines.pipelines:
        return [_not_a_choice("pipeline_id")]
    if sid is None:
        sid = next(s["id"] for s in pipelines.pipelines[pid]["statuses"] if s["type"] == 0)
    if not pipelines.has(pid, sid):
        return [_not_a_choice("status_id")]
    change.update(pipeline_id=pid, status_id=sid)
    return []


def custom_fields(book, cfv: Any, prefix: str = "custom_fields_values") -> tuple[list, dict]:
    """(errors, {field_id: stored values or None}) for a ``custom_fields_values`` list."""
    errors: list[dict] = []
    staged: dict[int, list | None] = {}
    if not isinstance(cfv, list):
        return [_wrong_type(prefix, "array")], {}
    for i, entry in enumerate(cfv):
        p = f"{prefix}.{i}"
        if not isinstance(entry, dict):
            errors.append(_wrong_type(p, "object"))
            continue
        fid = entry.get("field_id")
        field = book.fields_by_id.get(fid) if isinstance(fid, int) else None
        if field is None:
            errors.append(_not_a_choice(f"{p}.field_id"))
            continue
        values = entry.get("values")
        if values is None or values == []:
            staged[field["id"]] = None
            continue
        if not isinstance(values, list):
            errors.append(_wrong_type(f"{p}.values", "array"))
            continue
        stored: list[Any] = []
        for j, v in enumerate(values if field["type"] == "multiselect" else values[:1]):
            vp = f"{p}.values.{j}"
            if not isinstance(v, dict):
                errors.append(_wrong_type(vp, "object"))
                continue
            ok, res = coerce(book, field, v, vp)
            (stored if ok else errors).append(res)
        staged[field["id"]] = stored
    return errors, staged


def coerce(book, field: dict, v: dict, vp: str) -> tuple[bool, Any]:
    """(True, the stored value) or (False, the error) for one value of a field."""
    t = field["type"]
    value = v.get("value")
    if t in ENUM_TYPES:
        if "enum_id" in v:
            enum = next((e for e in field["enums"] if e["id"] == v["enum_id"]), None)
            path = f"{vp}.enum_id"
        else:
            enum = next((e for e in field["enums"] if e["value"] == value), None)
            path = f"{vp}.value"
        if enum is None:
            return False, _not_a_choice(path)
        return True, {"value": enum["value"], "enum_id": enum["id"]}
    if t == "checkbox":
        if not isinstance(value, bool):
            return False, _wrong_type(f"{vp}.value", "bool")
        return True, {"value": value}
    if t == "numeric":
        return _numeric(value, vp)
    if t in ("date", "date_time", "birthday"):
        return _date(book, t, value, vp)
    # text, textarea, url, ...
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return False, _wrong_type(f"{vp}.value", "string")
    return True, {"value": str(value)}


def _numeric(value: Any, vp: str) -> tuple[bool, Any]:
    bad = _wrong_type(f"{vp}.value", "numeric")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return False, bad
    try:
        num = Decimal(str(value))
        if not num.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        return False, bad
    return True, {"value": format(num, "f")}


def _date(book, t: str, value: Any, vp: str) -> tuple[bool, Any]:
    ts = None
    if isinstance(value, int) and not isinstance(value, bool):
        ts = value
    elif isinstance(value, str):
        try:
            ts = int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()) \
                if "T" in value or ":" in value else book.midnight(date.fromisoformat(value))
        except ValueError:
            ts = None
    if ts is None:
        return False, _err("InvalidType", f"{vp}.value", "This value should be a unix timestamp or a date.")
    if t != "date_time":
        ts = book.midnight(datetime.fromtimestamp(ts, book.tz).date())
    return True, {"value": ts}


def note(book, i: int, item: Any, entity_id: int | None) -> dict | None:
    """The ``validation-errors`` entry for one note, or None when it is valid."""
    if not isinstance(item, dict):
        return {"request_id": str(i), "errors": [_wrong_type("", "object")]}
    errors = []
    eid = entity_id if entity_id is not None else item.get("entity_id")
    if book.live_lead(eid) is None:
        errors.append(_err("NotFound", "entity_id", "Entity not found."))
    if item.get("note_type") not in ("common", "service_message"):
        errors.append(_not_a_choice("note_type"))
    text = (item.get("params") or {}).get("text")
    if not isinstance(text, str) or not text:
        errors.append(_err("FieldMissing", "params.text", "This field is missing."))
    return {"request_id": str(item.get("request_id", i)), "errors": errors} if errors else None


def field_patch(field: dict | None, item: Any) -> list[dict]:
    """Errors of one item of ``PATCH /api/v4/leads/custom_fields``."""
    if field is None:
        return [_err("NotFound", "id", "Entity not found.")]
    errors = []
    enums = item.get("enums")
    if enums is not None:
        if field["type"] not in ENUM_TYPES or not isinstance(enums, list):
            errors.append(_err("InvalidType", "enums", "This field has no enums."))
        else:
            errors.extend(_enum_errors(field, enums))
    if "name" in item and not isinstance(item["name"], str):
        errors.append(_wrong_type("name", "string"))
    return errors


def field_create(item: Any) -> list[dict]:
    """Errors of one item of ``POST /api/v4/leads/custom_fields``."""
    if not isinstance(item, dict):
        return [_wrong_type("", "object")]
    errors = []
    if not isinstance(item.get("name"), str) or not item["name"].strip():
        errors.append(_err("NotBlank", "name", "This value should not be blank."))
    if item.get("type") not in FIELD_TYPES:
        errors.append(_not_a_choice("type"))
    enums = item.get("enums")
    if enums is not None and item.get("type") not in ENUM_TYPES:
        errors.append(_err("InvalidType", "enums", "This field has no enums."))
    elif enums is not None:
        errors.extend(_enum_errors({"enums": []}, enums if isinstance(enums, list) else [None]))
    return errors


def _enum_errors(field: dict, enums: list) -> list[dict]:
    known = {e["id"] for e in field["enums"]}
    seen, errors = set(), []
    for j, e in enumerate(enums):
        if not isinstance(e, dict) or not isinstance(e.get("value"), str) or not e["value"]:
            errors.append(_err("FieldMissing", f"enums.{j}.value", "This field is missing."))
        elif "id" in e and e["id"] not in known:
            errors.append(_not_a_choice(f"enums.{j}.id"))
        elif e["value"] in seen:
            errors.append(_err("NotUnique", f"enums.{j}.value", "This value is already used."))
        else:
            seen.add(e["value"])
    return errors
