"""The emulated 1C base's data and what 1C itself does on a write.

``DataVersion`` (opaque) changes on every write (create, patch, post, unpost, deletion mark);
``Number``/``Code`` come from a per-type counter, zero-padded (documents 11 characters, catalogs
9); time-only values are ``0001-01-01T09:05:00``; the empty date is ``0001-01-01T00:00:00``; the
empty reference is ``00000000-0000-0000-0000-000000000000``. Composite references
(``base_ref_mode="composite"``): ``ДокументОснование`` (the GUID as a string, "" when undefined) +
``ДокументОснование_Type`` (``StandardODATA.Document_Заявка``, or ``StandardODATA.Undefined``);
``base_ref_mode="single"``: ``ДокументОснование_Key`` only.
"""

from __future__ import annotations

import base64
import collections
import json
import struct
import threading
import uuid
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from amo1c_sync.onec.names import OneCNames
from amo1c_sync.sandbox import seed as seed_data
from amo1c_sync.sandbox.onec_emulator.errors import ODataError
from amo1c_sync.sandbox.onec_emulator.schema import (
    EMPTY_DATE, EMPTY_REF, EntityType, build_schema, default_value)


class OneCBase:
    """Every object of the base by entity set and ``Ref_Key``, behind one lock."""

    def __init__(self, names: OneCNames, *, timezone: str, next_zayavka_number: int, seed: bool,
                 seed_defaults: bool = True, number_prefix: str = ""):
        self.number_prefix = number_prefix
        self.lock = threading.RLock()
        self.names = names
        self.base_ref_mode = names.base_ref_mode
        self.tz = ZoneInfo(timezone)
        self.schema = build_schema(names)
        self.data: dict[str, dict[str, dict]] = {name: {} for name in self.schema}
        self._counters: dict[str, int] = collections.defaultdict(int)
        self._counters[names.zayavka] = next_zayavka_number - 1
        self._version = 0
        if seed:
            self.load_seed(defaults=seed_defaults)

    # ------------------------------------------------------------------ entity sets
    def all_sets(self) -> list[str]:
        out = []
        for etype in self.schema.values():
            out.append(etype.name)
            out.extend(f"{etype.name}_{ts}" for ts in etype.tabular)
        return out

    def resolve_set(self, set_name: str) -> tuple[EntityType, str | None]:
        if set_name in self.schema:
            return self.schema[set_name], None
        for etype in self.schema.values():
            for ts in etype.tabular:
                if set_name == f"{etype.name}_{ts}":
                    return etype, ts
        raise ODataError(404, "6", f"Не найден ресурс: {set_name}")

    @staticmethod
    def ts_types(etype: EntityType, ts: str) -> dict[str, str]:
        return {"Ref_Key": "guid", "LineNumber": "int64", **etype.tabular[ts]}

    def ts_rows(self, etype: EntityType, ts: str) -> list[dict]:
        return [line for row in self.data[etype.name].values() for line in row[ts]]

    # ------------------------------------------------------------------ what 1C does on a write
    def now(self) -> datetime:
        return datetime.now(self.tz).replace(tzinfo=None, microsecond=0)

    def next_version(self) -> str:
        self._version += 1
        return base64.b64encode(struct.pack(">II", self._version, 0)).decode("ascii")

    def _next_number(self, etype: EntityType) -> str:
        self._counters[etype.name] += 1
        prefix = self.number_prefix if etype.kind == "Document" else ""
        return etype.format_number(self._counters[etype.name], prefix)

    def insert(self, set_name: str, values: dict, *, tabular: dict[str, list[dict]] | None = None) -> dict:
        """Create an object (already validated values). Caller holds the lock."""
        etype = self.schema[set_name]
        row = {name: default_value(kind) for name, kind in etype.fields.items()}
        if etype.kind == "Document" and etype.name == self.names.services and self.base_ref_mode == "composite":
            row[f"{self.names.services_base}_Type"] = "StandardODATA.Undefined"
        row.update(values)
        self.pad(etype, row)
        if row["Ref_Key"] == EMPTY_REF:
            row["Ref_Key"] = str(uuid.uuid4())
        if row["Ref_Key"] in self.data[set_name]:
            raise ODataError(400, "14", f"Объект с ключом {row['Ref_Key']} уже существует")
        key = "Code" if etype.kind == "Catalog" else "Number"
        if not row[key]:
            row[key] = self._next_number(etype)
        if etype.kind == "Document" and row["Date"] == EMPTY_DATE:
            row["Date"] = self.now().isoformat()
        for ts in etype.tabular:
            row[ts] = self.lines(row["Ref_Key"], (tabular or {}).get(ts, []))
        row["DataVersion"] = self.next_version()
        self.data[set_name][row["Ref_Key"]] = row
        return row

    @staticmethod
    def pad(etype: EntityType, values: dict) -> None:
        """Fixed-length strings as 1C keeps them: cut to the length, padded with spaces."""
        for name, length in etype.fixed.items():
            if isinstance(values.get(name), str):
                values[name] = values[name][:length].ljust(length)

    @staticmethod
    def lines(ref: str, lines: list[dict]) -> list[dict]:
        out = []
        for i, line in enumerate(lines, 1):
            out.append({"Ref_Key": ref, "LineNumber": str(i), **{k: v for k, v in line.items()
                                                                  if k not in ("Ref_Key", "LineNumber")}})
        return out

    def find(self, set_name: str, ref: str) -> dict:
        row = self.data[set_name].get(ref)
        if row is None:
            raise ODataError(404, "6", f"Не найден объект с ключом {ref} в наборе {set_name}")
        return row

    def touch(self, row: dict) -> None:
        row["DataVersion"] = self.next_version()

    def post(self, set_name: str, ref: str) -> None:
        row = self.find(set_name, ref)
        if row["DeletionMark"]:
            raise ODataError(500, "-1", "Помеченный на удаление документ не может быть проведен!")
        row["Posted"] = True
        self.touch(row)

    def unpost(self, set_name: str, ref: str) -> None:
        row = self.find(set_name, ref)
        row["Posted"] = False
        self.touch(row)

    def by_name(self, set_name: str, description: str) -> str:
        for row in self.data[set_name].values():
            if row["Description"] == description and not row["DeletionMark"]:
                return row["Ref_Key"]
        raise ODataError(404, "6", f"Не найден элемент «{description}» в {set_name}")

    def name_of(self, set_name: str, ref: str) -> str | None:
        row = self.data[set_name].get(ref)
        return row["Description"] if row else None

    # ------------------------------------------------------------------ the seed, and what a person does in 1C
    def load_seed(self, *, defaults: bool = True) -> None:
        """The seed's base. ``defaults=False``: without «Клиент из AmoCRM» and «Номенклатура
        AmoCRM», as a base is before the integration's set-up (`setup 1c --create-defaults`)."""
        n = self.names
        with self.lock:
            for name in seed_data.DOCTORS:
                self.insert(n.doctors, {"Ref_Key": seed_data.DOCTOR_REFS[name], "Description": name})
            for ref, name in seed_data.CLIENTS if defaults else ():
                self.insert(n.clients, {"Ref_Key": ref, "Description": name})
            for ref, name in seed_data.NOMENCLATURE if defaults else ():
                self.insert(n.nomenclature, {"Ref_Key": ref, "Description": name})
            self._counters[n.schedules] = int(seed_data.SCHEDULE_NUMBER) - 1
            self.add_schedule(
                [(seed_data.DOCTOR_REFS[name], day, start, end)
                 for name, day, start, end in seed_data.schedule_lines()],
                month=seed_data.SCHEDULE_MONTH, doc_date=seed_data.SCHEDULE_DATE, ref=seed_data.SCHEDULE_REF)

    def add_catalog_item(self, set_name: str, description: str, *, ref: str | None = None,
                         deletion_mark: bool = False) -> dict:
        with self.lock:
            return dict(self.insert(set_name, {"Ref_Key": ref or EMPTY_REF, "Description": description,
                                                "DeletionMark": deletion_mark}))

    def add_schedule(self, lines, *, month: date, doc_date: datetime, posted: bool = True,
                     ref: str | None = None, number: str | None = None) -> dict:
        """lines: (doctor_ref, day, start time, end time)."""
        n = self.names
        rows = [{n.schedule_doctor: doc, n.schedule_date: datetime(d.year, d.month, d.day).isoformat(),
                 n.schedule_start: f"0001-01-01T{s.strftime('%H:%M:%S')}",
                 n.schedule_end: f"0001-01-01T{e.strftime('%H:%M:%S')}"} for doc, d, s, e in lines]
        with self.lock:
            row = self.insert(n.schedules, {
                "Ref_Key": ref or EMPTY_REF, "Number": number or "", "Date": doc_date.isoformat(),
                n.schedules_month: datetime(month.year, month.month, 1).isoformat(), "Posted": posted},
                tabular={n.schedules_lines: rows})
            return dict(row)

    def add_zayavka(self, *, lead: str | int | None, doctor: str, start: datetime, end: datetime | None = None,
                    client: str | None = None, posted: bool = True) -> dict:
        n = self.names
        with self.lock:
            doctor_ref = self.by_name(n.doctors, doctor)
            client_ref = self.by_name(n.clients, client or n.default_client)
            values = {
                n.zayavka_client: client_ref, n.zayavka_doctor: doctor_ref,
                n.zayavka_date: datetime(start.year, start.month, start.day).isoformat(),
                n.zayavka_start: f"0001-01-01T{start.strftime('%H:%M:%S')}",
                n.zayavka_end: f"0001-01-01T{end.strftime('%H:%M:%S')}" if end else EMPTY_DATE,
                n.zayavka_lead: "" if lead is None else str(lead),
                n.zayavka_nomenclature: self.by_name(n.nomenclature, n.default_nomenclature),
                "Posted": posted,
            }
            return dict(self.insert(n.zayavka, values))

    def change_zayavka(self, ref: str, *, start: datetime | None = None, doctor: str | None = None,
                       state: str | None = None, lead: str | None = None) -> dict:
        """What an administrator does in the «Заявка» form: another day and time (the end moves with
        the start, the duration kept), another doctor, another «Состояние», «Номер AmoCRM» filled in,
        corrected or relinked (``lead``; "" empties it); one write, one new DataVersion."""
        n = self.names
        with self.lock:
            row = self.find(n.zayavka, ref)
            if state is not None and not n.zayavka_state:
                raise ODataError(400, "-1", "the base's «Заявка» has no status attribute "
                                 "([onec_names] zayavka_state is empty)")
            if start is not None:
                old_day, old_start = row[n.zayavka_date][:10], row[n.zayavka_start][11:19]
                old = datetime.fromisoformat(f"{old_day}T{old_start}")
                if row[n.zayavka_end] != EMPTY_DATE:
                    end = datetime.fromisoformat(f"{old_day}T{row[n.zayavka_end][11:19]}")
                    row[n.zayavka_end] = f"0001-01-01T{(start + (end - old)).strftime('%H:%M:%S')}"
                row[n.zayavka_date] = datetime(start.year, start.month, start.day).isoformat()
                row[n.zayavka_start] = f"0001-01-01T{start.strftime('%H:%M:%S')}"
            if doctor is not None:
                row[n.zayavka_doctor] = self.by_name(n.doctors, doctor)
            if state is not None:
                row[n.zayavka_state] = str(state)
            if lead is not None:
                row[n.zayavka_lead] = str(lead)
            self.touch(row)
            return dict(row)

    def zayavka_action(self, ref: str, action: str) -> dict:
        """``post``, ``unpost``, ``delete`` (the deletion mark; 1C unposts a posted document it marks)."""
        n = self.names
        with self.lock:
            row = self.find(n.zayavka, ref)
            if action == "post":
                self.post(n.zayavka, ref)
            elif action == "unpost":
                self.unpost(n.zayavka, ref)
            elif action == "delete":
                row["DeletionMark"], row["Posted"] = True, False
                self.touch(row)
            else:
                raise ODataError(404, "6", f"unknown action {action}")
            return dict(row)

    def zayavki(self, lead: str | None = None) -> list[dict]:
        n = self.names
        with self.lock:
            out = []
            for row in self.data[n.zayavka].values():
                if lead is not None and row[n.zayavka_lead].strip() != str(lead):
                    continue
                day = row[n.zayavka_date][:10]

                def at(t: str, day: str = day) -> str | None:
                    return None if t == EMPTY_DATE or day.startswith("0001") else f"{day}T{t[11:19]}"
                out.append({"ref": row["Ref_Key"], "number": row["Number"],
                            "client": self.name_of(n.clients, row[n.zayavka_client]),
                            "client_ref": row[n.zayavka_client],
                            "doctor": self.name_of(n.doctors, row[n.zayavka_doctor]),
                            "start": at(row[n.zayavka_start]), "end": at(row[n.zayavka_end]),
                            "lead": row[n.zayavka_lead].rstrip(" "), "posted": row["Posted"],
                            "deletion_mark": row["DeletionMark"],
                            **({"state": row[n.zayavka_state]} if n.zayavka_state else {})})
            out.sort(key=lambda z: z["number"])
            return out

    def _base_values(self, zayavka_ref: str | None) -> dict:
        n = self.names
        if self.base_ref_mode == "single":
            return {f"{n.services_base}_Key": zayavka_ref or EMPTY_REF}
        if zayavka_ref is None:
            return {n.services_base: "", f"{n.services_base}_Type": "StandardODATA.Undefined"}
        return {n.services_base: zayavka_ref, f"{n.services_base}_Type": n.zayavka_type_name}

    def _service_lines(self, amount: Decimal) -> list[dict]:
        n = self.names
        return [{n.services_line_nomenclature: self.by_name(n.nomenclature, n.default_nomenclature),
                 n.services_line_quantity: Decimal(1), n.services_line_price: amount,
                 n.services_line_sum: amount}]

    def add_service(self, *, zayavka_ref: str | None, amount: Decimal | str, date_: datetime | None = None,
                    post: bool = True) -> dict:
        n = self.names
        amount = Decimal(str(amount))
        with self.lock:
            client = EMPTY_REF
            if zayavka_ref is not None:
                client = self.find(n.zayavka, zayavka_ref)[n.zayavka_client]
            row = self.insert(n.services, {
                **self._base_values(zayavka_ref), n.services_amount: amount, "Клиент_Key": client,
                "Date": (date_ or self.now()).isoformat()}, tabular={n.services_lines: self._service_lines(amount)})
            if post:
                self.post(n.services, row["Ref_Key"])
            return dict(row)

    def service_action(self, ref: str, action: str, amount: Decimal | str | None = None) -> dict:
        n = self.names
        with self.lock:
            row = self.find(n.services, ref)
            if action == "post":
                if amount is not None:
                    amount = Decimal(str(amount))
                    row[n.services_amount] = amount
                    row[n.services_lines] = self.lines(ref, self._service_lines(amount))
                    self.touch(row)
                self.post(n.services, ref)
            elif action == "unpost":
                self.unpost(n.services, ref)
            elif action == "delete":
                row["DeletionMark"] = True
                row["Posted"] = False
                self.touch(row)
            else:
                raise ODataError(404, "6", f"unknown action {action}")
            return dict(row)

    def change_service(self, ref: str, *, date_: datetime) -> dict:
        """A document's date moved in its form (posted or not, it stays so); one new DataVersion."""
        with self.lock:
            row = self.find(self.names.services, ref)
            row["Date"] = date_.isoformat()
            self.touch(row)
            return dict(row)

    def remove(self, set_name: str, ref: str) -> None:
        """An object deleted outright (as OData DELETE does), not only marked for deletion."""
        with self.lock:
            self.find(set_name, ref)
            del self.data[set_name][ref]

    def services(self) -> list[dict]:
        n = self.names
        with self.lock:
            out = []
            for row in self.data[n.services].values():
                if self.base_ref_mode == "single":
                    base = row[f"{n.services_base}_Key"]
                    base = None if base == EMPTY_REF else base
                else:
                    base = row[n.services_base] or None
                z = self.data[n.zayavka].get(base) if base else None
                out.append({"ref": row["Ref_Key"], "number": row["Number"], "date": row["Date"],
                            "posted": row["Posted"], "deletion_mark": row["DeletionMark"],
                            "amount": str(row[n.services_amount]), "zayavka_ref": base,
                            "lead": (z[n.zayavka_lead].rstrip(" ") if z else None), "data_version": row["DataVersion"]})
            out.sort(key=lambda s: s["number"])
            return out

    def clients(self) -> list[dict]:
        with self.lock:
            return sorted(({"ref": r["Ref_Key"], "code": r["Code"], "name": r["Description"],
                            "deletion_mark": r["DeletionMark"]} for r in self.data[self.names.clients].values()),
                          key=lambda c: c["code"])

    def rows(self, set_name: str) -> list[dict]:
        """A copy of every object of an entity set (for tests)."""
        with self.lock:
            return [json.loads(json.dumps(r, default=str)) for r in self.data[set_name].values()]

