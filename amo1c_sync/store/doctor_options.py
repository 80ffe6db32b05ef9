"""Which «Врач» option in amoCRM each 1C doctor has (F4), so that a rename keeps the option."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amo1c_sync.store.models import DoctorOption

if TYPE_CHECKING:
    from amo1c_sync.store.db import Store


def links(store: Store) -> dict[str, int]:
    """1C doctor ref (lower case) -> amoCRM enum id."""
    with store.session() as s:
        return {r.doctor_ref: r.enum_id for r in s.query(DoctorOption)}


def save_links(store: Store, known: dict[str, int]) -> None:
    with store.session() as s:
        for ref, enum_id in known.items():
            row = s.get(DoctorOption, ref)
            if row is None:
                s.add(DoctorOption(doctor_ref=ref, enum_id=int(enum_id)))
            elif row.enum_id != int(enum_id):
                row.enum_id = int(enum_id)
