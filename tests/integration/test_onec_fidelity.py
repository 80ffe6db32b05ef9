"""1C's standard OData interface as 1C really answers, each behaviour with its source, over
HTTP against the emulator; and the gateway coping with those forms.

«The 1C OData docs» below: 1C:Enterprise 8.3.27 documentation, 17.4 «Стандартный интерфейс
OData» (a copy: hacker-cb/1c-odata, docs/1c/markdown/17.4_-_Cтандартный_интерфейс_OData_8_3_27.md).
"""

from __future__ import annotations

from datetime import date, datetime
from urllib.parse import quote, unquote
from xml.etree import ElementTree as ET

import pytest
import requests

from amo1c_sync.domain.registration import display_number
from amo1c_sync.onec import OneC
from amo1c_sync.onec.gateway import plain_row
from amo1c_sync.sandbox import seed
from amo1c_sync.sandbox.onec_emulator import OneCEmulator

ATOM = "{http://www.w3.org/2005/Atom}"
APP = "{http://www.w3.org/2007/app}"
D = "{http://schemas.microsoft.com/ado/2007/08/dataservices}"
M = "{http://schemas.microsoft.com/ado/2007/08/dataservices/metadata}"
EDM = "{http://schemas.microsoft.com/ado/2009/11/edm}"
ZAYAVKA = "Document_Заявка"


@pytest.fixture
def emu():
    with OneCEmulator(number_prefix="") as e:
        yield e


@pytest.fixture
def http(emu):
    s = requests.Session()
    s.auth = (emu.username.encode(), emu.password.encode())
    yield s
    s.close()


def odata(emu, resource: str, query: str = "") -> str:
    return f"{emu.odata_url}{quote(resource, safe=chr(39) + '()/$=,')}" + (f"?{query}" if query else "")


def a_zayavka(emu, lead: int | None = 30000001) -> dict:
    return emu.add_zayavka(lead=lead, doctor="Ефимова Е.В.", start=datetime(2021, 12, 22, 9, 5))


# --- formats -----------------------------------------------------------------------------------
def test_given_no_format_when_reading_then_atom_xml_service_feed_and_entry(emu, http):
    # «Если ключевое слово не указано, данные получаются в формате atom-xml» (1C OData docs, 17.4.1)
    z = a_zayavka(emu)

    root = ET.fromstring(http.get(emu.odata_url).content)
    feed = ET.fromstring(http.get(odata(emu, ZAYAVKA, "$inlinecount=allpages")).content)
    entry = ET.fromstring(http.get(odata(emu, f"{ZAYAVKA}(guid'{z['Ref_Key']}')")).content)

    assert root.tag == APP + "service"
    assert ZAYAVKA in [c.get("href") for c in root.iter(APP + "collection")]
    assert feed.tag == ATOM + "feed"
    assert feed.find(M + "count").text == "1"
    assert [e.find(f"{ATOM}content/{M}properties/{D}Ref_Key").text for e in feed.iter(ATOM + "entry")] == [z["Ref_Key"]]
    assert entry.tag == ATOM + "entry"
    assert entry.find(f"{ATOM}content/{M}properties/{D}Number").text == "00000000219"
    related = {link.get("title") for link in entry.iter(ATOM + "link") if "/related/" in (link.get("rel") or "")}
    assert related == {"Клиент", "Сотрудник", "Номенклатура"}


@pytest.mark.parametrize("fmt", ["", "$format=json"])
def test_given_post_and_unpost_with_or_without_format_when_sent_then_carried_out(emu, http, fmt):
    # the docs' own URL for posting has no $format (17.4.13.1.7)
    ref = a_zayavka(emu)["Ref_Key"]  # made posted

    unpost = http.post(odata(emu, f"{ZAYAVKA}(guid'{ref}')/Unpost", fmt))
    assert unpost.status_code == 200
    assert emu.zayavki()[0]["posted"] is False
    query = "&".join(filter(None, ["PostingModeOperational=false", fmt]))
    post = http.post(odata(emu, f"{ZAYAVKA}(guid'{ref}')/Post", query))
    assert post.status_code == 200
    assert emu.zayavki()[0]["posted"] is True


