"""The emulators' parts the lifecycle needs: amoCRM pipelines and stages, and the 1C control API
acting as a clinic's administrator on a «Заявка» (raw HTTP, no gateway)."""

from __future__ import annotations

import requests
import pytest

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator
from tests.support.e2e import TOKEN

STAGES = ["Неразобранное", "Новая заявка", "Записан на приём", "Оплачено", "Отменена", "Не пришёл",
          "Успешно реализовано", "Закрыто и не реализовано"]


@pytest.fixture
def amo():
    with AmoCRMEmulator(rate_limit=1000, long_lived_token=TOKEN) as e:
        e.http = requests.Session()
        e.http.headers["Authorization"] = f"Bearer {TOKEN}"
        yield e


def _listing(amo) -> dict:
    r = amo.http.get(amo.url + "/api/v4/leads/pipelines", timeout=5)
    assert r.status_code == 200
    return r.json()


def _stage_id(listing, pipeline, stage) -> tuple[int, int]:
    p = next(p for p in listing["_embedded"]["pipelines"] if p["name"] == pipeline)
    return p["id"], next(s["id"] for s in p["_embedded"]["statuses"] if s["name"] == stage)


def test_given_the_sandbox_account_when_pipelines_are_listed_then_the_clinic_pipeline_has_its_stages(amo):
    listing = _listing(amo)
    (main,) = [p for p in listing["_embedded"]["pipelines"] if p["is_main"]]
    assert main["name"] == "Запись к врачу"
    statuses = main["_embedded"]["statuses"]
    assert [s["name"] for s in statuses] == STAGES
    closed = {s["id"]: s["is_editable"] for s in statuses if s["id"] in (142, 143)}
    assert closed == {142: False, 143: False}
    assert all(s["pipeline_id"] == main["id"] for s in statuses)


def test_given_a_new_lead_when_read_then_it_is_in_the_first_stage_and_the_control_api_names_it(amo):
    lid = requests.post(amo.url + "/_sandbox/leads", json={"name": "x"}, timeout=5).json()["id"]
    api = amo.http.get(f"{amo.url}/api/v4/leads/{lid}", timeout=5).json()
    assert (api["pipeline_id"], api["status_id"]) == _stage_id(_listing(amo), "Запись к врачу", "Новая заявка")
    view = requests.get(f"{amo.url}/_sandbox/leads/{lid}", timeout=5).json()
    assert (view["pipeline"], view["status"]) == ("Запись к врачу", "Новая заявка")


def test_given_a_lead_when_the_api_patches_its_stage_then_the_lead_is_there(amo):
    lid = requests.post(amo.url + "/_sandbox/leads", json={"name": "x"}, timeout=5).json()["id"]
    pid, sid = _stage_id(_listing(amo), "Запись к врачу", "Отменена")
    r = amo.http.patch(amo.url + "/api/v4/leads", json=[{"id": lid, "status_id": sid}], timeout=5)
    assert r.status_code == 200
    view = requests.get(f"{amo.url}/_sandbox/leads/{lid}", timeout=5).json()
    assert (view["pipeline_id"], view["status"]) == (pid, "Отменена")
    r = amo.http.patch(amo.url + "/api/v4/leads", json=[{"id": lid, "status_id": 142}], timeout=5)
    assert requests.get(f"{amo.url}/_sandbox/leads/{lid}", timeout=5).json()["status"] == "Успешно реализовано"


def test_given_a_stage_of_another_pipeline_when_patched_then_the_whole_batch_is_refused(amo):
    lid = requests.post(amo.url + "/_sandbox/leads", json={"name": "x"}, timeout=5).json()["id"]
    _, other = _stage_id(_listing(amo), "Воронка", "Переговоры")
    r = amo.http.patch(amo.url + "/api/v4/leads", json=[{"id": lid, "status_id": other, "name": "y"}], timeout=5)
    assert r.status_code == 400
    assert r.json()["validation-errors"][0]["errors"][0]["path"] == "status_id"
    view = requests.get(f"{amo.url}/_sandbox/leads/{lid}", timeout=5).json()
    assert (view["name"], view["status"]) == ("x", "Новая заявка")


def test_given_the_control_api_when_a_person_sets_a_stage_by_name_then_the_lead_moves(amo):
    lid = requests.post(amo.url + "/_sandbox/leads", json={"name": "x", "status": "Воронка / Переговоры"},
                        timeout=5).json()["id"]
    assert requests.get(f"{amo.url}/_sandbox/leads/{lid}", timeout=5).json()["pipeline"] == "Воронка"
    r = requests.patch(f"{amo.url}/_sandbox/leads/{lid}", json={"status": "Не пришёл"}, timeout=5)
    assert (r.json()["pipeline"], r.json()["status"]) == ("Запись к врачу", "Не пришёл")
    bad = requests.patch(f"{amo.url}/_sandbox/leads/{lid}", json={"status": "Нет такого"}, timeout=5)
    assert bad.status_code == 400 and "Запись к врачу: Неразобранное" in bad.text
