"""Bad inputs, part 2: leads with missing or garbage dates and times, unknown names, huge and
Unicode-heavy client names (issue 9's table; README, Troubleshooting).

What the user sees here is the note on the lead (Russian, for the clinic's staff) and the 1C
state: a bad lead gets a note that names the problem and what would be valid, its flag is cleared,
nothing is written to 1C, and the good leads of the same cycle go through (nothing lost).

These run the real registration job against both emulators on loopback (in process, fast); what
the note says for each value is in tests/unit/test_bad_inputs_leads.py.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
import requests

from amo1c_sync.config import load_settings
from amo1c_sync.jobs.base import JobContext, run_job
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator
from tests.support import quick_amocrm, quick_onec

TZ = ZoneInfo("Europe/Moscow")
TOKEN = "bad-inputs-token"
EFIMOVA, ISHAEVA = "Ефимова Е.В.", "Ишаева М.И."
F_DATE, F_DOCTOR, F_TIME, F_CLIENT, F_FLAG = ("Дата записи к врачу", "Врач", "Время записи", "ФИО клиента",
                                             "Зарегистрировать в 1С")
TEXT_DATE = "Дата записи (текст)"


# --- end to end: the registration job against both emulators --------------------------------------

@pytest.fixture
def emus():
    amo = AmoCRMEmulator(rate_limit=1000, long_lived_token=TOKEN)
    amo.add_field(TEXT_DATE, "text")
    with amo, OneCEmulator() as onec:
        yield amo, onec


@pytest.fixture
def store(sqlite_store):
    """SQLite only: what these tests try does not depend on the database."""
    return sqlite_store


def settings_for(amo, onec, **fields):
    return load_settings(None, overrides={
        "amocrm": {"base_url": amo.url, "long_lived_token": TOKEN, "rate_limit": "1000"},
        "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
        "fields": fields,
    })


def run_registration(amo, onec, store, **fields):
    s = settings_for(amo, onec, **fields)
    gw = quick_amocrm(s.amocrm.base_url, store, token=TOKEN)
    onec_gw = quick_onec(s.onec.base_url, s.onec.username, s.onec.password)
    return run_job(JobContext(s, store, amocrm=gw, onec=onec_gw), "registration")


def new_lead(amo, fields) -> int:
    r = requests.post(amo.url + "/_sandbox/leads", json={"name": "Сделка", "fields": fields}, timeout=10)
    r.raise_for_status()
    return r.json()["id"]


def lead(amo, lead_id) -> dict:
    r = requests.get(f"{amo.url}/_sandbox/leads/{lead_id}", timeout=10)
    r.raise_for_status()
    return r.json()


def zayavki(onec, lead_id) -> list[dict]:
    r = requests.get(onec.url + "/_sandbox/zayavki", params={"lead": str(lead_id)}, timeout=10)
    r.raise_for_status()
    return [z for z in r.json() if not z["deletion_mark"]]


def clients(onec) -> list[dict]:
    return requests.get(onec.url + "/_sandbox/clients", timeout=10).json()


def flagged(day="22.12.2021", doctor=EFIMOVA, time="9:05", client=None, **extra) -> dict:
    fields = {F_DATE: day, F_DOCTOR: doctor, F_TIME: time, F_FLAG: True, **extra}
    if client is not None:
        fields[F_CLIENT] = client
    return {k: v for k, v in fields.items() if v is not None}


BAD_LEADS = {
    # name: (fields, words the note must contain)
    "no date": (flagged(day=None), ["не заполнено", "«Дата записи к врачу»"]),
    "no doctor": (flagged(doctor=None), ["не заполнено", "«Врач»"]),
    "no time": (flagged(time=None), ["не заполнено", "«Время записи»"]),
    "garbage time option": (flagged(time="25:70"), ["«25:70» — не время"]),
    "time off the grid": (flagged(time="9:07"), ["9:07", "сетку", "Ближайшее свободное время"]),
    "time outside the hours": (flagged(time="19:00"), ["19:00", "вне графика", "8:15"]),
    "doctor not working that day": (flagged(day="08.12.2021"), ["не работает 08.12.2021", ISHAEVA]),
    "day without any schedule": (flagged(day="05.11.2021"), ["05.11.2021", "не работает"]),
    "unknown doctor": (flagged(doctor="Неизвестный Н.Н."), ["«Неизвестный Н.Н.» нет в 1С", EFIMOVA]),
    "time another «Заявка» holds": (flagged(time="11:00"), ["11:00 занято", "Ближайшее свободное время"]),
}


def test_given_bad_leads_among_good_ones_when_registration_runs_then_each_bad_one_gets_its_note_and_nothing_is_lost(
        emus, store):
    amo, onec = emus
    requests.post(onec.url + "/_sandbox/zayavki", json={"lead": None, "doctor": EFIMOVA,
                                                        "start": "2021-12-22T11:00:00"}, timeout=10).raise_for_status()
    good_before = new_lead(amo, flagged(time="8:15"))
    bad = {name: new_lead(amo, fields) for name, (fields, _) in BAD_LEADS.items()}
    good_after = new_lead(amo, flagged(doctor=ISHAEVA, time="10:00", client="Петров П.П."))

    result = run_registration(amo, onec, store)

    for good in (good_before, good_after):
        assert len(zayavki(onec, good)) == 1, f"good lead {good} lost: {result.errors}"
        assert lead(amo, good)["notes"][0].startswith("Создан документ Заявка №")
    for name, lead_id in bad.items():
        view = lead(amo, lead_id)
        assert zayavki(onec, lead_id) == [], name
        assert view["fields"].get(F_FLAG) in (None, False), f"{name}: flag left set"
        assert len(view["notes"]) == 1, f"{name}: notes {view['notes']}"
        for word in BAD_LEADS[name][1]:
            assert word in view["notes"][0], f"{name}: {word!r} not in {view['notes'][0]!r}"


def test_given_a_doctor_not_working_that_day_when_registered_then_the_note_has_no_double_period(emus, store):
    amo, onec = emus
    lead_id = new_lead(amo, flagged(day="08.12.2021"))
    run_registration(amo, onec, store)
    note = lead(amo, lead_id)["notes"][0]
    assert "работают: Ишаева М.И." in note, note
    assert ".." not in note, note


@pytest.mark.parametrize(("typed", "expected"), [
    ("32.12.2021", "«32.12.2021» — не дата"),
    ("завтра", "«завтра» — не дата"),
    ("2021-13-01", "«2021-13-01» — не дата"),
])
def test_given_a_date_typed_as_text_when_it_is_garbage_then_the_lead_gets_a_note_and_1c_is_untouched(
        emus, store, typed, expected):
    """A clinic whose «Дата записи» is a plain text field (the card allows typing anything)."""
    amo, onec = emus
    lead_id = new_lead(amo, {TEXT_DATE: typed, F_DOCTOR: EFIMOVA, F_TIME: "9:05", F_FLAG: True})
    run_registration(amo, onec, store, date=TEXT_DATE)
    view = lead(amo, lead_id)
    assert zayavki(onec, lead_id) == []
    assert view["fields"].get(F_FLAG) in (None, False)
    assert any(expected in n for n in view["notes"]), view["notes"]


UNICODE_NAMES = [
    "O'Brien Шон",                                   # quote: must not break the OData filter
    "Иванов') or 1=1 --",                            # injection attempt
    "Ёлкина-Щукина Ёлка Ёжиковна",                   # ё/Ё (1C collations treat е and ё alike: must be exact)
    "Müller-Lüdenscheidt Jürgen",
    "Ли Вэй 李伟 👩‍⚕️",                                # CJK and an emoji ZWJ sequence
    "محمد عبد الله",                                  # right to left
    "Анна & Co 100% #1 + a/b?c=d",                   # URL-special characters
    "Zoë Saldaña Čapek",                             # combining-free Latin diacritics
]


@pytest.mark.parametrize("name", UNICODE_NAMES)
def test_given_a_unicode_heavy_client_name_when_registered_twice_then_one_client_with_that_exact_name_is_used(
        emus, store, name):
    amo, onec = emus
    first = new_lead(amo, flagged(time="8:15", client=name))
    second = new_lead(amo, flagged(time="9:05", client=f"  {name}  "))
    result = run_registration(amo, onec, store)
    assert result.ok, result.errors
    [z1], [z2] = zayavki(onec, first), zayavki(onec, second)
    assert z1["client"] == name
    assert z2["client"] == name
    assert [c["name"] for c in clients(onec)].count(name) == 1
    assert "не найден в 1С — создан новый клиент" in lead(amo, first)["notes"][0]


def test_given_a_client_name_with_line_breaks_and_tabs_when_registered_then_it_is_collapsed_to_one_line(emus, store):
    amo, onec = emus
    lead_id = new_lead(amo, flagged(client="Петров\n\tПётр\u00a0 Петрович"))
    result = run_registration(amo, onec, store)
    assert result.ok, result.errors
    assert zayavki(onec, lead_id)[0]["client"] == "Петров Пётр Петрович"


HUGE = "Константинопольская-" * 150   # 3,000 characters


def test_given_a_huge_client_name_when_registered_then_the_lead_is_not_stuck(emus, store):
    """3,000 characters in «ФИО клиента»: the lead ends with either its «Заявка» or a note saying
    what is wrong — never flagged forever without a word."""
    amo, onec = emus
    lead_id = new_lead(amo, flagged(client=HUGE))
    run_registration(amo, onec, store)
    view = lead(amo, lead_id)
    assert view["notes"], "no note on the lead"
    assert view["fields"].get(F_FLAG) in (None, False), "flag left set"


def test_given_a_huge_client_name_when_registered_then_the_note_says_it_was_too_long(emus, store):
    amo, onec = emus
    lead_id = new_lead(amo, flagged(client=HUGE))
    run_registration(amo, onec, store)
    note = lead(amo, lead_id)["notes"][0]
    assert "ФИО" in note
    assert ("длинн" in note or "символ" in note)
