"""Lead custom fields: configured NAMES -> ids and enum ids, and typed read/write of values.

amoCRM wire formats (API v4): ``custom_fields_values: [{field_id, values: [{value} | {enum_id}]}]``;
numeric values are strings; checkbox ``true/false``; a ``date`` field holds the unix time of
midnight in the account's time zone; select values are sent by ``enum_id``; ``values: null``
clears a field.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo

from amo1c_sync.domain.dates import amo_date_to_day, local_date_to_amo
from amo1c_sync.errors import ConfigError, ItemError

ENUM_TYPES = {"select", "multiselect", "radiobutton"}


def checked(value: Any) -> bool:
    """Whether a flag's value means "set": a checkbox's bool, or a text a person may type."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "да", "yes", "on")
    return bool(value)


class FieldMap:
    """Resolved lead fields. ``FieldMap(fields, tz)`` from ``AmoCRM.list_lead_fields()``."""

    def __init__(self, fields: Iterable[Mapping[str, Any]], tz: str | ZoneInfo = "Europe/Moscow"):
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        self._by_name: dict[str, dict] = {}
        self._by_id: dict[int, dict] = {}
        for f in fields:
            f = dict(f)
            self._by_id[int(f["id"])] = f
            self._by_name.setdefault(f["name"], f)

    # ---------------------------------------------------------------- resolution
    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def require(self, names: Iterable[str], *, setting: str = "[fields]") -> "FieldMap":
        """Fail at start-up with the list of existing names if any configured name is unknown."""
        missing = [n for n in names if n and n not in self._by_name]
        if missing:
            raise ConfigError(
                f"{setting}: amoCRM has no lead field named "
                + ", ".join(f"«{n}»" for n in missing)
                + ". Lead fields that exist: " + ", ".join(f"«{n}»" for n in self._by_name))
        return self

    def field(self, name: str) -> dict:
        try:
            return self._by_name[name]
        except KeyError:
            self.require([name])
            raise

    def id(self, name: str) -> int:
        return int(self.field(name)["id"])

    def type(self, name: str) -> str:
        return self.field(name)["type"]

    def enums(self, name: str) -> list[dict]:
        return list(self.field(name).get("enums") or [])

    def enum_id(self, name: str, value: str) -> int | None:
        for e in self.enums(name):
            if e["value"] == value:
                return int(e["id"])
        return None

    def enum_value(self, name: str, enum_id: int) -> str | None:
        for e in self.enums(name):
            if int(e["id"]) == int(enum_id):
                return e["value"]
        return None

    # ---------------------------------------------------------------- values
    def raw(self, lead: Mapping[str, Any], name: str) -> list[dict]:
        fid = self.id(name)
        for entry in lead.get("custom_fields_values") or []:
            if int(entry.get("field_id", 0)) == fid:
                return list(entry.get("values") or [])
        return []

    def get(self, lead: Mapping[str, Any], name: str) -> Any:
        """The typed value of a field on a lead, or None when it is empty.

        date -> ``datetime.date`` in the account tz; numeric -> ``Decimal``; checkbox -> bool
        (False when empty); select -> the option text; other types -> ``str``.
        """
        values = self.raw(lead, name)
        ftype = self.type(name)
        if not values:
            return False if ftype == "checkbox" else None
        v = values[0]
        if ftype in ENUM_TYPES:
            if v.get("enum_id") is not None:
                return self.enum_value(name, v["enum_id"]) or v.get("value")
            return v.get("value")
        value = v.get("value")
        if ftype in ("date", "birthday"):
            return ts_to_date(value, self.tz)
        if ftype == "date_time":
            return None if value is None else datetime.fromtimestamp(int(value), self.tz)
        if ftype == "numeric":
            try:
                return Decimal(str(value))
            except InvalidOperation:
                return None
        if ftype == "checkbox":
            return bool(value)
        return None if value is None else str(value)

    def cf(self, name: str, value: Any) -> dict:
        """One ``custom_fields_values`` entry that sets field ``name`` to ``value`` (None clears)."""
        field = self.field(name)
        fid = int(field["id"])
        ftype = field["type"]
        if value is None or (value == "" and ftype != "checkbox"):
            return {"field_id": fid, "values": None}
        if ftype in ENUM_TYPES:
            eid = value if isinstance(value, int) and not isinstance(value, bool) else self.enum_id(name, str(value))
            if eid is None:
                raise ItemError(f"«{name}» has no option «{value}»; options: "
                                + ", ".join(e["value"] for e in self.enums(name)),
                                code="NotSupportedChoice", origin="amocrm")
            return {"field_id": fid, "values": [{"enum_id": int(eid)}]}
        if ftype in ("date", "birthday"):
            return {"field_id": fid, "values": [{"value": date_to_ts(value, self.tz)}]}
        if ftype == "date_time":
            if not isinstance(value, datetime):
                raise TypeError("a date_time field takes a datetime")
            return {"field_id": fid, "values": [{"value": int(value.timestamp())}]}
        if ftype == "numeric":
            if isinstance(value, float):
                raise TypeError("money/numeric values must be Decimal or int, not float")
            return {"field_id": fid, "values": [{"value": format(Decimal(value), "f")}]}
        if ftype == "checkbox":
            return {"field_id": fid, "values": [{"value": bool(value)}]}
        return {"field_id": fid, "values": [{"value": str(value)}]}


def date_to_ts(d: date | datetime, tz: ZoneInfo) -> int:
    """Unix time of midnight of ``d`` in ``tz`` (how amoCRM stores a date field)."""
    if isinstance(d, datetime):
        d = d.astimezone(tz).date() if d.tzinfo else d.date()
    return local_date_to_amo(d, tz)


def ts_to_date(ts: Any, tz: ZoneInfo) -> date | None:
    """A date field's value -> the day (the domain's nearest-midnight rule), None when empty."""
    if ts is None or ts == "":
        return None
    return amo_date_to_day(ts, tz)