# --- counting and paging -----------------------------------------------------------------------
def test_given_inlinecount_allpages_when_top_and_skip_are_given_then_1c_ignores_them(emu, http):
    # «Использование параметра $inlinecount приводит к игнорированию параметров $skip и $top» (17.4.6.2)
    r = http.get(odata(emu, "Catalog_Сотрудники", "$format=json&$inlinecount=allpages&$top=1&$skip=1"))

    assert r.json()["odata.count"] == "3"
    assert len(r.json()["value"]) == 3


def test_given_count_of_a_set_when_asked_then_the_bare_number(emu, http):
    # «тело ответа должно содержать только число элементов коллекции» (17.4.6.1)
    r = http.get(odata(emu, "Catalog_Сотрудники/$count", "$filter=" + quote("Description eq 'Ефимова Е.В.'")))
    assert r.status_code == 200
    assert r.text == "1"
    assert http.get(odata(emu, "Catalog_Сотрудники/$count")).text == "3"


# --- references --------------------------------------------------------------------------------
def test_given_expand_and_select_of_a_reference_when_listing_then_the_object_comes_inline(emu, http):
    # $expand (17.4.6.4) with $select=Ref/Attr (17.4.8: «$expand=Сертификат&$select=Сертификат/Дата»)
    z = a_zayavka(emu)
    r = http.get(odata(emu, ZAYAVKA, "$format=json&$expand=Клиент,Сотрудник"
                                     "&$select=Ref_Key,Клиент/Description,Сотрудник/Description"))

    assert r.status_code == 200
    assert r.json()["value"] == [{"Ref_Key": z["Ref_Key"], "Клиент": {"Description": "Клиент из AmoCRM"},
                                  "Сотрудник": {"Description": "Ефимова Е.В."}}]
    # «Не поддерживается расширение при запросе одиночных сущностей»
    single = http.get(odata(emu, f"{ZAYAVKA}(guid'{z['Ref_Key']}')", "$format=json&$expand=Клиент"))
    assert single.status_code == 400


def test_given_a_reference_when_read_then_its_navigation_link_leads_to_the_object(emu, http):
    # a reference is X_Key plus the navigation property X (17.4.3, the type table); JSON carries
    # X@navigationLinkUrl (seen in real answers: «Сервер@navigationLinkUrl» beside «Сервер_Key»)
    z = a_zayavka(emu)
    row = http.get(odata(emu, f"{ZAYAVKA}(guid'{z['Ref_Key']}')", "$format=json")).json()

    link = row["Клиент@navigationLinkUrl"]
    assert link == f"{ZAYAVKA}(guid'{z['Ref_Key']}')/Клиент"
    client = http.get(odata(emu, link, "$format=json")).json()
    assert client["Ref_Key"] == seed.DEFAULT_CLIENT_REF
    assert client["Description"] == "Клиент из AmoCRM"
    assert client["odata.metadata"].endswith("$metadata#Catalog_Клиенты/@Element")


def test_given_the_metadata_when_read_then_a_navigation_property_per_reference_and_line_number_int64(emu, http):
    # NavigationProperty + Association (EDMX as in hacker-cb/1c-odata's fixtures); Int64 (17.4.3)
    xml = ET.fromstring(http.get(odata(emu, "$metadata")).content)
    types = {t.get("Name"): t for t in xml.iter(EDM + "EntityType")}

    navs = {n.get("Name"): n.get("Relationship") for n in types[ZAYAVKA].iter(EDM + "NavigationProperty")}
    assert navs == {"Клиент": "StandardODATA.Document_Заявка_Клиент",
                    "Сотрудник": "StandardODATA.Document_Заявка_Сотрудник",
                    "Номенклатура": "StandardODATA.Document_Заявка_Номенклатура"}
    ends = {a.get("Name"): [(e.get("Type"), e.get("Multiplicity")) for e in a.iter(EDM + "End")]
            for a in xml.iter(EDM + "Association")}
    assert ends["Document_Заявка_Клиент"] == [("StandardODATA.Document_Заявка", "*"),
                                              ("StandardODATA.Catalog_Клиенты", "0..1")]
    lines = types["Document_ОказаниеУслуг_Работы"]
    assert {p.get("Name"): p.get("Type") for p in lines.iter(EDM + "Property")}["LineNumber"] == "Edm.Int64"


