"""The amoCRM emulator speaks API v4 as amoCRM does (raw HTTP, no gateway)."""

from __future__ import annotations

import requests
import pytest

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator


@pytest.fixture
def emu():
    with AmoCRMEmulator(rate_limit=1000) as e:
        yield e


@pytest.fixture
def http(emu):
    code = requests.post(emu.url + "/_sandbox/oauth/code", timeout=5).json()
    form = {**code, "grant_type": "authorization_code"}
    tokens = requests.post(emu.url + "/oauth2/access_token", data=form, timeout=5).json()  # form-encoded
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {tokens['access_token']}"
    s.base = emu.url
    return s


def test_given_the_control_api_when_a_person_fills_a_lead_then_the_api_shows_amocrm_formats(emu, http):
    r = requests.post(emu.url + "/_sandbox/leads", timeout=5, json={"name": "Иванова", "fields": {
        "Дата записи к врачу": "22.12.2021", "Врач": "Новиков Н.Н.", "Сумма1С": "1500.50",
        "Зарегистрировать в 1С": True}})
    lid = r.json()["id"]

    lead = http.get(emu.url + f"/api/v4/leads/{lid}", timeout=5).json()

    by_name = {c["field_name"]: c for c in lead["custom_fields_values"]}
    assert by_name["Дата записи к врачу"]["values"] == [{"value": 1640120400}]   # 00:00 MSK
    assert by_name["Сумма1С"]["values"] == [{"value": "1500.50"}]
    assert by_name["Зарегистрировать в 1С"]["values"] == [{"value": True}]
    doctor = by_name["Врач"]["values"][0]
    assert doctor["value"] == "Новиков Н.Н."
    assert doctor["enum_id"]
    view = requests.get(emu.url + f"/_sandbox/leads/{lid}", timeout=5).json()
    assert set(view) >= {"id", "name", "price", "updated_at", "fields", "notes"}
    assert view["fields"]["Дата записи к врачу"] == "22.12.2021"


def test_given_no_token_or_an_expired_one_when_calling_then_401_problem_json(emu, http):
    assert requests.get(emu.url + "/api/v4/leads", timeout=5).status_code == 401
    requests.post(emu.url + "/_sandbox/tokens/expire", timeout=5)
    r = http.get(emu.url + "/api/v4/leads", timeout=5)
    assert r.status_code == 401
    assert r.headers["Content-Type"] == "application/problem+json"


def test_given_a_refresh_token_when_used_twice_then_the_second_use_is_revoked_and_counted(emu):
    code = emu.new_auth_code()
    first = requests.post(emu.url + "/oauth2/access_token", timeout=5,
                          json={**code, "grant_type": "authorization_code"}).json()
    body = {"client_id": code["client_id"], "client_secret": code["client_secret"],
            "redirect_uri": code["redirect_uri"], "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"]}

    ok = requests.post(emu.url + "/oauth2/access_token", json=body, timeout=5)
    again = requests.post(emu.url + "/oauth2/access_token", json=body, timeout=5)

    assert ok.status_code == 200
    assert ok.json()["refresh_token"] != first["refresh_token"]
    assert again.status_code == 401
    assert again.json()["hint"] == "Token has been revoked"
    assert requests.get(emu.url + "/_sandbox/tokens", timeout=5).json()["refresh_reuse_count"] == 1


def test_given_leads_when_filtering_by_id_in_every_spelling_then_the_same_leads(emu, http):
    a, b, c = (emu.create_lead(n) for n in "ABC")
    url = emu.url + "/api/v4/leads"
    for query in (f"filter[id][]={a}&filter[id][]={c}", f"filter[id][0]={a}&filter[id][1]={c}",
                  f"filter[id]={a}&filter[id]={c}"):
        got = http.get(f"{url}?{query}", timeout=5).json()["_embedded"]["leads"]
        assert sorted(lead["id"] for lead in got) == [a, c], query


def test_given_leads_when_paging_then_hal_links_next_and_204_after_the_last(emu, http):
    ids = [emu.create_lead(f"L{i}") for i in range(5)]
    url = emu.url + "/api/v4/leads?order[updated_at]=desc&limit=2&with=contacts"

    first = http.get(url, timeout=5).json()
    last = http.get(url + "&page=3", timeout=5).json()
    beyond = http.get(url + "&page=4", timeout=5)

    assert [lead["id"] for lead in first["_embedded"]["leads"]] == ids[::-1][:2]
    assert "page=2" in first["_links"]["next"]["href"]
    assert first["_page"] == 1
    assert "next" not in last["_links"]
    assert "contacts" in first["_embedded"]["leads"][0]["_embedded"]
    assert beyond.status_code == 204
    assert beyond.content == b""


