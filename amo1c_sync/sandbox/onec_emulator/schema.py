"""The configuration's objects as the emulated base has them: catalogs, documents, their
properties and tabular sections, named by :class:`amo1c_sync.onec.names.OneCNames` (so a renamed
base can be emulated too).

Sources: 1C:Enterprise 8.3.27 documentation, 17.4 «Стандартный интерфейс OData» (a copy:
hacker-cb/1c-odata, docs/1c/markdown/17.4_-_Cтандартный_интерфейс_OData_8_3_27.md), below «the
1C OData docs»:

* a reference attribute is two properties, ``X_Key`` (``Edm.Guid``) and the navigation property
  ``X`` (the docs' type table, «Ссылочный тип»); references here name their target set;
* integers are ``Edm.Int64``, and a tabular section's ``LineNumber`` is one, sent as a JSON
  string (``"LineNumber": "1"`` in the docs' PATCH example; «1С wire form is always string» for
  Int64, hacker-cb/1c-odata packages/client/src/connection.ts);
* a string attribute of fixed length (``ДопустимаяДлина.Фиксированная`` in the configuration)
  holds its value padded with spaces to that length: ``fixed`` lists such attributes;
* ``Number``/``Code`` come in the configuration's own format: a prefix (``МС00-``, ``0000-``)
  then the counter, zero-filled to the field's length.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from amo1c_sync.onec.names import OneCNames

#: the sandbox's document number prefix when none is given (``МС00-`` makes ``МС00-000219``)
NUMBER_PREFIX_ENV = "AMO1C_SANDBOX_NUMBER_PREFIX"

EMPTY_REF = "00000000-0000-0000-0000-000000000000"
EMPTY_DATE = "0001-01-01T00:00:00"

class EntityType:
    """``refs``: reference property (``X_Key``) -> the entity set it points to;
    ``fixed``: fixed-length string property -> its length."""

    def __init__(self, name: str, kind: str, fields: dict[str, str],
                 tabular: dict[str, dict[str, str]] | None = None, number_width: int = 11,
                 refs: dict[str, str] | None = None, fixed: dict[str, int] | None = None,
                 tabular_refs: dict[str, dict[str, str]] | None = None):
        self.name, self.kind = name, kind
        base = {"Ref_Key": "guid", "DataVersion": "string", "DeletionMark": "bool"}
        if kind == "Catalog":
            base.update({"Code": "string", "Description": "string"})
        else:
            base.update({"Number": "string", "Date": "datetime", "Posted": "bool"})
        self.fields = {**base, **fields}
        self.tabular = tabular or {}
        self.number_width = number_width
        self.refs = refs or {}
        self.fixed = fixed or {}
        self.tabular_refs = tabular_refs or {}

    def navigation(self) -> dict[str, str]:
        """Navigation property name (``X`` of ``X_Key``) -> target entity set."""
        return {nav_name(key): target for key, target in self.refs.items()}

    def format_number(self, counter: int, prefix: str = "") -> str:
        return prefix + str(counter).zfill(max(1, self.number_width - len(prefix)))


def nav_name(key_property: str) -> str:
    return key_property[:-len("_Key")] if key_property.endswith("_Key") else key_property


def number_prefix_from_env() -> str:
    return os.environ.get(NUMBER_PREFIX_ENV, "")


# the CSDL type 1C declares for each kind of value ($metadata)
EDM_TYPES = {"guid": "Edm.Guid", "string": "Edm.String", "datetime": "Edm.DateTime", "bool": "Edm.Boolean",
              "number": "Edm.Double", "int": "Edm.Int64", "int64": "Edm.Int64"}


def default_value(kind: str) -> Any:
    return {"guid": EMPTY_REF, "datetime": EMPTY_DATE, "bool": False, "number": Decimal(0),
            "string": "", "int": 0, "int64": 0}[kind]


def build_schema(names: OneCNames) -> dict[str, EntityType]:
    n = names
    catalog = lambda name: EntityType(name, "Catalog", {}, number_width=9)  # noqa: E731
    base_refs: dict[str, str] = {}
    if n.base_ref_mode == "single":
        base_fields = {f"{n.services_base}_Key": "guid"}
        base_refs = {f"{n.services_base}_Key": n.zayavka}
    else:
        base_fields = {n.services_base: "string", f"{n.services_base}_Type": "string"}
    types = [
        catalog(n.doctors), catalog(n.nomenclature),
        EntityType(n.clients, "Catalog", {}, number_width=9, tabular={n.client_contacts: {
            n.client_contact_type: "string", "Вид_Key": "guid", n.client_contact_presentation: "string",
            n.client_contact_phone: "string", "НомерТелефонаБезКодов": "string"}}),
        EntityType(n.zayavka, "Document", {
            n.zayavka_client: "guid", n.zayavka_doctor: "guid", n.zayavka_date: "datetime",
            n.zayavka_start: "datetime", n.zayavka_end: "datetime", n.zayavka_lead: "string",
            n.zayavka_nomenclature: "guid", "Комментарий": "string",
            **({n.zayavka_state: "string"} if n.zayavka_state else {})},
            refs={n.zayavka_client: n.clients, n.zayavka_doctor: n.doctors,
                  n.zayavka_nomenclature: n.nomenclature},
            fixed={n.zayavka_lead: 12}),
        EntityType(n.services, "Document", {
            **base_fields, n.services_amount: "number", "Клиент_Key": "guid", "Комментарий": "string"},
            tabular={n.services_lines: {n.services_line_nomenclature: "guid", n.services_line_quantity: "number",
                                        n.services_line_price: "number", n.services_line_sum: "number"}},
            refs={"Клиент_Key": n.clients, **base_refs},
            tabular_refs={n.services_lines: {n.services_line_nomenclature: n.nomenclature}}),
        EntityType(n.schedules, "Document", {n.schedules_month: "datetime", "Комментарий": "string"},
                   tabular={n.schedules_lines: {n.schedule_doctor: "guid", n.schedule_date: "datetime",
                                                n.schedule_start: "datetime", n.schedule_end: "datetime"}},
                   tabular_refs={n.schedules_lines: {n.schedule_doctor: n.doctors}}),
    ]
    return {t.name: t for t in types}