# --- values --------------------------------------------------------------------------------------
def test_given_a_tabular_section_when_read_then_line_number_is_a_json_string(emu, http):
    # "LineNumber": "1" in the docs' PATCH example (17.4.13.1.3); «1С wire form is always string»
    # for Int64 (hacker-cb/1c-odata packages/client/src/connection.ts)
    rows = http.get(odata(emu, "Document_УстановкаГрафиковРаботы_ГрафикиРаботы", "$format=json&$top=2")).json()
    assert [r["LineNumber"] for r in rows["value"]] == ["1", "2"]


def test_given_a_fixed_length_string_when_stored_then_it_is_padded_and_still_found_unpadded(emu, http):
    # a fixed-length string attribute keeps its value padded with spaces to its length
    a_zayavka(emu, lead=30000001)
    rows = http.get(odata(emu, ZAYAVKA, "$format=json&$filter=" + quote("НомерAmoCRM eq '30000001'"))).json()

    assert [r["НомерAmoCRM"] for r in rows["value"]] == ["30000001    "]  # 12 characters


@pytest.mark.parametrize(("prefix", "number", "shown"), [("", "00000000219", "219"),
                                                         ("МС00-", "МС00-000219", "МС00-000219"),
                                                         ("0000-", "0000-000219", "0000-000219")])
def test_given_a_number_format_when_a_document_is_created_then_the_number_and_how_the_clinic_sees_it(
        prefix, number, shown):
    # Number in the configuration's own format; catalog codes keep theirs («000000001»)
    with OneCEmulator(number_prefix=prefix) as emu:
        z = a_zayavka(emu)
        assert z["Number"] == number == emu.number(219)
        assert emu.clients()[0]["code"] == "000000001"
        gw = OneC(emu.odata_url, emu.username, emu.password)
        assert gw.get_zayavka(z["Ref_Key"]).display_number == shown == display_number(number)


# --- the gateway ---------------------------------------------------------------------------------
def test_given_padded_strings_and_annotations_when_the_gateway_reads_then_it_compares_the_plain_values(emu):
    a_zayavka(emu, lead=30000001)
    gw = OneC(emu.odata_url, emu.username, emu.password)

    [z] = gw.zayavki_by_lead(30000001)
    assert z.lead == "30000001"
    assert plain_row({"Клиент_Key": "k", "Клиент@navigationLinkUrl": "x", "odata.etag": "e",
                      "Работы": [{"LineNumber": "1", "Номенклатура@navigationLinkUrl": "y"}]}) == {
        "Клиент_Key": "k", "Работы": [{"LineNumber": "1"}]}


def test_given_a_2xx_with_any_body_to_post_when_posting_then_the_gateway_takes_it_as_done(emu):
    z = a_zayavka(emu)
    emu.add_fault(count=1, phase="after", status=202, path_prefix=f"/odata/standard.odata/{ZAYAVKA}(")
    gw = OneC(emu.odata_url, emu.username, emu.password, max_retries=0)

    gw.post(ZAYAVKA, z["Ref_Key"])  # a 202 with an HTML body: done, not retried

    assert emu.requests()["by_status"] == {"202": 1}


def test_given_the_gateways_reads_when_paging_then_inlinecount_never_meets_top_or_skip(emu):
    for i in range(7):
        emu.add_catalog_item("Catalog_Клиенты", f"Клиент {i}")
    gw = OneC(emu.odata_url, emu.username, emu.password, page_size=2)
    gw.find_clients("Клиент 3")
    gw.doctors()
    gw.schedule_for_day(date(2021, 12, 22))
    gw.zayavki_on(date(2021, 12, 22))
    targets = [unquote(e["target"]) for e in emu.requests()["log"]]
    assert len(targets) >= 5
    assert all(not ("$inlinecount" in t and ("$top" in t or "$skip" in t)) for t in targets)
