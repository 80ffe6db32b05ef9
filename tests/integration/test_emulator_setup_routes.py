"""What `setup` needs from the emulators: amoCRM creates lead fields (POST custom_fields), 1C can
start without the two default items, and both answer an index at /_sandbox/."""

from __future__ import annotations

import requests
import pytest

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator


@pytest.fixture
def amo():
    with AmoCRMEmulator(rate_limit=1000, lead_fields=(), long_lived_token="setup-routes-token") as e:
        yield e


def _post_fields(amo, body):
    return requests.post(amo.url + "/api/v4/leads/custom_fields", json=body, timeout=5,
                         headers={"Authorization": "Bearer setup-routes-token"})


def test_given_an_account_without_fields_when_fields_are_posted_then_they_exist_with_their_types(amo):
    r = _post_fields(amo, [{"name": "Врач", "type": "select", "enums": [{"value": "Ефимова Е.В.", "sort": 10}]},
                           {"name": "Сумма1С", "type": "numeric"}])
    assert r.status_code == 200, r.text
    created = r.json()["_embedded"]["custom_fields"]
    assert [(f["name"], f["type"]) for f in created] == [("Врач", "select"), ("Сумма1С", "numeric")]
    assert [e["value"] for e in created[0]["enums"]] == ["Ефимова Е.В."]
    assert {f["name"] for f in amo.fields()} == {"Врач", "Сумма1С"}


@pytest.mark.parametrize(("item", "path"), [
    ({"name": "", "type": "text"}, "name"),
    ({"name": "X", "type": "bogus"}, "type"),
    ({"name": "X", "type": "text", "enums": [{"value": "a"}]}, "enums"),
])
def test_given_a_bad_field_when_posted_then_400_names_it_and_nothing_is_created(amo, item, path):
    r = _post_fields(amo, [{"name": "Хорошее", "type": "text"}, item])
    assert r.status_code == 400
    errors = r.json()["validation-errors"]
    assert errors[0]["request_id"] == "1"
    assert errors[0]["errors"][0]["path"] == path
    assert amo.fields() == []


def test_given_no_defaults_when_the_1c_emulator_starts_then_the_two_default_items_are_missing():
    with OneCEmulator(seed_defaults=False) as onec:
        names = [c["name"] for c in onec.clients()]
        assert "Клиент из AmoCRM" not in names
        assert not onec.rows(onec.names.nomenclature)
        assert onec.rows(onec.names.doctors)  # the rest of the seed is there


def test_given_either_emulator_when_its_control_root_is_opened_then_an_index_lists_the_routes(amo):
    index = requests.get(amo.url + "/_sandbox/", timeout=5).json()
    assert index["emulator"] == "AmoCRMEmulator"
    assert any(r["path"] == "/_sandbox/leads" for r in index["routes"])
    with OneCEmulator() as onec:
        index = requests.get(onec.url + "/_sandbox/", timeout=5).json()
    assert index["emulator"] == "OneCEmulator"
    assert any(r["path"] == "/_sandbox/services" for r in index["routes"])
