"""Bad inputs, part 2: leads with missing or garbage dates and times, unknown names, huge and
Unicode-heavy client names (issue 9's table; README, Troubleshooting).

What the user sees here is the note on the lead (Russian, for the clinic's staff) and the 1C
state: a bad lead gets a note that names the problem and what would be valid, its flag is cleared,
nothing is written to 1C, and the good leads of the same cycle go through (nothing lost).

Here: what the note says (pure). The same leads run through the real registration job against
both emulators are in tests/integration/test_bad_inputs_leads_e2e.py.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from amo1c_sync.domain.registration import Invalid, parse_request

TZ = ZoneInfo("Europe/Moscow")
TOKEN = "bad-inputs-token"
EFIMOVA, ISHAEVA = "Ефимова Е.В.", "Ишаева М.И."
F_DATE, F_DOCTOR, F_TIME, F_CLIENT, F_FLAG = ("Дата записи к врачу", "Врач", "Время записи", "ФИО клиента",
                                             "Зарегистрировать в 1С")
TEXT_DATE = "Дата записи (текст)"


# --- pure: what the note says ---------------------------------------------------------------------

@pytest.mark.parametrize(("date_value", "time_value", "expected"), [
    (None, "9:05", "не заполнено поле «Дата записи к врачу»"),
    ("  ", "9:05", "не заполнено поле «Дата записи к врачу»"),
    ("22.12.2021", None, "не заполнено поле «Время записи»"),
    ("32.12.2021", "9:05", "«32.12.2021» — не дата. Выберите дату в календаре"),
    ("29.02.2021", "9:05", "«29.02.2021» — не дата"),
    ("завтра", "9:05", "«завтра» — не дата"),
    (-99999999999999, "9:05", "«-99999999999999» — не дата"),
    ("22.12.2021", "25:70", "«25:70» — не время. Выберите время из списка (например, 9:05)"),
    ("22.12.2021", "9.05", "«9.05» — не время"),
    ("22.12.2021", "девять", "«девять» — не время"),
])
def test_given_a_missing_or_garbage_date_or_time_when_parsed_then_the_note_names_the_field_and_value(
        date_value, time_value, expected):
    got = parse_request(1, date_value=date_value, doctor_value=EFIMOVA, time_value=time_value,
                        client_value=None, tz=TZ)
    assert isinstance(got, Invalid), got
    assert expected in got.message


def test_given_several_missing_fields_when_parsed_then_the_note_is_grammatical_russian():
    got = parse_request(1, date_value=None, doctor_value=None, time_value=None, client_value=None, tz=TZ)
    assert "не заполнены поля «Дата записи к врачу», «Врач», «Время записи»" in got.message