def test_given_a_patch_of_251_when_sent_then_400(emu, http):
    lid = emu.create_lead("L")
    r = http.patch(emu.url + "/api/v4/leads", json=[{"id": lid}] * 251, timeout=5)
    assert r.status_code == 400


def test_given_a_date_at_15h_when_patched_then_it_is_stored_as_midnight_and_updated_at_is_the_second_of_the_write(
        emu, http):
    emu.book.clock = lambda: 1640160000.7
    lid = emu.create_lead("L")
    emu.book.clock = lambda: 1640160042.2
    fid = emu.field_id("Дата записи к врачу")

    r = http.patch(emu.url + "/api/v4/leads", timeout=5, json=[
        {"id": lid, "custom_fields_values": [{"field_id": fid, "values": [{"value": 1640174400}]}]}])

    assert r.status_code == 200
    lead = http.get(emu.url + f"/api/v4/leads/{lid}", timeout=5).json()
    assert lead["custom_fields_values"][0]["values"][0]["value"] == 1640120400
    assert lead["updated_at"] == 1640160042


def test_given_an_invalid_item_when_patching_then_nothing_is_applied_and_errors_are_per_index(emu, http):
    a, b = emu.create_lead("A"), emu.create_lead("B")
    r = http.patch(emu.url + "/api/v4/leads", timeout=5, json=[
        {"id": a, "price": 10},
        {"id": b, "custom_fields_values": [{"field_id": emu.field_id("Сумма1С"), "values": [{"value": "abc"}]}]}])

    body = r.json()
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/problem+json"
    assert body["validation-errors"] == [{"request_id": "1", "errors": [
        {"code": "InvalidType", "path": "custom_fields_values.0.values.0.value",
         "detail": "This value should be of type numeric."}]}]
    assert emu.lead(a)["price"] == 0


def test_given_a_deleted_lead_when_read_or_patched_then_amocrm_no_longer_knows_it(emu, http):
    lid = requests.post(emu.url + "/_sandbox/leads", json={"name": "X"}, timeout=5).json()["id"]
    assert requests.delete(emu.url + f"/_sandbox/leads/{lid}", timeout=5).status_code == 204

    assert http.get(emu.url + f"/api/v4/leads/{lid}", timeout=5).status_code == 204
    r = http.patch(emu.url + "/api/v4/leads", json=[{"id": lid, "price": 1}], timeout=5)
    assert r.status_code == 400
    assert r.json()["validation-errors"][0]["errors"][0]["path"] == "id"


def test_given_more_than_the_rate_when_calling_then_429_html_without_retry_after_and_counted(http):
    with AmoCRMEmulator(rate_limit=3) as emu:
        http.headers["Authorization"] = "Bearer " + emu.issue_long_lived_token()
        statuses = [http.get(emu.url + "/api/v4/account", timeout=5) for _ in range(5)]

        limited = [r for r in statuses if r.status_code == 429]
        assert len(limited) >= 1
        assert limited[0].headers["Content-Type"].startswith("text/html")
        assert "Retry-After" not in limited[0].headers
        stats = requests.get(emu.url + "/_sandbox/requests", timeout=5).json()
        assert stats["counts"]["GET /api/v4/account"] == 5
        assert stats["max_per_second"] >= 4
        requests.delete(emu.url + "/_sandbox/requests", timeout=5)
        assert requests.get(emu.url + "/_sandbox/requests", timeout=5).json()["total"] == 0


def test_given_faults_when_injected_then_the_next_requests_fail_as_asked(emu, http):
    requests.post(emu.url + "/_sandbox/faults", timeout=5,
                  json={"count": 2, "status": 502, "path_prefix": "/api/v4/leads"})
    codes = [http.get(emu.url + "/api/v4/leads", timeout=5).status_code for _ in range(3)]
    assert codes == [502, 502, 204]

    requests.post(emu.url + "/_sandbox/faults", json={"count": 1, "drop": True}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        http.get(emu.url + "/api/v4/account", timeout=5)


def test_given_custom_fields_when_listed_and_enums_patched_then_ids_are_kept(emu, http):
    fields = http.get(emu.url + "/api/v4/leads/custom_fields", timeout=5).json()["_embedded"]["custom_fields"]
    doctor = next(f for f in fields if f["name"] == "Врач")
    kept = doctor["enums"][0]

    r = http.patch(emu.url + "/api/v4/leads/custom_fields", timeout=5,
                   json=[{"id": doctor["id"], "enums": [kept, {"value": "Новый", "sort": 99}]}])

    enums = r.json()["_embedded"]["custom_fields"][0]["enums"]
    assert [e["value"] for e in enums] == [kept["value"], "Новый"]
    assert enums[0]["id"] == kept["id"]
