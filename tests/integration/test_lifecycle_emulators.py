"""The emulators' parts the lifecycle needs: amoCRM pipelines and stages, and the 1C control API
acting as a clinic's administrator on a «Заявка» (raw HTTP, no gateway)."""

from __future__ import annotations

import pytest
import requests

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
    assert bad.status_code == 400
    assert "Запись к врачу: Неразобранное" in bad.text


# --- 1C: the administrator's actions on a «Заявка» ------------------------------------------------

@pytest.fixture
def onec():
    from amo1c_sync.onec.names import OneCNames

    with OneCEmulator(names=OneCNames(zayavka_state="Состояние")) as e:
        yield e


def _zayavka(onec, **body) -> dict:
    r = requests.post(onec.url + "/_sandbox/zayavki", json={"lead": 30000001, "doctor": "Ефимова Е.В.",
                                                           "start": "2021-12-22T09:05:00",
                                                           "end": "2021-12-22T09:20:00", **body}, timeout=5)
    r.raise_for_status()
    return r.json()


def _version(onec, ref) -> str:
    r = requests.get(f"{onec.url}/odata/standard.odata/Document_Заявка(guid'{ref}')",
                     params={"$format": "json", "$select": "DataVersion"},
                     auth=(onec.username.encode(), onec.password.encode()),
                     timeout=5)
    r.raise_for_status()
    return r.json()["DataVersion"]


def test_given_a_zayavka_when_the_administrator_moves_it_then_day_time_doctor_and_data_version_change(onec):
    ref = _zayavka(onec)["ref"]
    before = _version(onec, ref)
    r = requests.patch(f"{onec.url}/_sandbox/zayavki/{ref}",
                       json={"start": "2021-12-23T15:30:00", "doctor": "Ишаева М.И."}, timeout=5)
    assert r.status_code == 200
    z = r.json()
    assert (z["start"], z["end"], z["doctor"]) == ("2021-12-23T15:30:00", "2021-12-23T15:45:00", "Ишаева М.И.")
    assert _version(onec, ref) != before


@pytest.mark.parametrize(("action", "posted", "deletion_mark"), [
    ("delete", False, True), ("unpost", False, False), ("post", True, False)])
def test_given_a_zayavka_when_an_action_is_taken_then_it_shows_and_the_data_version_changes(
        onec, action, posted, deletion_mark):
    ref = _zayavka(onec)["ref"]
    before = _version(onec, ref)
    z = requests.post(f"{onec.url}/_sandbox/zayavki/{ref}/{action}", timeout=5).json()
    assert (z["posted"], z["deletion_mark"]) == (posted, deletion_mark)
    assert _version(onec, ref) != before


def test_given_a_status_attribute_when_the_state_is_set_then_the_list_and_odata_show_it(onec):
    ref = _zayavka(onec)["ref"]
    z = requests.patch(f"{onec.url}/_sandbox/zayavki/{ref}", json={"state": "Не пришел"}, timeout=5).json()
    assert z["state"] == "Не пришел"
    r = requests.get(f"{onec.url}/odata/standard.odata/Document_Заявка(guid'{ref}')",
                     params={"$format": "json", "$select": "Состояние"},
                     auth=(onec.username.encode(), onec.password.encode()),
                     timeout=5)
    assert r.json()["Состояние"] == "Не пришел"


def test_given_a_base_without_a_status_attribute_when_a_state_is_set_then_it_is_refused_clearly():
    with OneCEmulator() as e:
        ref = _zayavka(e)["ref"]
        r = requests.patch(f"{e.url}/_sandbox/zayavki/{ref}", json={"state": "Не пришел"}, timeout=5)
        assert r.status_code == 400
        assert "zayavka_state" in r.json()["error"]
        bad = requests.patch(f"{e.url}/_sandbox/zayavki/{ref}", json={"start": "завтра"}, timeout=5)
        assert bad.status_code == 400
        assert "start" in bad.json()["error"]


# --- 1C: the user's edits the drill makes (issue 14.3) ---------------------------------------------

def test_given_a_zayavka_when_its_lead_number_is_corrected_or_emptied_then_the_lists_follow(onec):
    ref = _zayavka(onec, lead="3000000l")["ref"]
    service = requests.post(onec.url + "/_sandbox/services", json={"zayavka_ref": ref, "amount": "100"},
                            timeout=5).json()["ref"]
    before = _version(onec, ref)
    z = requests.patch(f"{onec.url}/_sandbox/zayavki/{ref}", json={"lead": 30000001}, timeout=5).json()
    assert z["lead"] == "30000001"
    assert _version(onec, ref) != before
    listed = {s["ref"]: s for s in requests.get(onec.url + "/_sandbox/services", timeout=5).json()}
    assert listed[service]["lead"] == "30000001"
    assert requests.patch(f"{onec.url}/_sandbox/zayavki/{ref}", json={"lead": ""}, timeout=5).json()["lead"] == ""


def test_given_a_service_when_its_date_moves_or_it_is_deleted_outright_then_the_list_shows_it(onec):
    zref = _zayavka(onec)["ref"]
    ref = requests.post(onec.url + "/_sandbox/services", json={"zayavka_ref": zref, "amount": "100"},
                        timeout=5).json()["ref"]
    moved = requests.patch(f"{onec.url}/_sandbox/services/{ref}", json={"date": "2021-12-20T10:00:00"}, timeout=5)
    assert moved.status_code == 200
    assert (moved.json()["date"], moved.json()["posted"]) == ("2021-12-20T10:00:00", True)
    assert requests.patch(f"{onec.url}/_sandbox/services/{ref}", json={"date": "вчера"}, timeout=5).status_code == 400
    assert requests.delete(f"{onec.url}/_sandbox/services/{ref}", timeout=5).status_code == 204
    assert ref not in {s["ref"] for s in requests.get(onec.url + "/_sandbox/services", timeout=5).json()}
    assert requests.delete(f"{onec.url}/_sandbox/services/{ref}", timeout=5).status_code == 404
