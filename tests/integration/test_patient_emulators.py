"""F8 in the emulators, over HTTP: amoCRM contacts (the lead's main contact, PHONE with its enum
codes, the «Клиент 1С» field written by PATCH) and 1C clients with their contact information."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
import requests

from amo1c_sync.sandbox import seed
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator

ANNA = {"name": "Иванова Анна", "phones": ["8 (911) 123-45-67", {"value": "+7 495 123-45-67", "enum": "MOB"}]}
KEY = "6f1c3a52-0d1e-4f0a-9b7e-1a2b3c4d5e6f"


@pytest.fixture
def amo():
    with AmoCRMEmulator(rate_limit=1000) as e:
        yield e


@pytest.fixture
def api(amo):
    token = requests.post(amo.url + "/_sandbox/tokens/long_lived", timeout=5).json()["token"]
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    yield s
    s.close()


@pytest.fixture
def onec():
    with OneCEmulator() as e:
        yield e


@pytest.fixture
def odata(onec):
    s = requests.Session()
    login = f"{onec.username}:{onec.password}".encode("utf-8")  # 1C takes a UTF-8 login
    s.headers["Authorization"] = "Basic " + base64.b64encode(login).decode("ascii")
    yield s
    s.close()


def new_lead(amo, **body) -> int:
    r = requests.post(amo.url + "/_sandbox/leads", json={"name": "Запись", **body}, timeout=5)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def contact_field_id(amo, api, name: str) -> int:
    fields = api.get(amo.url + "/api/v4/contacts/custom_fields", timeout=5).json()["_embedded"]["custom_fields"]
    return next(f["id"] for f in fields if f["name"] == name)


# --- amoCRM ---------------------------------------------------------------------------------------

def test_given_a_lead_with_a_contact_when_read_with_contacts_then_main_contact_and_its_phones(amo, api):
    lid = new_lead(amo, contact=ANNA)
    lead = api.get(amo.url + f"/api/v4/leads/{lid}", params={"with": "contacts"}, timeout=5).json()
    [link] = lead["_embedded"]["contacts"]
    assert link["is_main"] is True
    assert link["_links"]["self"]["href"].endswith(f"/api/v4/contacts/{link['id']}")
    page = api.get(amo.url + "/api/v4/contacts", params={"filter[id][]": [link["id"]]}, timeout=5).json()
    [contact] = page["_embedded"]["contacts"]
    assert contact["name"] == "Иванова Анна"
    [phone] = [f for f in contact["custom_fields_values"] if f["field_code"] == "PHONE"]
    assert phone["field_type"] == "multitext"
    assert [(v["value"], v["enum_code"]) for v in phone["values"]] == [
        ("8 (911) 123-45-67", "WORK"), ("+7 495 123-45-67", "MOB")]
    assert all(isinstance(v["enum_id"], int) for v in phone["values"])


def test_given_leads_without_with_contacts_when_listed_then_no_contacts_embedded(amo, api):
    lid = new_lead(amo, contact=ANNA)
    lead = api.get(amo.url + f"/api/v4/leads/{lid}", timeout=5).json()
    assert "contacts" not in lead["_embedded"]


def test_given_a_lead_with_two_contacts_when_read_then_only_the_first_is_main(amo, api):
    lid = new_lead(amo, contacts=[ANNA, {"name": "Иванов Пётр", "phones": ["+7 911 765-43-21"]}])
    links = api.get(amo.url + "/api/v4/leads", params={"with": "contacts", "filter[id][]": lid},
                    timeout=5).json()["_embedded"]["leads"][0]["_embedded"]["contacts"]
    assert [c["is_main"] for c in links] == [True, False]
    view = requests.get(amo.url + f"/_sandbox/leads/{lid}", timeout=5).json()
    assert view["contact"]["name"] == "Иванова Анна"
    assert len(view["contacts"]) == 2


def test_given_two_leads_of_one_patient_when_linked_by_id_then_one_contact(amo, api):
    first = new_lead(amo, contact=ANNA)
    cid = requests.get(amo.url + f"/_sandbox/leads/{first}", timeout=5).json()["contact"]["id"]
    second = new_lead(amo, contact={"id": cid})
    assert requests.get(amo.url + f"/_sandbox/leads/{second}", timeout=5).json()["contact"]["id"] == cid


def test_given_several_contacts_when_filtered_by_ids_then_only_those_and_204_for_none(amo, api):
    ids = [requests.post(amo.url + "/_sandbox/contacts", json={"name": f"Пациент {i}"}, timeout=5).json()["id"]
           for i in range(3)]
    got = api.get(amo.url + "/api/v4/contacts", params={"filter[id][]": [ids[0], ids[2]]}, timeout=5).json()
    assert [c["id"] for c in got["_embedded"]["contacts"]] == [ids[0], ids[2]]
    assert api.get(amo.url + "/api/v4/contacts", params={"filter[id][]": [1]}, timeout=5).status_code == 204
    assert api.get(amo.url + "/api/v4/contacts/1", timeout=5).status_code == 204


def test_given_the_client_key_field_when_patched_then_the_contact_carries_it_and_phones_stay(amo, api):
    lid = new_lead(amo, contact=ANNA)
    cid = requests.get(amo.url + f"/_sandbox/leads/{lid}", timeout=5).json()["contact"]["id"]
    fid = contact_field_id(amo, api, "Клиент 1С")
    r = api.patch(amo.url + "/api/v4/contacts", timeout=5,
                  json=[{"id": cid, "custom_fields_values": [{"field_id": fid, "values": [{"value": KEY}]}]}])
    assert r.status_code == 200
    assert r.json()["_embedded"]["contacts"][0]["id"] == cid
    view = requests.get(amo.url + f"/_sandbox/leads/{lid}", timeout=5).json()["contact"]
    assert view["fields"] == {"Клиент 1С": KEY}
    assert view["phones"] == ["8 (911) 123-45-67", "+7 495 123-45-67"]


def test_given_a_bad_contact_patch_when_sent_then_400_per_item_and_nothing_written(amo, api):
    lid = new_lead(amo, contact=ANNA)
    cid = requests.get(amo.url + f"/_sandbox/leads/{lid}", timeout=5).json()["contact"]["id"]
    fid = contact_field_id(amo, api, "Клиент 1С")
    r = api.patch(amo.url + "/api/v4/contacts", timeout=5, json=[
        {"id": cid, "custom_fields_values": [{"field_id": fid, "values": [{"value": KEY}]}]},
        {"id": 999, "custom_fields_values": [{"field_code": "PHONE",
                                               "values": [{"value": "1", "enum_code": "CELL"}]}]}])
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/problem+json"
    [errors] = r.json()["validation-errors"]
    assert errors["request_id"] == "1"
    assert [(e["code"], e["path"]) for e in errors["errors"]] == [
        ("NotFound", "id"), ("NotSupportedChoice", "custom_fields_values.0.values.0.enum_code")]
    assert requests.get(amo.url + f"/_sandbox/contacts/{cid}", timeout=5).json()["fields"] == {}


def test_given_the_contact_fields_when_listed_then_phone_has_its_code_and_enum_codes(amo, api):
    fields = api.get(amo.url + "/api/v4/contacts/custom_fields", timeout=5).json()["_embedded"]["custom_fields"]
    phone = next(f for f in fields if f["code"] == "PHONE")
    assert phone["type"] == "multitext"
    assert phone["entity_type"] == "contacts"
    assert [e["value"] for e in phone["enums"]] == ["WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER"]


def test_given_a_phone_of_an_unknown_kind_when_a_person_adds_it_then_400_names_the_kinds(amo):
    r = requests.post(amo.url + "/_sandbox/contacts", timeout=5,
                      json={"name": "Иванова", "phones": [{"value": "1", "enum": "CELL"}]})
    assert r.status_code == 400
    assert "WORK, WORKDD, MOB, FAX, HOME, OTHER" in r.json()["detail"]


# --- 1C -------------------------------------------------------------------------------------------

def odata_get(onec, odata, resource: str, **params):
    r = odata.get(onec.odata_url + quote(resource, safe="()'"), params={"$format": "json", **params}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["value"]


def test_given_a_client_entered_with_phones_when_searched_by_digits_then_its_line_is_found(onec, odata):
    r = requests.post(onec.url + "/_sandbox/clients", timeout=5,
                      json={"name": "Иванова Анна", "phones": ["+7 (911) 123-45-67", "8 (495) 123-45-67"]})
    assert r.status_code == 201
    client = r.json()
    lines = odata_get(onec, odata, "Catalog_Клиенты_КонтактнаяИнформация",
                      **{"$filter": "НомерТелефона eq '79111234567' or НомерТелефона eq '89111234567'"})
    assert [(x["Ref_Key"], x["LineNumber"], x["Тип"], x["Представление"]) for x in lines] == [
        (client["ref"], "1", "Телефон", "+7 (911) 123-45-67")]
    assert lines[0]["НомерТелефонаБезКодов"] == "9111234567"
    [city] = odata_get(onec, odata, "Catalog_Клиенты_КонтактнаяИнформация",
                       **{"$filter": "НомерТелефона eq '74951234567'"})  # typed with the trunk 8
    assert (city["LineNumber"], city["НомерТелефонаБезКодов"]) == ("2", "4951234567")
    listed = {c["name"]: c for c in requests.get(onec.url + "/_sandbox/clients", timeout=5).json()}
    assert listed["Иванова Анна"]["phones"] == ["+7 (911) 123-45-67", "8 (495) 123-45-67"]
    assert listed["Иванова Анна"]["code"] == client["code"]
    assert listed[seed.DEFAULT_CLIENT]["phones"] == []


def test_given_a_client_posted_over_odata_with_contact_lines_when_read_then_lines_kept_as_sent(onec, odata):
    body = {"Description": "Петров Пётр", "КонтактнаяИнформация": [
        {"Тип": "Телефон", "Представление": "+7 911 765-43-21", "НомерТелефона": "79117654321"}]}
    r = odata.post(onec.odata_url + quote("Catalog_Клиенты"), params={"$format": "json"}, timeout=5,
                   data=json.dumps(body, ensure_ascii=False).encode("utf-8"))
    assert r.status_code == 201, r.text
    [line] = r.json()["КонтактнаяИнформация"]
    assert (line["LineNumber"], line["НомерТелефона"], line["Представление"]) == ("1", "79117654321",
                                                                                 "+7 911 765-43-21")
    found = odata_get(onec, odata, "Catalog_Клиенты_КонтактнаяИнформация",
                      **{"$filter": "НомерТелефона eq '79117654321'", "$select": "Ref_Key"})
    assert found == [{"Ref_Key": r.json()["Ref_Key"]}]


def test_given_a_client_marked_for_deletion_when_entered_then_listed_so(onec, odata):
    ref = requests.post(onec.url + "/_sandbox/clients", timeout=5,
                        json={"name": "Иванова Анна", "phones": ["+7 911 123-45-67"],
                              "deletion_mark": True}).json()["ref"]
    r = odata.get(onec.odata_url + quote(f"Catalog_Клиенты(guid'{ref}')", safe="()'"),
                  params={"$format": "json", "$select": "DeletionMark"}, timeout=5)
    assert r.json()["DeletionMark"] is True
    listed = {c["ref"]: c for c in requests.get(onec.url + "/_sandbox/clients", timeout=5).json()}
    assert listed[ref]["deletion_mark"] is True


def test_given_a_client_without_a_name_when_entered_then_400(onec):
    r = requests.post(onec.url + "/_sandbox/clients", json={"name": " ", "phones": []}, timeout=5)
    assert r.status_code == 400
    assert "name" in r.json()["error"]


def test_given_the_metadata_when_read_then_the_clients_contact_section_is_described(onec, odata):
    xml = odata.get(onec.odata_url + "$metadata", timeout=5).text
    assert 'EntitySet Name="Catalog_Клиенты_КонтактнаяИнформация"' in xml
    assert 'Property Name="НомерТелефона" Type="Edm.String"' in xml
    assert ('Name="КонтактнаяИнформация" '
            'Type="Collection(StandardODATA.Catalog_Клиенты_КонтактнаяИнформация_RowType)"') in xml


def test_given_a_zayavka_when_listed_then_it_carries_its_client_ref(onec):
    requests.post(onec.url + "/_sandbox/zayavki", timeout=5, json={
        "lead": 30000001, "doctor": "Ефимова Е.В.", "start": "2021-12-22T09:05:00"}).raise_for_status()
    [z] = requests.get(onec.url + "/_sandbox/zayavki", timeout=5).json()
    assert z["client"] == seed.DEFAULT_CLIENT
    assert z["client_ref"] == seed.DEFAULT_CLIENT_REF
