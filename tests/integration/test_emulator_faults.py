"""Both emulators: faults that strike after the request was carried out, and one request log."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator


@pytest.fixture
def amo():
    with AmoCRMEmulator(rate_limit=1000) as emu:
        yield emu


@pytest.fixture
def onec():
    with OneCEmulator() as emu:
        yield emu


def bearer(amo) -> dict:
    return {"Authorization": f"Bearer {amo.issue_long_lived_token()}"}


def patch_price(amo, lead_id: int, price: int, **kw) -> requests.Response:
    return requests.patch(f"{amo.url}/api/v4/leads", json=[{"id": lead_id, "price": price}],
                          headers=bearer(amo), timeout=kw.pop("timeout", 5), **kw)


def arm(emu, **fault) -> None:
    requests.post(f"{emu.url}/_sandbox/faults", json=fault, timeout=5).raise_for_status()


def create_client(onec, name: str) -> requests.Response:
    return requests.post(f"{onec.odata_url}Catalog_Клиенты?$format=json", json={"Description": name},
                         auth=(onec.username.encode(), onec.password.encode()), timeout=5)


def test_given_an_after_drop_on_patch_when_amocrm_is_written_then_the_write_stays_and_the_answer_is_lost(amo):
    lead = amo.create_lead("Пациент")
    arm(amo, count=1, phase="after", drop=True, path_prefix="/api/v4/leads", method="PATCH")

    with pytest.raises(requests.ConnectionError):
        patch_price(amo, lead, 200)

    assert amo.lead(lead)["price"] == 200
    assert patch_price(amo, lead, 300).status_code == 200  # the fault struck once
    [dropped, ok] = [e for e in amo.requests()["log"] if e["method"] == "PATCH"]
    assert (dropped["status"], dropped["fault"]) == (None, "after")
    assert ok["status"] == 200


def test_given_an_after_status_on_create_when_1c_is_written_then_the_object_exists_and_the_answer_is_502(onec):
    arm(onec, count=1, phase="after", status=502, path_prefix="/odata/standard.odata/Catalog_Клиенты")

    answer = create_client(onec, "Иванова И.И.")

    assert answer.status_code == 502
    assert "Apache" in answer.text
    assert [c["name"] for c in onec.clients()].count("Иванова И.И.") == 1


def test_given_a_before_fault_when_it_strikes_then_nothing_is_carried_out(onec):
    arm(onec, count=1, status=503, path_prefix="/odata/standard.odata/Catalog_Клиенты")

    assert create_client(onec, "Петров П.П.").status_code == 503
    assert "Петров П.П." not in [c["name"] for c in onec.clients()]


def test_given_an_after_delay_when_patching_then_amocrm_has_the_write_while_the_answer_is_held(amo):
    lead = amo.create_lead("Пациент")
    arm(amo, count=1, phase="after", delay_ms=1500, path_prefix="/api/v4/leads", method="PATCH")
    answer: dict = {}
    sender = threading.Thread(target=lambda: answer.update(r=patch_price(amo, lead, 250)))
    started = time.monotonic()
    sender.start()

    deadline = time.monotonic() + 5
    while amo.lead(lead)["price"] != 250 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert amo.lead(lead)["price"] == 250
    assert "r" not in answer
    sender.join(10)
    assert answer["r"].status_code == 200
    assert time.monotonic() - started >= 1.5


def test_given_a_fault_phase_that_does_not_exist_when_armed_then_400_names_the_phases(amo):
    r = requests.post(f"{amo.url}/_sandbox/faults", json={"phase": "during"}, timeout=5)
    assert r.status_code == 400
    assert "before, after" in r.json()["error"]


def test_given_traffic_when_the_request_log_is_read_then_both_emulators_answer_the_same_shape(amo, onec):
    t0 = time.time()
    patch_price(amo, amo.create_lead("Пациент"), 1)
    create_client(onec, "Сидорова С.С.")
    t1 = time.time()

    amo_log, onec_log = amo.requests(), onec.requests()

    assert set(amo_log) == set(onec_log) == {"counts", "total", "by_status", "max_per_second", "log"}
    for log in (amo_log, onec_log):
        [entry] = log["log"]
        assert set(entry) == {"seq", "at", "method", "path", "target", "bytes", "status", "fault"}
        assert t0 <= entry["at"] <= t1
        assert entry["fault"] is None
        assert log["max_per_second"] == 1
    assert amo_log["log"][0]["status"] == 200
    assert onec_log["log"][0]["status"] == 201
    assert onec_log["log"][0]["path"] == "/odata/standard.odata/Catalog_Клиенты"
    assert "%D0%9A" in onec_log["log"][0]["target"]  # the raw target, percent-encoded as sent
