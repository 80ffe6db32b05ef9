"""The 1C emulator speaks the standard OData interface as 1C does: raw HTTP and a third-party client."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from urllib.parse import quote

import pytest
import requests

from amo1c_sync.sandbox import seed
from amo1c_sync.sandbox.onec_emulator import OneCEmulator


def _basic(user: str, password: str) -> dict:
    import base64
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def emu():
    with OneCEmulator() as e:
        yield e


@pytest.fixture
def http(emu):
    s = requests.Session()
    s.headers.update(_basic(emu.username, emu.password))
    yield s
    s.close()


def url(emu, resource: str, query: str = "$format=json") -> str:
    safe = "()/$=',"
    return f"{emu.odata_url}{quote(resource, safe=safe)}?{query}"


def test_given_no_credentials_when_requesting_then_401_with_basic_challenge(emu):
    r = requests.get(url(emu, "Catalog_Сотрудники"))
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    r = requests.get(url(emu, "Catalog_Сотрудники"), headers=_basic(emu.username, "x"))
    assert r.status_code == 401


def test_given_a_write_without_format_when_sent_then_406_odata_error(emu, http):
    r = http.post(f"{emu.odata_url}Catalog_Клиенты", json={"Description": "X"},
                  headers={"Accept": "application/atom+xml"})
    assert r.status_code == 406
    assert "$format=json" in r.json()["odata.error"]["message"]["value"]


def test_given_a_prefix_publication_path_when_requesting_then_it_is_served_too(emu, http):
    r = http.get(f"{emu.url}/clinic/odata/standard.odata/Catalog_Сотрудники?$format=json")
    assert r.status_code == 200
    assert len(r.json()["value"]) == 3
    assert r.json()["odata.metadata"].endswith("/clinic/odata/standard.odata/$metadata#Catalog_Сотрудники")


def test_given_select_orderby_top_skip_when_querying_then_1c_paging_semantics(emu, http):
    r = http.get(url(emu, "Catalog_Сотрудники", "$format=json&$select=Description,Code&$orderby=Description desc"
                                                "&$top=2&$skip=1"))
    # Петрова > Ишаева > Ефимова; the first is skipped
    assert r.json()["value"] == [{"Description": "Ишаева М.И.", "Code": "000000003"},
                                 {"Description": "Ефимова Е.В.", "Code": "000000001"}]


def test_given_several_orderby_keys_when_querying_tabular_lines_then_sorted_by_each(emu, http):
    flt = quote("Дата eq datetime'2021-12-13T00:00:00'")
    r = http.get(url(emu, "Document_УстановкаГрафиковРаботы_ГрафикиРаботы",
                     f"$format=json&$filter={flt}&$orderby=ВремяНачала desc,LineNumber asc"))
    rows = r.json()["value"]
    assert [row["ВремяНачала"] for row in rows] == ["0001-01-01T08:15:00", "0001-01-01T08:15:00",
                                                     "0001-01-01T08:00:00"]
    assert int(rows[0]["LineNumber"]) < int(rows[1]["LineNumber"])
    assert all(row["Ref_Key"] == seed.SCHEDULE_REF for row in rows)


def test_given_a_schedule_document_when_read_by_key_then_its_tabular_section_is_an_array(emu, http):
    r = http.get(url(emu, f"Document_УстановкаГрафиковРаботы(guid'{seed.SCHEDULE_REF}')"))
    doc = r.json()
    assert (doc["Number"], doc["Date"], doc["МесяцГрафика"], doc["Posted"]) == (
        emu.number(6, "Document_УстановкаГрафиковРаботы"), "2021-12-08T00:00:00", "2021-12-01T00:00:00", True)
    assert doc["odata.metadata"].endswith("#Document_УстановкаГрафиковРаботы/@Element")
    line = doc["ГрафикиРаботы"][0]
    assert set(line) == {"Ref_Key", "LineNumber", "Сотрудник_Key", "Сотрудник@navigationLinkUrl", "Дата",
                         "ВремяНачала", "ВремяОкончания"}
    assert line["LineNumber"] == "1"  # Edm.Int64, sent as a JSON string


@pytest.mark.parametrize("flt", ["Description eq 'O'Brien'", "Description eq", "(Code eq '1'",
                                 "Нет eq 1", "Ref_Key eq guid'123'"])
def test_given_a_broken_filter_when_querying_then_400_with_odata_error_code_14(emu, http, flt):
    r = http.get(url(emu, "Catalog_Клиенты", f"$format=json&$filter={quote(flt)}"))
    assert r.status_code == 400
    err = r.json()["odata.error"]
    assert err["code"] == "14"
    assert err["message"]["lang"] == "ru"
    assert err["message"]["value"]


def test_given_a_new_document_when_created_patched_and_posted_then_1c_rules_hold(emu, http):
    body = {"Date": "2021-12-20T10:00:00", "Сотрудник_Key": seed.DOCTOR_REFS["Ишаева М.И."],
            "Клиент_Key": seed.DEFAULT_CLIENT_REF, "ДатаПриема": "2021-12-22T00:00:00",
            "ВремяНачала": "0001-01-01T09:05:00", "НомерAmoCRM": "30000001"}
    r = http.post(url(emu, "Document_Заявка"), json=body)
    assert r.status_code == 201
    doc = r.json()
    assert doc["Number"] == emu.number(219)
    assert doc["Posted"] is False
    assert doc["DeletionMark"] is False
    assert doc["ВремяОкончания"] == "0001-01-01T00:00:00"
    assert doc["Номенклатура_Key"] == "00000000-0000-0000-0000-000000000000"
    ref, v1 = doc["Ref_Key"], doc["DataVersion"]
    key = f"Document_Заявка(guid'{ref}')"
    r = http.patch(url(emu, key), json={"Posted": True})
    assert r.status_code == 400
    assert "Posted" in r.json()["odata.error"]["message"]["value"]
    r = http.patch(url(emu, key), json={"ВремяОкончания": "0001-01-01T09:20:00"})
    assert r.status_code == 200
    assert r.json()["ВремяОкончания"] == "0001-01-01T09:20:00"
    v2 = r.json()["DataVersion"]
    r = http.post(url(emu, key + "/Post", "PostingModeOperational=false&$format=json"))
    assert r.status_code == 200
    r = http.get(url(emu, key, "$format=json&$select=Posted,DataVersion"))
    assert r.json()["Posted"] is True
    assert len({v1, v2, r.json()["DataVersion"]}) == 3
    http.post(url(emu, key + "/Unpost")).raise_for_status()
    http.patch(url(emu, key), json={"DeletionMark": True}).raise_for_status()
    r = http.post(url(emu, key + "/Post", "PostingModeOperational=false&$format=json"))
    assert r.status_code == 500
    assert r.json()["odata.error"]["message"]["value"]
    r = http.get(url(emu, "Document_Заявка(guid'11111111-2222-3333-4444-555555555555')"))
    assert r.status_code == 404
    assert "odata.error" in r.json()


def test_given_a_bad_body_when_creating_then_400(emu, http):
    r = http.post(url(emu, "Document_Заявка"), json={"НетТакого": 1})
    assert r.status_code == 400
    r = http.post(url(emu, "Document_Заявка"), json={"ДатаПриема": "22.12.2021"})
    assert r.status_code == 400
    r = http.post(url(emu, "Document_УстановкаГрафиковРаботы_ГрафикиРаботы"), json={})
    assert r.status_code == 400
    assert r.json()["odata.error"]["code"] == "13"


def test_given_a_service_with_a_base_when_read_then_composite_reference_and_decimal_amount(emu, http):
    z = requests.post(f"{emu.url}/_sandbox/zayavki", json={"lead": 30000001, "doctor": "Ефимова Е.В.",
                                                           "start": "2021-12-22T09:05:00",
                                                           "end": "2021-12-22T09:20:00"}).json()
    assert z["number"] == emu.number(219)
    s = requests.post(f"{emu.url}/_sandbox/services", json={"lead": 30000001, "amount": "150.00"}).json()
    r = http.get(url(emu, f"Document_ОказаниеУслуг(guid'{s['ref']}')"))
    doc = json.loads(r.content, parse_float=Decimal)
    assert doc["ДокументОснование"] == z["ref"]
    assert doc["ДокументОснование_Type"] == "StandardODATA.Document_Заявка"
    assert doc["СуммаДокумента"] == 150
    assert doc["Posted"] is True
    [line] = doc["Работы"]
    assert (line["Номенклатура_Key"], line["Количество"], line["Сумма"]) == (seed.DEFAULT_NOMENCLATURE_REF, 1, 150)
    listed = requests.get(f"{emu.url}/_sandbox/zayavki", params={"lead": "30000001"}).json()
    assert listed == [{"ref": z["ref"], "number": emu.number(219), "client": "Клиент из AmoCRM",
                       "doctor": "Ефимова Е.В.", "start": "2021-12-22T09:05:00", "end": "2021-12-22T09:20:00",
                       "lead": "30000001", "posted": True, "deletion_mark": False,
                       "client_ref": seed.DEFAULT_CLIENT_REF}]


def test_given_single_typed_mode_when_reading_a_service_then_only_the_key_property_exists():
    with OneCEmulator(base_ref_mode="single") as emu:
        s = requests.post(f"{emu.url}/_sandbox/services", json={"zayavka_ref": None, "amount": "5"}).json()
        r = requests.get(f"{emu.odata_url}Document_ОказаниеУслуг(guid'{s['ref']}')?$format=json",
                         headers=_basic(emu.username, emu.password))
        doc = r.json()
        assert doc["ДокументОснование_Key"] == "00000000-0000-0000-0000-000000000000"
        assert "ДокументОснование" not in doc
        assert "ДокументОснование_Type" not in doc


def test_given_control_api_when_faults_and_requests_are_used_then_they_count(emu, http):
    requests.post(f"{emu.url}/_sandbox/faults", json={"count": 1, "status": 503}).raise_for_status()
    assert http.get(url(emu, "Catalog_Клиенты")).status_code == 503
    assert http.get(url(emu, "Catalog_Клиенты")).status_code == 200
    stats = requests.get(f"{emu.url}/_sandbox/requests").json()
    assert stats["counts"] == {"GET /odata/standard.odata/Catalog_Клиенты": 2}
    assert stats["by_status"] == {"503": 1, "200": 1}
    assert requests.delete(f"{emu.url}/_sandbox/requests").json()["total"] == 0
    assert requests.get(f"{emu.url}/_sandbox/clients").json() == [
        {"ref": seed.DEFAULT_CLIENT_REF, "code": "000000001", "name": "Клиент из AmoCRM", "deletion_mark": False,
         "phones": []}]


# --- a third-party 1C OData client (PyPI: python-1c-odata) ---------------------------------------
def test_given_a_third_party_1c_client_when_reading_and_writing_then_the_emulator_serves_it(emu):
    import python_1c_odata as p1c  # a declared test dependency: fail loudly when missing

    async def scenario():
        async with p1c.Infobase(emu.url, "clinic", emu.username, emu.password) as ib:
            doctors = p1c.Catalog(ib, "Сотрудники")
            page = await doctors.query(select=["Ref_Key", "Description"],
                                       odata_filter=p1c.F("DeletionMark") == False,  # noqa: E712
                                       orderby="Code")
            names = [row["Description"] for row in page.value]
            zayavki = p1c.Document(ib, "Заявка")
            created = await zayavki.create({
                "Date": "2021-12-20T10:00:00", "Сотрудник_Key": page.value[0]["Ref_Key"],
                "Клиент_Key": seed.DEFAULT_CLIENT_REF, "ДатаПриема": "2021-12-22T00:00:00",
                "ВремяНачала": "0001-01-01T09:05:00", "ВремяОкончания": "0001-01-01T09:20:00",
                "НомерAmoCRM": "30000042", "Номенклатура_Key": seed.DEFAULT_NOMENCLATURE_REF,
            }, posting_mode=p1c.PostingMode.POST)
            again = await zayavki.get(created["Ref_Key"])
            return names, created, again

    names, created, again = asyncio.run(scenario())
    assert names == ["Ефимова Е.В.", "Петрова А.С.", "Ишаева М.И."]
    assert created["Number"] == emu.number(219)
    assert again["Posted"] is True
    [row] = emu.zayavki("30000042")
    assert row["doctor"] == "Ефимова Е.В."
    assert row["posted"] is True
    # it really went through the OData interface
    counts = emu.requests()["counts"]
    assert counts["POST /clinic/odata/standard.odata/Document_Заявка"] == 1
    assert counts[f"POST /clinic/odata/standard.odata/Document_Заявка(guid'{created['Ref_Key']}')/Post"] == 1
