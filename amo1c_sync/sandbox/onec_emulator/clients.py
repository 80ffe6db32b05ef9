"""Clients with their contact information, as a typical 1C configuration keeps it: a tabular
section of the clients catalog (``Catalog_Клиенты_КонтактнаяИнформация``) whose lines carry the
kind of information (``Тип``: ``Телефон``, ``АдресЭлектроннойПочты`` …; ``Вид_Key``), the value as a
person reads it (``Представление``) and, for a phone, search columns of digits only:
``НомерТелефона`` (country code and number) and ``НомерТелефонаБезКодов`` (the number without the
country code).

Sources: the Standard Subsystems Library reference, «Управление контактной информацией»
(zup.sinenikolsky.ru/bsp/управление-контактной-информацией): a line has Вид
(СправочникСсылка.ВидыКонтактнойИнформации), Тип (ПеречислениеСсылка.ТипыКонтактнойИнформации),
Представление, Значение and ЗначенияПолей; public dumps of typical configurations' metadata list
the section's columns with НомерТелефона and НомерТелефонаБезКодов as strings of 20; reports over
real 1C CRM bases read ``НомерТелефонаБезКодов`` as the 10 digits of a Russian mobile and prefix
``8`` to dial it. A line written over OData keeps what the writer sent; a client made through the
control API gets its search columns filled as 1C's own form would.
"""

from __future__ import annotations

import re
from typing import Iterable

from amo1c_sync.sandbox.onec_emulator.schema import EMPTY_REF
from amo1c_sync.sandbox.onec_emulator.state import OneCBase

_NOT_DIGIT = re.compile(r"\D")


def search_digits(presentation: str) -> tuple[str, str]:
    """(НомерТелефона, НомерТелефонаБезКодов) for a Russian number as 1C's form fills them: digits
    only, «8» as the trunk prefix becomes the country code 7."""
    digits = _NOT_DIGIT.sub("", presentation)
    if len(digits) == 11 and digits[0] in "78":
        return "7" + digits[1:], digits[1:]
    if len(digits) == 10:
        return "7" + digits, digits
    return digits, digits


def phone_lines(base: OneCBase, phones: Iterable[str]) -> list[dict]:
    n = base.names
    lines = []
    for phone in phones:
        full, local = search_digits(str(phone))
        lines.append({n.client_contact_type: n.client_contact_phone_type, "Вид_Key": EMPTY_REF,
                      n.client_contact_presentation: str(phone), n.client_contact_phone: full,
                      "НомерТелефонаБезКодов": local})
    return lines


def add_client(base: OneCBase, name: str, phones: Iterable[str] = (), *, deletion_mark: bool = False,
               ref: str | None = None) -> dict:
    """A client entered by hand in 1C, with its phones in the contact information."""
    n = base.names
    with base.lock:
        return dict(base.insert(n.clients, {"Ref_Key": ref or EMPTY_REF, "Description": name,
                                            "DeletionMark": deletion_mark},
                                tabular={n.client_contacts: phone_lines(base, phones)}))


def client_views(base: OneCBase) -> list[dict]:
    """``GET /_sandbox/clients``: each client with the presentations of its phone lines."""
    n = base.names
    with base.lock:
        out = [{"ref": r["Ref_Key"], "code": r["Code"], "name": r["Description"],
                "deletion_mark": r["DeletionMark"],
                "phones": [line[n.client_contact_presentation] for line in r.get(n.client_contacts, [])
                           if line.get(n.client_contact_type) == n.client_contact_phone_type]}
               for r in base.data[n.clients].values()]
    return sorted(out, key=lambda c: c["code"])
