"""F1 over HTTP against the 1C emulator: the seed's doctors and free times, caching, the CLI."""

from __future__ import annotations

import json
import logging
import sys
from datetime import date, datetime, time

import pytest
import requests

from amo1c_sync.cli import main as cli_main
from amo1c_sync.domain.registration import no_such_doctor_text
from amo1c_sync.domain.slots import NotWorking, UnknownDoctor
from amo1c_sync.services.slots import SlotFinder
from amo1c_sync.onec import OneC
from tests.support.e2e import EFIMOVA, ISHAEVA, PETROVA, SEED_DAY, requests_of, reset_requests


@pytest.fixture
def onec(onec_emu):
    return OneC(onec_emu.url, onec_emu.username, onec_emu.password, max_retries=0)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_given_seed_schedule_when_asking_22_12_2021_then_efimova_and_ishaeva(onec):
    finder = SlotFinder(onec, step_minutes=5, appointment_minutes=15)
    assert finder.doctors(SEED_DAY) == [EFIMOVA, ISHAEVA]


def test_given_seed_schedule_when_asking_efimova_then_first_free_times_are_the_seeds(onec):
    finder = SlotFinder(onec, step_minutes=5, appointment_minutes=15)
    free = finder.free_times(SEED_DAY, EFIMOVA)
    assert free[:6] == [time(8, 15), time(8, 20), time(8, 25), time(8, 30), time(8, 35), time(8, 40)]
    assert free[-1] == time(12, 45)


def test_given_a_booking_when_listing_then_its_times_are_busy(onec_emu, onec):
    onec_emu.add_zayavka(lead=None, doctor=EFIMOVA, start=datetime(2021, 12, 22, 9, 5))
    onec_emu.add_zayavka(lead=None, doctor=ISHAEVA, start=datetime(2021, 12, 22, 10, 0),
                         end=datetime(2021, 12, 22, 11, 0))
    finder = SlotFinder(onec, step_minutes=5, appointment_minutes=15)
    free = finder.free_times(SEED_DAY, EFIMOVA)
    assert time(8, 50) in free
    assert time(8, 55) not in free
    assert time(9, 5) not in free
    assert time(9, 20) in free
    ish = finder.free_times(SEED_DAY, ISHAEVA)
    assert time(9, 45) in ish
    assert time(9, 50) not in ish
    assert time(10, 55) not in ish
    assert time(11, 0) in ish


def test_given_a_later_posted_schedule_when_listing_then_it_wins(onec_emu, onec):
    r = requests.post(onec_emu.url + "/_sandbox/schedules", timeout=5, json={
        "date": "2021-12-15T00:00:00", "month": "2021-12-01",
        "lines": [{"doctor": EFIMOVA, "date": "2021-12-22", "start": "15:30", "end": "16:00"},
                  {"doctor": PETROVA, "date": "2021-12-22", "start": "10:00", "end": "11:00"}]})
    assert r.status_code == 201
    requests.post(onec_emu.url + "/_sandbox/schedules", timeout=5, json={
        "date": "2021-12-20T00:00:00", "month": "2021-12-01", "posted": False,
        "lines": [{"doctor": EFIMOVA, "date": "2021-12-22", "start": "07:00", "end": "08:00"}]})
    finder = SlotFinder(onec, step_minutes=5, appointment_minutes=15)
    assert finder.doctors(SEED_DAY) == [EFIMOVA, ISHAEVA, PETROVA]
    assert finder.free_times(SEED_DAY, EFIMOVA) == [time(15, 30), time(15, 35), time(15, 40), time(15, 45)]


def test_given_unknown_or_off_duty_doctor_when_asking_then_the_answer_says_so_and_lists_who_works(onec):
    finder = SlotFinder(onec)
    off = finder.free_times(SEED_DAY, PETROVA)
    assert isinstance(off, NotWorking)
    assert off.working == (EFIMOVA, ISHAEVA)
    assert EFIMOVA in no_such_doctor_text(off)
    assert "не работает 22.12.2021" in no_such_doctor_text(off)
    unknown = finder.day_of(SEED_DAY, "Иванов И.И.")
    assert isinstance(unknown, UnknownDoctor)
    assert unknown.code == "unknown_doctor"
    assert EFIMOVA in no_such_doctor_text(unknown)


