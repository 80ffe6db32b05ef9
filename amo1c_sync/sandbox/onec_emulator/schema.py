"""The configuration's objects as the emulated base has them: catalogs, documents, their
properties and tabular sections, named by :class:`amo1c_sync.onec.names.OneCNames` (so a renamed
base can be emulated too)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from amo1c_sync.onec.names import OneCNames

EMPTY_REF = "00000000-0000-0000-0000-000000000000"
EMPTY_DATE = "0001-01-01T00:00:00"

class EntityType:
    def __init__(self, name: str, kind: str, fields: dict[str, str],
                 tabular: dict[str, dict[str, str]] | None = None, number_width: int = 11):
        self.name, self.kind = name, kind
        base = {"Ref_Key": "guid", "DataVersion": "string", "DeletionMark": "bool"}
        if kind == "Catalog":
            base.update({"Code": "string", "Description": "string"})
        else:
            base.update({"Number": "string", "Date": "datetime", "Posted": "bool"})
        self.fields = {**base, **fields}
        self.tabular = tabular or {}
        self.number_width = number_width


# the CSDL type 1C declares for each kind of value ($metadata)
EDM_TYPES = {"guid": "Edm.Guid", "string": "Edm.String", "datetime": "Edm.DateTime", "bool": "Edm.Boolean",
              "number": "Edm.Double", "int": "Edm.Int64"}


def default_value(kind: str) -> Any:
    return {"guid": EMPTY_REF, "datetime": EMPTY_DATE, "bool": False, "number": Decimal(0),
            "string": "", "int": 0}[kind]


def build_schema(names: OneCNames) -> dict[str, EntityType]:
    n = names
    catalog = lambda name: EntityType(name, "Catalog", {}, number_width=9)  # noqa: E731
    if n.base_ref_mode == "single":
        base_fields = {f"{n.services_base}_Key": "guid"}
    else:
        base_fields = {n.services_base: "string", f"{n.services_base}_Type": "string"}
    types = [
        catalog(n.doctors), catalog(n.clients), catalog(n.nomenclature),
        EntityType(n.zayavka, "Document", {
            n.zayavka_client: "guid", n.zayavka_doctor: "guid", n.zayavka_date: "datetime",
            n.zayavka_start: "datetime", n.zayavka_end: "datetime", n.zayavka_lead: "string",
            n.zayavka_nomenclature: "guid", "Комментарий": "string"}),
        EntityType(n.services, "Document", {
            **base_fields, n.services_amount: "number", "Клиент_Key": "guid", "Комментарий": "string"},
            tabular={n.services_lines: {n.services_line_nomenclature: "guid", n.services_line_quantity: "number",
                                        n.services_line_price: "number", n.services_line_sum: "number"}}),
        EntityType(n.schedules, "Document", {n.schedules_month: "datetime", "Комментарий": "string"},
                   tabular={n.schedules_lines: {n.schedule_doctor: "guid", n.schedule_date: "datetime",
                                                n.schedule_start: "datetime", n.schedule_end: "datetime"}}),
    ]
    return {t.name: t for t in types}

