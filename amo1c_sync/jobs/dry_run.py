"""A dry run as recording adapters around the ports: the jobs run exactly as they do for real,
reading both systems and the store, while every write to amoCRM or 1C is recorded in ``planned``
(and answered as if it had succeeded) and every store transaction is rolled back."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from datetime import date, time
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from sqlalchemy.orm import Session

from amo1c_sync.amocrm.gateway import BatchResult
from amo1c_sync.domain.dates import format_time
from amo1c_sync.onec.gateway import CatalogItem, Zayavka

if TYPE_CHECKING:
    from amo1c_sync.jobs.ports import AmoCRMPort, OneCPort

DRY_REF = "00000000-0000-0000-0000-000000000000"  # what a dry run's would-be 1C object is called


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: format_time(v) if isinstance(v, time) else v.isoformat() if isinstance(v, date) else v
            for k, v in values.items()}


class DryRunStore:
    """The store for a dry run: every transaction is rolled back at its end."""

    def __init__(self, store: Any):
        self._store = store
        self.dialect = store.dialect
        self.url = store.url

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._store.rolled_back() as s:
            yield s

    @contextmanager
    def exclusive(self, name: str) -> Iterator[Session]:
        with self._store.rolled_back() as s:
            yield s


class DryRunAmoCRM:
    """Reads go to amoCRM; notes, lead updates and option changes are recorded."""

    def __init__(self, real: AmoCRMPort, planned: list[dict[str, Any]]):
        self._real, self._planned = real, planned

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def add_notes(self, notes: Iterable[tuple[int, str]]) -> BatchResult:
        ids = []
        for lead_id, text in notes:
            self._planned.append({"system": "amocrm", "action": "lead.note", "lead_id": int(lead_id), "note": text})
            ids.append(int(lead_id))
        return BatchResult(ok=ids)

    def update_leads(self, patches: Sequence[dict[str, Any]]) -> BatchResult:
        for p in patches:
            self._planned.append({"system": "amocrm", "action": "lead.update", "request": "PATCH /api/v4/leads",
                                  "lead_id": int(p["id"]), "body": p})
        return BatchResult(ok=[int(p["id"]) for p in patches])

    def update_contacts(self, patches: Sequence[dict[str, Any]]) -> BatchResult:
        for p in patches:
            self._planned.append({"system": "amocrm", "action": "contact.update",
                                  "request": "PATCH /api/v4/contacts", "contact_id": int(p["id"]), "body": p})
        return BatchResult(ok=[int(p["id"]) for p in patches])

    def update_field_enums(self, field_id: int, enums: Sequence[dict[str, Any] | str]) -> dict[str, Any]:
        items = [{"value": e} if isinstance(e, str) else dict(e) for e in enums]
        self._planned.append({"system": "amocrm", "action": "field.options", "field_id": int(field_id),
                              "enums": items})
        return {"id": int(field_id), "enums": items}


class DryRunOneC:
    """Reads go to 1C; clients, «Заявки» and postings are recorded."""

    def __init__(self, real: OneCPort, planned: list[dict[str, Any]]):
        self._real, self._planned = real, planned

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def create_client(self, description: str, phones: Iterable[Any] = ()) -> CatalogItem:
        self._planned.append({"system": "1c", "action": "client.create", "name": description,
                              "phones": [p.display for p in phones]})
        return CatalogItem(ref=DRY_REF, code="", name=description)

    def create_zayavka(self, **values: Any) -> Zayavka:
        self._planned.append({"system": "1c", "action": "zayavka.create", **_plain(values)})
        return Zayavka(ref=DRY_REF, number="…", date=None, posted=False, deletion_mark=False, data_version="",
                       client_ref=values.get("client_ref"), doctor_ref=values.get("doctor_ref"),
                       day=values.get("day"), start=values.get("start"), end=values.get("end"),
                       lead=str(values.get("lead_id", "")), nomenclature_ref=values.get("nomenclature_ref"))

    def update_zayavka(self, ref: str, **values: Any) -> Zayavka:
        self._planned.append({"system": "1c", "action": "zayavka.update", "ref": ref, **_plain(values)})
        known = {f.name for f in dataclasses.fields(Zayavka)}
        return dataclasses.replace(self._real.get_zayavka(ref), **{k: v for k, v in values.items() if k in known})

    def post(self, entity_set: str, ref: str) -> None:
        self._planned.append({"system": "1c", "action": "document.post", "entity_set": entity_set, "ref": ref})

    def mark_zayavka_deleted(self, ref: str) -> None:
        self._planned.append({"system": "1c", "action": "zayavka.delete_mark", "ref": ref})

    def unpost(self, entity_set: str, ref: str) -> None:
        self._planned.append({"system": "1c", "action": "document.unpost", "entity_set": entity_set, "ref": ref})
