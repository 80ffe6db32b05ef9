"""The seed's data (shared/seed/000_…txt), as the sandbox 1C base holds it.

1C side: the three doctors, the December 2021 «Установка графиков работы» № 00000000006 of
08.12.2021 from the seed's table (column 1 «Ефимова Е.В.», column 2 «Петрова А.С.» — the third
doctor we chose, column 3 «Ишаева М.И.»), the default client «Клиент из AmoCRM», the nomenclature
item «Номенклатура AmoCRM», and the next «Заявка» number 219.

References are fixed (uuid5 of the name), so tests and the story can name them.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time

from amo1c_sync.domain.dates import parse_user_time

_NS = uuid.UUID("8f0f7c1e-5a43-4c1b-9d0e-0a1c2b3d4e5f")


def seed_ref(kind: str, name: str) -> str:
    return str(uuid.uuid5(_NS, f"{kind}:{name}"))


DOCTORS = ("Ефимова Е.В.", "Петрова А.С.", "Ишаева М.И.")  # the schedule table's columns 1, 2, 3
DOCTOR_REFS = {name: seed_ref("doctor", name) for name in DOCTORS}
DEFAULT_CLIENT = "Клиент из AmoCRM"
DEFAULT_CLIENT_REF = seed_ref("client", DEFAULT_CLIENT)
DEFAULT_NOMENCLATURE = "Номенклатура AmoCRM"
DEFAULT_NOMENCLATURE_REF = seed_ref("nomenclature", DEFAULT_NOMENCLATURE)
NEXT_ZAYAVKA_NUMBER = 219

SCHEDULE_NUMBER = "00000000006"
SCHEDULE_DATE = datetime(2021, 12, 8)
SCHEDULE_MONTH = date(2021, 12, 1)
SCHEDULE_REF = seed_ref("schedule", SCHEDULE_NUMBER)

# The seed's table, row by row: day -> (column 1, column 2, column 3); None = not working.
_A, _B, _C, _D, _E = "08:15-13:00", "15:30-20:00", "08:00-16:00", "08:30-15:00", "15:30-19:45"
SCHEDULE_TABLE: dict[int, tuple[str | None, str | None, str | None]] = {
    8: (None, None, _C),
    9: (None, None, _C),
    10: (None, None, _C),
    11: (None, None, _D),
    13: (_A, _A, _C),
    14: (_B, _A, _C),
    15: (None, None, _C),
    16: (_B, _A, _C),
    17: (_A, None, _C),
    18: (None, None, _D),
    20: (_A, _A, _C),
    21: (_A, _A, _C),
    22: (_A, None, _C),
    23: (_E, _A, _C),
    24: (_A, None, _A),
    27: (_A, _A, None),
    28: (_E, _A, None),
    29: (_A, None, None),
}


def schedule_lines() -> list[tuple[str, date, time, time]]:
    """(doctor name, day, start, end) in the document's line order (by day, then column)."""
    out = []
    for day in sorted(SCHEDULE_TABLE):
        for name, cell in zip(DOCTORS, SCHEDULE_TABLE[day], strict=True):
            if cell:
                start, end = cell.split("-")
                out.append((name, date(2021, 12, day), parse_user_time(start), parse_user_time(end)))
    return out


CLIENTS = ((DEFAULT_CLIENT_REF, DEFAULT_CLIENT),)
NOMENCLATURE = ((DEFAULT_NOMENCLATURE_REF, DEFAULT_NOMENCLATURE),)
