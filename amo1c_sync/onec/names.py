"""The 1C names the gateway uses: entity sets, attribute names and default catalog items.

Every name is configuration (``[onec.names]`` in sync.ini); the defaults are the clinic's sandbox base.
Attribute names of references are given as OData shows them (``Клиент_Key``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

_NAME = re.compile(r"^[^\W\d]\w*$")

BASE_REF_MODES = ("composite", "single")
OPTIONAL = frozenset({"zayavka_state"})  # may be empty: the feature it serves is off


@dataclass(frozen=True)
class OneCNames:
    """The names of the 1C objects and attributes the integration uses (``[onec_names]``)."""

    # catalogs
    doctors: str = "Catalog_Сотрудники"
    clients: str = "Catalog_Клиенты"
    nomenclature: str = "Catalog_Номенклатура"
    # «Заявка»
    zayavka: str = "Document_Заявка"
    zayavka_client: str = "Клиент_Key"
    zayavka_doctor: str = "Сотрудник_Key"
    zayavka_date: str = "ДатаПриема"
    zayavka_start: str = "ВремяНачала"
    zayavka_end: str = "ВремяОкончания"
    zayavka_lead: str = "НомерAmoCRM"
    zayavka_nomenclature: str = "Номенклатура_Key"
    # the «Заявка»'s status attribute (e.g. Состояние) the lifecycle follows; "" = the base has none
    zayavka_state: str = ""
    # «Оказание услуг»
    services: str = "Document_ОказаниеУслуг"
    # base document attribute WITHOUT suffix: composite -> ДокументОснование + ДокументОснование_Type,
    # single -> ДокументОснование_Key
    services_base: str = "ДокументОснование"
    services_amount: str = "СуммаДокумента"
    services_lines: str = "Работы"
    services_line_nomenclature: str = "Номенклатура_Key"
    services_line_quantity: str = "Количество"
    services_line_price: str = "Цена"
    services_line_sum: str = "Сумма"
    # «Установка графиков работы»
    schedules: str = "Document_УстановкаГрафиковРаботы"
    schedules_month: str = "МесяцГрафика"
    schedules_lines: str = "ГрафикиРаботы"  # tabular section; entity set is f"{schedules}_{schedules_lines}"
    schedule_doctor: str = "Сотрудник_Key"
    schedule_date: str = "Дата"
    schedule_start: str = "ВремяНачала"
    schedule_end: str = "ВремяОкончания"
    # clients' contact information: a tabular section of the clients catalog (entity set
    # f"{clients}_{client_contacts}"), the kind of each line and the phone's columns
    client_contacts: str = "КонтактнаяИнформация"
    client_contact_type: str = "Тип"
    client_contact_phone_type: str = "Телефон"  # the value of the kind column on a phone line
    client_contact_phone: str = "НомерТелефона"  # the number as digits: what the phone search compares
    client_contact_presentation: str = "Представление"  # the number as a person reads it
    # default catalog items (by Description)
    default_client: str = "Клиент из AmoCRM"
    default_nomenclature: str = "Номенклатура AmoCRM"
    # "composite" (ДокументОснование + ДокументОснование_Type) or "single" (ДокументОснование_Key)
    base_ref_mode: str = "composite"

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in OPTIONAL and value == "":
                continue
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{f.name} is empty")
            elif f.name in ("default_client", "default_nomenclature", "base_ref_mode"):
                continue
            elif not _NAME.match(value):
                problems.append(f"{f.name}={value!r} is not a 1C name")
        if self.base_ref_mode not in BASE_REF_MODES:
            problems.append(f"base_ref_mode={self.base_ref_mode!r} is not one of {', '.join(BASE_REF_MODES)}")
        if problems:
            raise ValueError("bad 1C names: " + "; ".join(problems))

    # derived names -------------------------------------------------------------------------
    @property
    def schedules_lines_set(self) -> str:
        return f"{self.schedules}_{self.schedules_lines}"

    @property
    def client_contacts_set(self) -> str:
        return f"{self.clients}_{self.client_contacts}"

    @property
    def services_lines_set(self) -> str:
        return f"{self.services}_{self.services_lines}"

    @property
    def services_base_fields(self) -> tuple[str, ...]:
        """The OData properties that hold the base document reference."""
        if self.base_ref_mode == "single":
            return (f"{self.services_base}_Key",)
        return (self.services_base, f"{self.services_base}_Type")

    @property
    def zayavka_type_name(self) -> str:
        """The ``_Type`` value of a composite reference to a «Заявка»."""
        return f"StandardODATA.{self.zayavka}"

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
