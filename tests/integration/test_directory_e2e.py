"""F4 over HTTP: «Врач» and «Время записи» options follow 1C; never deleted; text fields skipped."""

from __future__ import annotations

from datetime import date, time

import psycopg  # noqa: F401 - imported before the clock is frozen, so its C part sees the real datetime
import pytest
import requests
from freezegun import freeze_time

from amo1c_sync.domain import directory as plan
from amo1c_sync.jobs import directory
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.store.models import JournalEntry
from tests.support.e2e import (
    EFIMOVA,
    ISHAEVA,
    PETROVA,
    TOKEN,
    make_settings,
    requests_of,
    reset_requests,
    run,
    writes,
)

SINCE = date(2021, 12, 1)


@pytest.fixture(autouse=True)
def december_2021():
    """The seed's schedules are for December 2021: pretend that is now (the clock still ticks,
    for the emulators' and the gateways' timeouts)."""
    with freeze_time("2021-12-10 12:00:00", tick=True):
        yield


def _emu(fields):
    return AmoCRMEmulator(rate_limit=1000, long_lived_token=TOKEN, lead_fields=fields)


FIELDS = (
    ("Дата записи к врачу", "date", ()),
    ("Врач", "select", (EFIMOVA, "Уволенный врач")),
    ("Время записи", "select", ("08:15", "08:20", "Другое")),
    ("ФИО клиента", "text", ()),
    ("Сумма1С", "numeric", ()),
    ("Зарегистрировать в 1С", "checkbox", ()),
    ("Заявка 1С", "text", ()),
)


def _options(emu, name):
    field = next(f for f in requests.get(emu.url + "/_sandbox/fields", timeout=5).json() if f["name"] == name)
    return [(e["id"], e["value"]) for e in sorted(field["enums"], key=lambda e: e["sort"])]


def test_given_1c_doctors_with_schedules_when_syncing_then_options_added_kept_never_deleted(onec_emu, store):
    with _emu(FIELDS) as amo_emu:
        settings = make_settings(amo_emu, onec_emu)
        before = dict((v, i) for i, v in _options(amo_emu, "Врач"))
        result = run(settings, store, job="directory")
        assert result.ok, result.errors

        doctors = _options(amo_emu, "Врач")
        values = [v for _, v in doctors]
        assert values == [EFIMOVA, "Уволенный врач", ISHAEVA, PETROVA]
        assert dict((v, i) for i, v in doctors)[EFIMOVA] == before[EFIMOVA]
        assert dict((v, i) for i, v in doctors)["Уволенный врач"] == before["Уволенный врач"]

        times = [v for _, v in _options(amo_emu, "Время записи")]
        # 8:00 (Ишаева) … 19:45 (the latest start: Ефимова's 15:30-20:00 ends at 20:00)
        assert times[:4] == ["8:00", "8:05", "8:10", "08:15"]
        assert times[-2:] == ["19:45", "Другое"]
        assert len(times) == len(set(times)) == (19 * 60 + 45 - 8 * 60) // 5 + 1 + 1
        with store.session() as s:
            assert s.query(JournalEntry).filter_by(job="directory").count() == 2

        # nothing changed in 1C -> nothing written
        reset_requests(amo_emu)
        assert run(settings, store, job="directory").ok
        assert writes(requests_of(amo_emu)) == {}


def test_given_doctor_renamed_in_1c_when_syncing_then_option_renamed_in_place(onec_emu, store):
    with _emu(FIELDS) as amo_emu:
        settings = make_settings(amo_emu, onec_emu)
        assert run(settings, store, job="directory").ok
        ids = {v: i for i, v in _options(amo_emu, "Врач")}
        from amo1c_sync.sandbox import seed

        r = requests.patch(
            f"{onec_emu.odata_url}Catalog_Сотрудники(guid'{seed.DOCTOR_REFS[ISHAEVA]}')?$format=json",
            json={"Description": "Ишаева-Смирнова М.И."}, auth=(onec_emu.username.encode(), onec_emu.password.encode()),
            timeout=5)
        assert r.status_code == 200, r.text
        assert run(settings, store, job="directory").ok
        after = {v: i for i, v in _options(amo_emu, "Врач")}
        assert after["Ишаева-Смирнова М.И."] == ids[ISHAEVA]
        assert ISHAEVA not in after


def test_given_text_fields_when_syncing_then_nothing_to_do(onec_emu, store):
    fields = tuple((n, "text" if n in ("Врач", "Время записи") else t, o) for n, t, o in FIELDS)
    with _emu(fields) as amo_emu:
        settings = make_settings(amo_emu, onec_emu)
        reset_requests(onec_emu)
        result = run(settings, store, job="directory")
        assert result.ok
        assert result.counts["text_fields"] == 2
        assert requests_of(onec_emu)["total"] == 0
        assert writes(requests_of(amo_emu)) == {}


def test_given_dry_run_when_syncing_then_plans_only(onec_emu, store):
    with _emu(FIELDS) as amo_emu:
        settings = make_settings(amo_emu, onec_emu)
        result = run(settings, store, job="directory", dry_run=True)
        assert result.ok
        assert {p["field_id"] for p in result.planned} == {amo_emu.field_id("Врач"),
                                                                        amo_emu.field_id("Время записи")}
        assert writes(requests_of(amo_emu)) == {}
        assert [v for _, v in _options(amo_emu, "Врач")] == [EFIMOVA, "Уволенный врач"]


def test_given_schedules_when_building_the_grid_then_odd_anchors_kept_and_no_holes():
    class DS:
        def __init__(self, *iv):
            self.intervals = iv

    grid = plan.time_grid([DS((time(8, 13), time(8, 40))), DS((time(9, 0), time(9, 20)))], 5, 15)
    assert grid[:4] == [time(8, 13), time(8, 15), time(8, 18), time(8, 20)]
    assert grid[-1] == time(9, 5)
    assert time(8, 50) in grid
    assert plan.time_grid([], 5, 15) == []


def test_given_today_when_computing_window_then_lookback_to_two_months_ahead():
    from amo1c_sync.config import load_settings

    s = load_settings(None)
    months = directory.window_months(s, now=date(2021, 12, 10))
    assert months[0] == date(2021, 10, 1)
    assert months[-1] == date(2022, 2, 1)
    assert directory.window_months(s, SINCE, now=date(2021, 12, 10))[0] == SINCE
