"""The 1C gateway against the 1C emulator, over real HTTP on loopback."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from decimal import Decimal
from time import monotonic
from urllib.parse import unquote

import pytest
import requests

from amo1c_sync.domain.registration import display_number
from amo1c_sync.errors import FatalError, ItemError, RetriableError
from amo1c_sync.onec import OneC, OneCNames, diagnostics
from amo1c_sync.onec.query import MAX_TARGET_BYTES
from amo1c_sync.sandbox import seed
from amo1c_sync.sandbox.onec_emulator import OneCEmulator

FAST = dict(backoff_base=0.001, backoff_max=0.01)
DAY = date(2021, 12, 22)
EFIMOVA = seed.DOCTOR_REFS["Ефимова Е.В."]
ISHAEVA = seed.DOCTOR_REFS["Ишаева М.И."]


@pytest.fixture
def emu():
    with OneCEmulator() as e:
        yield e


@pytest.fixture
def onec(emu):
    gw = OneC(emu.url, emu.username, emu.password, **FAST)
    yield gw
    gw.close()


def odata_targets(emu, method="GET"):
    return [t for t in emu.requests()["log"] if t["method"] == method]


# --- reading ------------------------------------------------------------------------------------
def test_given_the_seed_when_listing_doctors_then_three_doctors_by_code(onec):
    assert [d.name for d in onec.doctors()] == ["Ефимова Е.В.", "Петрова А.С.", "Ишаева М.И."]


def test_given_the_seed_schedule_when_asking_for_22_12_2021_then_efimova_and_ishaeva_work(emu, onec):
    lines = onec.schedule_for_day(DAY)
    by_doctor = {line.doctor_ref: (line.start, line.end) for line in lines}
    assert by_doctor == {EFIMOVA: (time(8, 15), time(13, 0)), ISHAEVA: (time(8, 0), time(16, 0))}
    schedule = emu.number(6, "Document_УстановкаГрафиковРаботы")
    assert {(line.doc_number, line.doc_date) for line in lines} == {(schedule, datetime(2021, 12, 8))}


def test_given_the_seed_schedule_when_asking_for_the_month_then_every_cell_of_the_table_is_there(onec):
    lines = onec.schedule_lines(date(2021, 12, 1))
    assert len(lines) == sum(1 for cells in seed.SCHEDULE_TABLE.values() for c in cells if c)
    assert {line.day for line in lines} == {date(2021, 12, d) for d in seed.SCHEDULE_TABLE}
    # Петрова (column 2) does not work on the 22nd
    assert not [line for line in lines if line.day == DAY and line.doctor_ref == seed.DOCTOR_REFS["Петрова А.С."]]


def test_given_two_posted_schedules_and_an_unposted_one_when_reading_then_posted_ones_come_with_date_and_number(
        emu, onec):
    later = emu.add_schedule([(EFIMOVA, DAY, time(14, 0), time(18, 0))], month=date(2021, 12, 1),
                             doc_date=datetime(2021, 12, 15))
    emu.add_schedule([(EFIMOVA, DAY, time(6, 0), time(7, 0))], month=date(2021, 12, 1),
                     doc_date=datetime(2021, 12, 20), posted=False)
    lines = [line for line in onec.schedule_for_day(DAY) if line.doctor_ref == EFIMOVA]
    schedule = emu.number(6, "Document_УстановкаГрафиковРаботы")
    assert [(line.doc_number, line.start) for line in lines] == [(schedule, time(8, 15)),
                                                                   (later["Number"], time(14, 0))]
    assert later["Number"] == emu.number(7, "Document_УстановкаГрафиковРаботы")


def test_given_few_rows_per_page_when_reading_then_all_pages_are_fetched_in_a_stable_order(emu):
    for _ in range(7):
        emu.add_catalog_item("Catalog_Клиенты", "Петров П.П.")
    gw = OneC(emu.url, emu.username, emu.password, page_size=3, **FAST)
    emu.reset_requests()
    found = gw.find_clients("Петров П.П.")
    assert len(found) == 7
    assert len({c.ref for c in found}) == 7
    assert [c.code for c in found] == sorted(c.code for c in found)
    skips = [unquote(t["target"]) for t in odata_targets(emu)]
    assert len(skips) == 3
    assert "$skip=3" in skips[1]
    assert "$skip=6" in skips[2]
    # lines of a tabular section page too (35 lines, 4 per page)
    gw = OneC(emu.url, emu.username, emu.password, page_size=4, **FAST)
    assert len(gw.schedule_lines(date(2021, 12, 1))) == 35



def test_given_a_window_scan_longer_than_a_page_when_read_then_the_rest_comes_in_scan_pages_and_every_row_once(emu):
    z = emu.add_zayavka(lead=7001, doctor="Ефимова Е.В.", start=datetime(2021, 12, 22, 10, 0))
    at = datetime(2021, 12, 22, 11, 0)
    made = {emu.add_service(zayavka_ref=z["Ref_Key"], amount=Decimal(i + 1), date_=at)["Ref_Key"] for i in range(25)}
    gw = OneC(emu.url, emu.username, emu.password, page_size=3, scan_page_size=10, **FAST)
    emu.reset_requests()

    services = gw.services_in_window(date(2021, 12, 22), date(2021, 12, 22))
    versions = gw.service_versions(datetime(2021, 12, 22), datetime(2021, 12, 23))
    bases = gw.base_versions(datetime(2021, 12, 22))

    assert len(services) == 25
    assert {s.ref for s in services} == made
    assert sum(s.amount for s in services) == Decimal(25 * 26 // 2)   # no row twice, none missed
    assert {v.ref for v in versions} == made
    assert z["Ref_Key"] in {b.ref for b in bases}
    pages = [re.findall(r"\$(top|skip)=(\d+)", unquote(t["target"])) for t in odata_targets(emu)
             if "ОказаниеУслуг" in unquote(t["target"])]
    # 3 rows first (a short window: one request, as any read), then 10 a page: 3 + 10 + 10 + 2
    assert pages[:4] == [[("top", "3")], [("top", "10"), ("skip", "3")], [("top", "10"), ("skip", "13")],
                         [("top", "10"), ("skip", "23")]]
    assert len(pages) == 8
    # a read that is not a window scan still pages at page_size
    for _ in range(7):
        emu.add_catalog_item("Catalog_Клиенты", "Сидоров С.С.")
    emu.reset_requests()
    assert len(gw.find_clients("Сидоров С.С.")) == 7
    assert len(odata_targets(emu)) == 3

# --- clients: escaping --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["O'Brien", "Иванов') or 1=1", "Сидоров & сыновья #1 + 100% 'ООО'"])
def test_given_an_awkward_client_name_when_found_or_created_then_exactly_that_client_is_used(emu, onec, name):
    assert onec.find_clients(name) == []
    created = onec.create_client(name)
    assert created.name == name
    assert created.code == "000000002"
    again = onec.find_clients(name)
    assert [c.ref for c in again] == [created.ref]
    assert [c["name"] for c in emu.clients()] == ["Клиент из AmoCRM", name]
    # the default client is not matched by the injection attempt
    assert onec.find_clients("Клиент из AmoCRM")[0].ref == seed.DEFAULT_CLIENT_REF


def test_given_a_client_name_too_long_for_one_url_when_found_then_exactly_that_client_by_a_short_request(emu, onec):
    name = "Ёлкина-Щукина 👩‍⚕️ O'Brien " * 80   # ~2,200 characters, ~20 KB percent-encoded
    created = onec.create_client(name)
    onec.create_client(name[:-2])              # same beginning, not the same name (1C ignores trailing spaces)
    emu.reset_requests()
    assert [c.ref for c in onec.find_clients(name)] == [created.ref]
    assert onec.find_clients(name + "x") == []
    targets = odata_targets(emu)
    assert targets
    assert max(len(t["target"].encode()) for t in targets) <= MAX_TARGET_BYTES


def test_given_default_names_when_looking_up_default_items_then_both_exist(onec):
    assert onec.default_client().ref == seed.DEFAULT_CLIENT_REF
    assert onec.default_nomenclature().ref == seed.DEFAULT_NOMENCLATURE_REF
    assert diagnostics.check_names(onec) == []


def test_given_the_emulator_when_pinged_then_one_cheap_read_is_made_and_its_seconds_returned(emu, onec):
    emu.reset_requests()
    started = monotonic()
    elapsed = onec.ping()
    assert 0 < elapsed <= monotonic() - started
    (target,) = [unquote(t["target"]) for t in odata_targets(emu)]
    assert "Catalog_Сотрудники" in target
    assert "$top=1" in target


# --- «Заявка» -----------------------------------------------------------------------------------
def new_zayavka(onec, lead="30000001", start=time(9, 5), end=time(9, 20)):
    return onec.create_zayavka(client_ref=seed.DEFAULT_CLIENT_REF, doctor_ref=EFIMOVA, day=DAY, start=start,
                               end=end, lead_id=lead, nomenclature_ref=seed.DEFAULT_NOMENCLATURE_REF,
                               doc_date=datetime(2021, 12, 20, 10, 0))


def test_given_a_lead_when_creating_and_posting_a_zayavka_then_it_is_number_219_and_findable(emu, onec):
    z = new_zayavka(onec)
    assert z.number == emu.number(219)
    assert z.display_number == display_number(emu.number(219))
    assert not z.posted
    assert (z.day, z.start, z.end, z.lead) == (DAY, time(9, 5), time(9, 20), "30000001")
    onec.post("Document_Заявка", z.ref)
    [found] = onec.zayavki_by_lead(30000001)
    assert found.ref == z.ref
    assert found.posted
    assert found.data_version != z.data_version
    assert [x.ref for x in onec.zayavki_on(DAY, EFIMOVA)] == [z.ref]
    assert onec.zayavki_on(DAY, ISHAEVA) == []
    assert onec.zayavki_on(date(2021, 12, 23)) == []
    [row] = emu.zayavki("30000001")
    assert row == {"ref": z.ref, "number": emu.number(219), "client": "Клиент из AmoCRM", "doctor": "Ефимова Е.В.",
                   "start": "2021-12-22T09:05:00", "end": "2021-12-22T09:20:00", "lead": "30000001",
                   "posted": True, "deletion_mark": False, "client_ref": seed.DEFAULT_CLIENT_REF}
    assert new_zayavka(onec, lead="30000002").number == emu.number(220)


def test_given_a_zayavka_when_updating_then_only_given_fields_change_and_end_can_be_cleared(onec):
    z = new_zayavka(onec)
    u = onec.update_zayavka(z.ref, doctor_ref=ISHAEVA, start=time(10, 0), end=None)
    assert (u.doctor_ref, u.start, u.end, u.lead, u.number) == (ISHAEVA, time(10, 0), None, "30000001", z.number)
    assert u.data_version != z.data_version
    assert onec.get_zayavka(z.ref) == u


def mark_for_deletion(emu, ref: str) -> None:
    """As a person does in 1C: the document stays, marked for deletion (a PATCH over OData)."""
    requests.patch(f"{emu.odata_url}Document_Заявка(guid'{ref}')?$format=json", json={"DeletionMark": True},
                   auth=(emu.username.encode(), emu.password.encode()), timeout=5).raise_for_status()


def test_given_deleted_zayavki_when_searching_then_they_are_left_out(emu, onec):
    z = new_zayavka(onec)
    requests.post(f"{emu.url}/_sandbox/zayavki", json={"lead": None, "doctor": "Ефимова Е.В.",
                                                       "start": "2021-12-22T10:00:00"}).raise_for_status()
    mark_for_deletion(emu, z.ref)
    assert onec.zayavki_by_lead("30000001") == []
    [left] = onec.zayavki_on(DAY)
    assert left.lead == ""
    assert left.end is None


def test_given_a_deletion_marked_document_when_posting_then_the_1c_message_is_an_item_error(emu, onec):
    z = new_zayavka(onec)
    mark_for_deletion(emu, z.ref)
    emu.reset_requests()
    with pytest.raises(ItemError) as err:
        onec.post("Document_Заявка", z.ref)
    text = str(err.value)
    assert "Помеченный на удаление документ не может быть проведен!" in text
    assert f"POST /odata/standard.odata/Document_Заявка(guid'{z.ref}')/Post" in text
    assert emu.requests()["by_status"] == {"500": 1}  # not retried


# --- «Оказание услуг» and their bases --------------------------------------------------------------
@pytest.mark.parametrize("mode", ["composite", "single"])
def test_given_either_base_shape_when_reading_services_then_bases_resolve_to_leads(mode):
    with OneCEmulator(base_ref_mode=mode) as emu:
        onec = OneC(emu.url, emu.username, emu.password, names=OneCNames(base_ref_mode=mode), **FAST)
        z = new_zayavka(onec, lead="30000077")
        no_lead = emu.add_zayavka(lead=None, doctor="Ишаева М.И.", start=datetime(2021, 12, 22, 11, 0))
        paid = requests.post(f"{emu.url}/_sandbox/services", json={"lead": 30000077, "amount": "150.00",
                                                                   "date": "2021-12-22T12:00:00"}).json()
        unbased = requests.post(f"{emu.url}/_sandbox/services", json={"zayavka_ref": None, "amount": "99.90",
                                                                      "date": "2021-12-22T12:30:00"}).json()
        nolead = requests.post(f"{emu.url}/_sandbox/services", json={"zayavka_ref": no_lead["Ref_Key"],
                                                                     "amount": "10", "date": "2021-12-22T13:00"}).json()
        services = {s.ref: s for s in onec.services_in_window(date(2021, 12, 22), date(2021, 12, 22))}
        assert set(services) == {paid["ref"], unbased["ref"], nolead["ref"]}
        s = services[paid["ref"]]
        assert (s.base_ref, s.base_is_zayavka, s.posted, s.amount) == (z.ref, True, True, Decimal("150.00"))
        assert isinstance(s.amount, Decimal)
        assert s.number == emu.number(1, "Document_ОказаниеУслуг")
        assert services[unbased["ref"]].base_ref is None
        assert not services[unbased["ref"]].base_is_zayavka
        assert services[unbased["ref"]].amount == Decimal("99.90")
        if mode == "composite":
            assert s.base_type == "StandardODATA.Document_Заявка"
        bases = onec.bases_by_ref([z.ref, no_lead["Ref_Key"]])
        assert {b.ref: b.lead for b in bases} == {z.ref: "30000077", no_lead["Ref_Key"]: None}
        # re-post with a new sum, unpost, mark for deletion: every write changes DataVersion
        versions = [s.data_version]
        for action, body in (("post", {"amount": "175.50"}), ("unpost", {}), ("delete", {})):
            requests.post(f"{emu.url}/_sandbox/services/{s.ref}/{action}", json=body).raise_for_status()
            now = {x.ref: x for x in onec.services_in_window(date(2021, 12, 22), date(2021, 12, 22))}[s.ref]
            versions.append(now.data_version)
        assert len(set(versions)) == 4
        assert (now.posted, now.deletion_mark, now.amount) == (False, True, Decimal("175.50"))
        # outside the window: nothing
        assert onec.services_in_window(date(2021, 12, 23), date(2021, 12, 31)) == []


def test_given_many_base_refs_when_read_by_ref_then_several_requests_each_under_2000_bytes(emu, onec):
    refs = {}
    for i in range(120):
        row = emu.add_zayavka(lead=str(31000000 + i), doctor="Ефимова Е.В.", start=datetime(2021, 12, 22, 8, 15))
        refs[row["Ref_Key"]] = str(31000000 + i)
    missing = "11111111-2222-3333-4444-555555555555"
    emu.reset_requests()
    resolved = {b.ref: b.lead for b in onec.bases_by_ref([*refs, missing])}
    assert resolved == refs   # the missing «Заявка» is not listed
    targets = odata_targets(emu)
    assert len(targets) >= 4
    assert all(t["bytes"] < MAX_TARGET_BYTES for t in targets)
    assert max(t["bytes"] for t in targets) > MAX_TARGET_BYTES * 0.8  # batches are not tiny either


# --- faults ----------------------------------------------------------------------------------
def test_given_injected_500s_when_reading_then_the_gateway_retries_and_succeeds(emu, onec):
    emu.add_fault(count=3, status=500, path_prefix="/odata")
    assert len(onec.doctors()) == 3
    assert emu.requests()["by_status"] == {"500": 3, "200": 1}


def test_given_persistent_503s_when_reading_then_retriable_error_after_max_retries(emu):
    gw = OneC(emu.url, emu.username, emu.password, max_retries=2, **FAST)
    emu.add_fault(count=10, status=503)
    with pytest.raises(RetriableError) as err:
        gw.doctors()
    assert "503" in str(err.value)
    assert "GET /odata/standard.odata/Catalog_Сотрудники" in str(err.value)
    assert emu.requests()["total"] == 3


def test_given_a_dropped_connection_when_reading_then_retried(emu, onec):
    emu.add_fault(count=2, drop=True, status=None)
    assert len(onec.doctors()) == 3
    assert emu.requests()["total"] == 3


def test_given_a_dropped_connection_when_creating_then_not_retried_to_avoid_a_duplicate(emu, onec):
    emu.add_fault(count=1, drop=True, status=None, method="POST")
    with pytest.raises(RetriableError) as err:
        new_zayavka(onec)
    assert "dropped the connection" in str(err.value)
    assert emu.requests()["counts"] == {"POST /odata/standard.odata/Document_Заявка": 1}
    assert emu.zayavki() == []


def test_given_500s_when_posting_then_retried_because_posting_is_idempotent(emu, onec):
    z = new_zayavka(onec)
    emu.add_fault(count=2, status=502, method="POST")
    onec.post("Document_Заявка", z.ref)
    assert onec.zayavki_by_lead("30000001")[0].posted


def test_given_a_cold_1c_when_the_first_call_times_out_then_the_retry_finds_it_warm(emu):
    with OneCEmulator(cold_start_ms=400) as cold:
        gw = OneC(cold.url, cold.username, cold.password, read_timeout=0.15, **FAST)
        assert len(gw.doctors()) == 3
        assert cold.requests()["total"] == 2


def test_given_nothing_listening_when_calling_then_retriable_error(emu):
    port = emu.port
    emu.stop()
    gw = OneC(f"http://127.0.0.1:{port}", "u", "p", max_retries=1, **FAST)
    with pytest.raises(RetriableError) as err:
        gw.ping()
    assert "refused" in str(err.value)


# --- auth and errors ----------------------------------------------------------------------------
def test_given_a_cyrillic_login_when_calling_then_it_is_accepted(emu):
    assert emu.username == "Администратор"
    gw = OneC(emu.url, "Администратор", emu.password, **FAST)
    emu.reset_requests()
    gw.ping()  # a refused login raises (FatalError, see the next test)
    assert {str(k): v for k, v in emu.requests()["by_status"].items()} == {"200": 1}


def test_given_a_wrong_password_when_calling_then_fatal_error_without_the_password(emu):
    gw = OneC(emu.url, emu.username, "неверный-пароль-123", **FAST)
    with pytest.raises(FatalError) as err:
        gw.doctors()
    assert err.value.system == "1c"
    assert "401" in str(err.value)
    assert "неверный-пароль-123" not in str(err.value)
    assert emu.requests()["total"] == 1  # not retried


def test_given_a_misnamed_attribute_when_querying_then_the_1c_parse_error_is_surfaced_verbatim(emu):
    gw = OneC(emu.url, emu.username, emu.password, names=OneCNames(zayavka_lead="НомерЛида"), **FAST)
    with pytest.raises(ItemError) as err:
        gw.zayavki_by_lead(30000001)
    text = str(err.value)
    assert err.value.code == "1c:14"
    assert "Неизвестное поле в выражении $filter: НомерЛида" in text
    assert "GET /odata/standard.odata/Document_Заявка?$format=json&$filter=substringof('30000001', НомерЛида)" in text
    problems = diagnostics.check_names(gw)
    assert len(problems) == 1
    assert "НомерЛида" in problems[0]


def test_given_an_unknown_entity_set_when_checking_names_then_404_is_reported(emu):
    gw = OneC(emu.url, emu.username, emu.password, names=OneCNames(doctors="Catalog_Врачи"), **FAST)
    [problem] = diagnostics.check_names(gw)
    assert "404" in problem
    assert "Catalog_Врачи" in problem


def test_given_an_unknown_entity_set_when_checking_names_then_the_sets_of_that_kind_are_listed(emu):
    gw = OneC(emu.url, emu.username, emu.password, names=OneCNames(clients="Catalog_Пациенты"), **FAST)
    [problem] = diagnostics.check_names(gw)
    assert problem.startswith("[onec_names] clients: 1C has no entity set «Catalog_Пациенты»")
    assert problem.endswith("Catalog entity sets that exist: Catalog_Клиенты, "
                            "Catalog_Клиенты_КонтактнаяИнформация, Catalog_Номенклатура, Catalog_Сотрудники")
    assert "Document_" not in problem.split("exist:")[1]


def test_given_an_unknown_attribute_of_an_empty_set_when_checking_names_then_metadata_lists_the_attributes(emu):
    assert not emu.rows("Document_ОказаниеУслуг")
    gw = OneC(emu.url, emu.username, emu.password, names=OneCNames(services_amount="Сумма"), **FAST)
    [problem] = diagnostics.check_names(gw)
    assert problem.startswith("[onec_names] services_amount: Document_ОказаниеУслуг has no attribute «Сумма»")
    assert "400" in problem
    listed = problem.split("Attributes of Document_ОказаниеУслуг that exist: ")[1].split(", ")
    assert {"СуммаДокумента", "ДокументОснование", "ДокументОснование_Type", "Ref_Key"} <= set(listed)
    assert "GET /odata/standard.odata/$metadata" in emu.requests()["counts"]


def test_given_an_unknown_attribute_of_a_filled_set_when_checking_names_then_an_object_lists_the_attributes(emu):
    gw = OneC(emu.url, emu.username, emu.password, names=OneCNames(schedule_doctor="Врач_Key"), **FAST)
    [problem] = diagnostics.check_names(gw)
    assert problem.startswith("[onec_names] schedule_doctor: Document_УстановкаГрафиковРаботы_ГрафикиРаботы "
                              "has no attribute «Врач_Key»")
    assert problem.endswith("that exist: LineNumber, Ref_Key, ВремяНачала, ВремяОкончания, Дата, Сотрудник_Key")
    assert "GET /odata/standard.odata/$metadata" not in emu.requests()["counts"]


def test_given_a_base_url_that_is_not_the_publication_when_checking_names_then_one_problem_says_so():
    import threading

    from werkzeug.serving import make_server
    from werkzeug.wrappers import Response

    page = "<html><head><title>IIS</title></head><body><h1>Вход в систему</h1></body></html>"
    srv = make_server("127.0.0.1", 0, lambda env, sr: Response(page, status=404, content_type="text/html")(env, sr))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        gw = OneC(f"http://127.0.0.1:{srv.server_port}", "u", "p", max_retries=0, **FAST)
        [problem] = diagnostics.check_names(gw)
    finally:
        srv.shutdown()
        srv.server_close()
    assert problem.startswith("the OData service root does not answer")
    assert "«IIS Вход в систему»" in problem
    assert "[onec] base_url" in problem
    assert "<" not in problem


def test_given_the_emulator_when_reading_metadata_then_each_entity_set_has_its_entity_type(emu, onec):
    import base64
    from xml.etree import ElementTree

    login = base64.b64encode(f"{emu.username}:{emu.password}".encode()).decode()
    xml = requests.get(onec.root + "$metadata", headers={"Authorization": f"Basic {login}"}, timeout=5).content
    root = ElementTree.fromstring(xml)
    edm = "{http://schemas.microsoft.com/ado/2009/11/edm}"
    types = {t.get("Name"): [p.get("Name") for p in t.findall(f"{edm}Property")]
             for t in root.iter(f"{edm}EntityType")}
    sets = {s.get("Name"): s.get("EntityType") for s in root.iter(f"{edm}EntitySet")}
    assert set(sets) == set(diagnostics.entity_sets(onec))
    assert all(sets[s] == f"StandardODATA.{s}" and s in types for s in sets)
    assert types["Document_УстановкаГрафиковРаботы_ГрафикиРаботы"][:2] == ["Ref_Key", "LineNumber"]
    assert "ГрафикиРаботы" in types["Document_УстановкаГрафиковРаботы"]