def test_given_a_day_without_schedules_when_asking_then_no_doctors(onec):
    assert SlotFinder(onec).doctors(date(2022, 1, 10)) == []
    assert SlotFinder(onec).doctors(date(2021, 12, 25)) == []


def test_given_cache_ttl_when_asking_twice_then_schedules_read_once_until_it_expires(onec_emu, onec):
    clock = Clock()
    finder = SlotFinder(onec, cache_ttl=60, clock=clock)
    reset_requests(onec_emu)
    finder.free_times(SEED_DAY, EFIMOVA)
    first = requests_of(onec_emu)["counts"]
    sched = [k for k in first if "УстановкаГрафиковРаботы" in k]
    assert sched
    assert all(first[k] == 1 for k in sched)
    assert sum(v for k, v in first.items() if k.endswith("Document_Заявка")) == 1

    finder.free_times(SEED_DAY, EFIMOVA)
    second = requests_of(onec_emu)["counts"]
    assert all(second[k] == 1 for k in sched)  # cached
    assert sum(v for k, v in second.items() if k.endswith("Document_Заявка")) == 2  # never cached

    clock.now += 61
    finder.doctors(SEED_DAY)
    third = requests_of(onec_emu)["counts"]
    assert all(third[k] == 2 for k in sched)


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch):
    """The CLI configures logging onto the (captured, later closed) stderr; keep the test run's."""
    import structlog

    saved = structlog.get_config()

    def quiet(args, settings):
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__),
                            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    monkeypatch.setattr("amo1c_sync.commands.common.setup_logging", quiet)
    yield
    structlog.configure(**saved)


def _config(tmp_path, onec_emu):
    path = tmp_path / "sync.ini"
    path.write_text(f"[onec]\nbase_url = {onec_emu.url}\nusername = {onec_emu.username}\n"
                    f"password = {onec_emu.password}\n[logging]\nformat = console\nlevel = WARNING\n",
                    encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def test_given_the_cli_when_listing_doctors_and_times_then_seed_output(onec_emu, tmp_path, capsys):
    cfg = _config(tmp_path, onec_emu)
    assert cli_main(["--config", cfg, "slots", "22.12.2021"]) == 0
    assert capsys.readouterr().out.splitlines() == [EFIMOVA, ISHAEVA]
    assert cli_main(["--config", cfg, "slots", "2021-12-22", "--doctor", EFIMOVA]) == 0
    assert capsys.readouterr().out.splitlines()[:6] == ["8:15", "8:20", "8:25", "8:30", "8:35", "8:40"]
    assert cli_main(["--config", cfg, "slots", "22.12.2021", "--doctor", EFIMOVA, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["doctor"] == EFIMOVA
    assert data["times"][:2] == ["8:15", "8:20"]
    assert data["working_hours"] == [["8:15", "13:00"]]
    assert cli_main(["--config", cfg, "slots", "22.12.2021", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"date": "2021-12-22", "doctors": [EFIMOVA, ISHAEVA]}


def test_given_the_cli_when_bad_date_or_doctor_then_clear_error_and_exit_code(onec_emu, tmp_path, capsys):
    cfg = _config(tmp_path, onec_emu)
    assert cli_main(["--config", cfg, "slots", "31.02.2021"]) == 2
    assert "not a real date" in capsys.readouterr().err
    assert cli_main(["--config", cfg, "slots", "завтра"]) == 2
    assert "22.12.2021 or 2021-12-22" in capsys.readouterr().err
    assert cli_main(["--config", cfg, "slots", "22.12.2021", "--doctor", PETROVA]) == 1
    err = capsys.readouterr().err
    assert "не работает 22.12.2021" in err
    assert EFIMOVA in err
