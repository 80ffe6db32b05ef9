"""F8 over HTTP: the registration job picks the lead's 1C client from its main amoCRM contact by the
six rules of domain/patients.py, creates a client with its phones when the rules say so, and writes
the client's key back on the contact. Also the gateways' contact and client methods, and bad input."""

from __future__ import annotations


import pytest
import requests

from amo1c_sync.domain.patients import parse_phone
from amo1c_sync.errors import ConfigError
from amo1c_sync.jobs import patient
from amo1c_sync.sandbox import seed
from amo1c_sync.store.db import sqlite_url_for
from amo1c_sync.store.models import JournalEntry
from tests.support.e2e import (
    EFIMOVA,
    fault,
    lead,
    make_amo,
    make_onec,
    make_settings,
    requests_of,
    reset_requests,
    run,
    shown,
    writes,
    zayavki,
)

SEED_PHONE = "+7 (911) 123-45-67"
KEY_FIELD = "Клиент 1С"


@pytest.fixture
def store_url(tmp_path):
    """SQLite only: these tests are about the two systems, not the store."""
    return sqlite_url_for(tmp_path / "state.db")


def flagged_lead(amo_emu, *, client: str | None = None, contact=None, contacts=None, time="9:05") -> int:
    fields = {"Дата записи к врачу": "22.12.2021", "Врач": EFIMOVA, "Время записи": time,
              "Зарегистрировать в 1С": True}
    if client is not None:
        fields["ФИО клиента"] = client
    body: dict = {"name": "Сделка", "fields": fields}
    if contact is not None:
        body["contact"] = contact
    if contacts is not None:
        body["contacts"] = contacts
    r = requests.post(amo_emu.url + "/_sandbox/leads", json=body, timeout=5)
    r.raise_for_status()
    return r.json()["id"]


def client_in_1c(onec_emu, name: str, *phones: str, deleted: bool = False) -> dict:
    r = requests.post(onec_emu.url + "/_sandbox/clients", timeout=5,
                      json={"name": name, "phones": list(phones), "deletion_mark": deleted})
    r.raise_for_status()
    return r.json()


def clients(onec_emu) -> list[dict]:
    return requests.get(onec_emu.url + "/_sandbox/clients", timeout=5).json()


def note(amo_emu, lead_id) -> str:
    [text] = lead(amo_emu, lead_id)["notes"]
    return text


def contact_of(amo_emu, lead_id) -> dict:
    return lead(amo_emu, lead_id)["contact"]


def registered(amo_emu, onec_emu, settings, store):
    result = run(settings, store)
    assert result.ok, result.errors
    return result


def client_of(onec_emu, lead_id) -> str:
    [z] = zayavki(onec_emu, lead_id)
    return z["client_ref"]


# --- the gateways ---------------------------------------------------------------------------------

def test_given_a_batch_of_leads_when_main_contacts_read_then_one_contacts_request_and_main_ones(
        amo_emu, onec_emu, settings, store):
    ids = [flagged_lead(amo_emu, contact={"name": f"Пациент {i}", "phones": [f"8 911 000-00-0{i}"]})
           for i in range(3)]
    ids.append(flagged_lead(amo_emu, contacts=[{"name": "Главный", "phones": [SEED_PHONE]},
                                               {"name": "Второй", "phones": ["+7 495 000-00-00"]}]))
    ids.append(flagged_lead(amo_emu))  # no contact at all
    amo = make_amo(settings, store)
    leads = amo.get_leads(ids)  # listed without with=contacts: re-read once with it
    reset_requests(amo_emu)

    got = patient.main_contacts(amo, leads, settings)

    counts = requests_of(amo_emu)["counts"]
    assert counts.get("GET /api/v4/contacts") == 1
    assert counts.get("GET /api/v4/leads") == 1
    assert [got.of(i).name for i in ids[:4]] == ["Пациент 0", "Пациент 1", "Пациент 2", "Главный"]
    assert got.of(ids[3]).phones == (SEED_PHONE,)
    assert got.of(ids[4]) is None
    assert got.key_field_name == KEY_FIELD
    assert got.key_field_id is not None


def test_given_contacts_when_patched_through_the_gateway_then_only_the_key_field_changes(
        amo_emu, onec_emu, settings, store):
    lead_id = flagged_lead(amo_emu, contact={"name": "Иванова Анна", "phones": [SEED_PHONE]})
    amo = make_amo(settings, store)
    cid = contact_of(amo_emu, lead_id)["id"]
    fid = next(f["id"] for f in amo.list_contact_fields() if f["name"] == KEY_FIELD)
    outcome = amo.update_contacts([{"id": cid, "custom_fields_values": [
        {"field_id": fid, "values": [{"value": seed.DEFAULT_CLIENT_REF}]}]}])
    assert outcome.ok == [cid]
    assert not outcome.failed
    c = contact_of(amo_emu, lead_id)
    assert c["fields"] == {KEY_FIELD: seed.DEFAULT_CLIENT_REF}
    assert c["phones"] == [SEED_PHONE]
    assert c["name"] == "Иванова Анна"


@pytest.mark.parametrize("typed", ["8 (911) 123-45-67", "+7 911 1234567", "79111234567", "9111234567"])
def test_given_a_client_with_a_phone_when_searched_in_any_spelling_then_found_in_one_section_query(
        onec_emu, settings, typed):
    anna = client_in_1c(onec_emu, "Иванова Анна", SEED_PHONE)
    client_in_1c(onec_emu, "Петров Пётр", "+7 911 765-43-21")
    reset_requests(onec_emu)
    [found] = make_onec(settings).clients_by_phones([parse_phone(typed, "RU").national])
    assert (found.ref, found.name, found.deleted) == (anna["ref"], "Иванова Анна", False)
    assert SEED_PHONE in found.phones
    section = [k for k in requests_of(onec_emu)["counts"] if "КонтактнаяИнформация" in k]
    assert len(section) == 1
    assert requests_of(onec_emu)["counts"][section[0]] == 1


def test_given_a_new_client_with_phones_when_created_then_1c_keeps_them_in_its_contact_information(
        onec_emu, settings):
    gw = make_onec(settings)
    made = gw.create_client("Иванова Анна", [parse_phone("8 911 123 45 67", "RU")])
    [listed] = [c for c in clients(onec_emu) if c["ref"] == made.ref]
    assert listed["phones"] == ["+7 911 123-45-67"]
    assert [c.ref for c in gw.clients_by_phones(["9111234567"])] == [made.ref]
    assert gw.client(made.ref).name == "Иванова Анна"
    assert gw.client("6f1c3a52-0d1e-4f0a-9b7e-1a2b3c4d5e6f") is None
    assert gw.client("не ключ") is None


# --- the six rules, end to end -------------------------------------------------------------------

def test_rule_1_given_a_contact_carrying_a_client_key_when_registered_then_that_client(
        amo_emu, onec_emu, settings, store):
    keyed = client_in_1c(onec_emu, "Иванова Анна Петровна", "+7 495 000-00-00")
    lead_id = flagged_lead(amo_emu, client="Иванова А.П.", contact={
        "name": "Анна", "phones": [SEED_PHONE], "fields": {KEY_FIELD: keyed["ref"]}})
    reset_requests(onec_emu)
    registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, lead_id) == keyed["ref"]
    assert note(amo_emu, lead_id).endswith(
        f"Клиент найден по ключу 1С из контакта: «Иванова Анна Петровна» (код {keyed['code']}).")
    assert not any("КонтактнаяИнформация" in k for k in requests_of(onec_emu)["counts"])  # no phone search


def test_rule_1_given_the_keyed_client_was_marked_for_deletion_when_registered_then_chosen_anew_and_key_rewritten(
        amo_emu, onec_emu, settings, store):
    gone = client_in_1c(onec_emu, "Иванова Анна", SEED_PHONE, deleted=True)
    live = client_in_1c(onec_emu, "Иванова Анна", "8 911 123 45 67")
    lead_id = flagged_lead(amo_emu, client="Иванова Анна", contact={
        "name": "Иванова Анна", "phones": [SEED_PHONE], "fields": {KEY_FIELD: gone["ref"]}})
    registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, lead_id) == live["ref"]
    assert "помечен на удаление — клиент подобран заново" in note(amo_emu, lead_id)
    assert contact_of(amo_emu, lead_id)["fields"] == {KEY_FIELD: live["ref"]}


def test_rule_2_given_phone_and_name_of_a_1c_client_when_registered_then_that_client_and_key_on_contact(
        amo_emu, onec_emu, settings, store):
    anna = client_in_1c(onec_emu, "Иванова Анна Петровна", "8 (911) 123-45-67")
    lead_id = flagged_lead(amo_emu, client="Иванова А.", contact={"name": "Аня", "phones": ["+7 911 1234567"]})
    result = registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, lead_id) == anna["ref"]
    assert note(amo_emu, lead_id) == (f"Создан документ Заявка № {shown(onec_emu)}\nКлиент найден по телефону "
                                      f"+7 911 123-45-67: «Иванова Анна Петровна» (код {anna['code']}).")
    assert contact_of(amo_emu, lead_id)["fields"] == {KEY_FIELD: anna["ref"]}
    assert contact_of(amo_emu, lead_id)["phones"] == ["+7 911 1234567"]  # nothing else on the contact changed
    assert result.counts.get("clients_created") is None
    assert result.counts["contact_keys_written"] == 1


def test_rule_3_given_the_phone_of_another_family_member_when_registered_then_a_new_client_with_that_phone(
        amo_emu, onec_emu, settings, store):
    maria = client_in_1c(onec_emu, "Иванова Мария", SEED_PHONE)
    lead_id = flagged_lead(amo_emu, client="Иванова Анна", contact={"name": "Мария", "phones": ["89111234567"]})
    result = registered(amo_emu, onec_emu, settings, store)
    new_ref = client_of(onec_emu, lead_id)
    assert new_ref != maria["ref"]
    assert result.counts["clients_created"] == 1
    [anna] = [c for c in clients(onec_emu) if c["ref"] == new_ref]
    assert anna["name"] == "Иванова Анна"
    assert anna["phones"] == ["+7 911 123-45-67"]
    assert note(amo_emu, lead_id).endswith(
        f"найден другой пациент с этим телефоном (+7 911 123-45-67): «Иванова Мария» (код {maria['code']}), "
        "создан новый клиент «Иванова Анна».")


def test_rule_4_given_a_name_and_no_phone_when_registered_then_the_client_of_that_name(
        amo_emu, onec_emu, settings, store):
    named = client_in_1c(onec_emu, "Сидоров С.С.")
    no_phone = flagged_lead(amo_emu, client="Сидоров С.С.", contact={"name": "Сидоров", "phones": []})
    with_phone = flagged_lead(amo_emu, client="Сидоров С.С.", contact={"phones": [SEED_PHONE]}, time="10:00")
    registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, no_phone) == named["ref"]
    assert note(amo_emu, no_phone) == f"Создан документ Заявка № {shown(onec_emu, 219)}"
    # only a lead without a phone goes by the name alone: this one is a new patient with its phone
    assert client_of(onec_emu, with_phone) != named["ref"]


def test_rule_5_given_an_unknown_patient_when_registered_then_a_new_client_with_name_and_phone(
        amo_emu, onec_emu, settings, store):
    lead_id = flagged_lead(amo_emu, client="Новикова Н.Н.", contact={"name": "Н", "phones": ["8 (911) 555-44-33"]})
    registered(amo_emu, onec_emu, settings, store)
    [made] = [c for c in clients(onec_emu) if c["ref"] == client_of(onec_emu, lead_id)]
    assert (made["name"], made["phones"]) == ("Новикова Н.Н.", ["+7 911 555-44-33"])
    assert note(amo_emu, lead_id).endswith("Клиент «Новикова Н.Н.» не найден в 1С — создан новый клиент с "
                                           "телефоном +7 911 555-44-33.")
    actions = [e.action for e in _journal(store, lead_id)]
    assert actions.index("client.creating") < actions.index("client.created") < actions.index("contact.key_writing") \
        < actions.index("contact.key_written")


def test_rule_6_given_no_name_and_no_phone_when_registered_then_the_default_client_and_the_seed_note(
        amo_emu, onec_emu, settings, store):
    lead_id = flagged_lead(amo_emu, contact={"name": "", "phones": []})
    registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, lead_id) == seed.DEFAULT_CLIENT_REF
    assert note(amo_emu, lead_id) == f"Создан документ Заявка № {shown(onec_emu)}"
    assert contact_of(amo_emu, lead_id)["fields"] == {}  # the default client is nobody's key


def test_given_a_patient_registered_once_when_a_second_lead_comes_then_found_by_key_and_no_duplicate(
        amo_emu, onec_emu, settings, store):
    first = flagged_lead(amo_emu, client="Новикова Н.Н.", contact={"name": "Н", "phones": ["8 (911) 555-44-33"]})
    registered(amo_emu, onec_emu, settings, store)
    cid = contact_of(amo_emu, first)["id"]
    second = flagged_lead(amo_emu, client="Новикова Наталья", contact={"id": cid}, time="10:00")
    result = registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, second) == client_of(onec_emu, first)
    assert [c["name"] for c in clients(onec_emu)].count("Новикова Н.Н.") == 1
    assert "Клиент найден по ключу 1С из контакта" in note(amo_emu, second)
    assert result.counts.get("clients_created") is None


def test_given_no_contact_field_configured_when_registered_then_no_contact_is_written(
        amo_emu, onec_emu, store):
    settings = make_settings(amo_emu, onec_emu, contact_client_field="")
    lead_id = flagged_lead(amo_emu, client="Новикова Н.Н.", contact={"name": "Н", "phones": [SEED_PHONE]})
    reset_requests(amo_emu)
    registered(amo_emu, onec_emu, settings, store)
    assert "PATCH /api/v4/contacts" not in requests_of(amo_emu)["counts"]
    assert contact_of(amo_emu, lead_id)["fields"] == {}


def test_given_a_configured_contact_field_that_amocrm_lacks_when_registering_then_the_run_names_the_fields(
        amo_emu, onec_emu, store):
    settings = make_settings(amo_emu, onec_emu, contact_client_field="Карта 1С")
    lead_id = flagged_lead(amo_emu, client="Новикова Н.Н.", contact={"name": "Н", "phones": [SEED_PHONE]})
    with pytest.raises(ConfigError) as err:
        run(settings, store)
    assert str(err.value).startswith("[sync] contact_client_field: amoCRM has no contact field «Карта 1С»; "
                                     "contact fields that exist: Телефон, Email, Клиент 1С. `amo1c-sync setup "
                                     "amocrm` creates it")
    assert zayavki(onec_emu, lead_id) == []  # nothing written before the configuration is fixed


# --- crash points ------------------------------------------------------------------------------

def test_given_1c_created_the_client_but_the_answer_was_lost_when_retried_in_the_cycle_then_one_client(
        amo_emu, onec_emu, settings, store):
    lead_id = flagged_lead(amo_emu, client="Новикова Н.Н.", contact={"name": "Н", "phones": [SEED_PHONE]})
    fault(onec_emu, count=1, phase="after", drop=True, method="POST", path_prefix="/odata/standard.odata/Catalog_")
    result = registered(amo_emu, onec_emu, settings, store)
    # the lead's second attempt in the cycle finds the client its first attempt made
    assert result.counts["deferred_in_cycle"] == 1
    assert "client.creating" in [e.action for e in _journal(store, lead_id)]
    assert [c["name"] for c in clients(onec_emu)].count("Новикова Н.Н.") == 1
    assert result.counts.get("clients_created") is None
    made = next(c for c in clients(onec_emu) if c["name"] == "Новикова Н.Н.")
    assert client_of(onec_emu, lead_id) == made["ref"]
    assert contact_of(amo_emu, lead_id)["fields"] == {KEY_FIELD: made["ref"]}


@pytest.mark.parametrize("spec", [{"status": 500}, {"phase": "after", "drop": True}])
def test_given_the_contact_key_write_fails_when_registering_then_the_zayavka_is_still_registered(
        amo_emu, onec_emu, settings, store, spec):
    lead_id = flagged_lead(amo_emu, client="Новикова Н.Н.", contact={"name": "Н", "phones": [SEED_PHONE]})
    fault(amo_emu, count=1, method="PATCH", path_prefix="/api/v4/contacts", **spec)
    result = registered(amo_emu, onec_emu, settings, store)
    assert len(zayavki(onec_emu, lead_id)) == 1
    assert note(amo_emu, lead_id).startswith("Создан документ")
    actions = [e.action for e in _journal(store, lead_id)]
    assert "contact.key_writing" in actions
    assert "contact.key_failed" in actions
    assert result.counts["contact_keys_failed"] == 1
    # the next lead of that patient still finds the client (by phone and name) and writes the key then
    cid = contact_of(amo_emu, lead_id)["id"]
    second = flagged_lead(amo_emu, client="Новикова Н.Н.", contact={"id": cid}, time="10:00")
    registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, second) == client_of(onec_emu, lead_id)
    assert contact_of(amo_emu, second)["fields"] == {KEY_FIELD: client_of(onec_emu, lead_id)}


# --- bad input ---------------------------------------------------------------------------------

def test_given_a_phone_with_letters_when_registered_then_ignored_with_a_note_and_the_name_decides(
        amo_emu, onec_emu, settings, store):
    named = client_in_1c(onec_emu, "Иванова Анна")
    lead_id = flagged_lead(amo_emu, client="Иванова Анна", contact={"phones": ["8 911 ABC-45-67"]})
    registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, lead_id) == named["ref"]
    assert note(amo_emu, lead_id).endswith("Телефон «8 911 ABC-45-67» не учтён: в номере есть буквы.")


def test_given_an_empty_contact_when_registered_then_the_lead_name_decides(amo_emu, onec_emu, settings, store):
    lead_id = flagged_lead(amo_emu, client="Иванова Анна", contact={"name": "", "phones": []})
    registered(amo_emu, onec_emu, settings, store)
    [made] = [c for c in clients(onec_emu) if c["ref"] == client_of(onec_emu, lead_id)]
    assert (made["name"], made["phones"]) == ("Иванова Анна", [])


def test_given_a_contact_with_five_phones_when_one_is_a_clients_then_found_by_it(
        amo_emu, onec_emu, settings, store):
    anna = client_in_1c(onec_emu, "Иванова Анна", SEED_PHONE)
    phones = ["+7 495 000-00-01", "+7 495 000-00-02", "8 (911) 123-45-67", "+7 495 000-00-04", "нет"]
    lead_id = flagged_lead(amo_emu, client="Иванова Анна", contact={"name": "Анна", "phones": phones})
    registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, lead_id) == anna["ref"]
    assert note(amo_emu, lead_id).endswith("Телефон «нет» не учтён: в номере есть буквы.")


def test_given_a_lead_with_two_contacts_when_registered_then_the_main_one_counts(
        amo_emu, onec_emu, settings, store):
    anna = client_in_1c(onec_emu, "Иванова Анна", SEED_PHONE)
    client_in_1c(onec_emu, "Иванова Анна", "+7 495 765-43-21")
    lead_id = flagged_lead(amo_emu, client="Иванова Анна", contacts=[
        {"name": "Анна", "phones": [SEED_PHONE]}, {"name": "Муж", "phones": ["+7 495 765-43-21"]}])
    registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, lead_id) == anna["ref"]
    view = lead(amo_emu, lead_id)
    assert view["contacts"][0]["fields"] == {KEY_FIELD: anna["ref"]}
    assert view["contacts"][1]["fields"] == {}


def test_given_a_client_marked_for_deletion_holding_the_phone_when_registered_then_skipped(
        amo_emu, onec_emu, settings, store):
    gone = client_in_1c(onec_emu, "Иванова Анна", SEED_PHONE, deleted=True)
    lead_id = flagged_lead(amo_emu, client="Иванова Анна", contact={"phones": [SEED_PHONE]})
    result = registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, lead_id) != gone["ref"]
    assert result.counts["clients_created"] == 1


def test_given_a_name_with_quotes_when_looked_up_in_1c_then_escaped_and_found(
        amo_emu, onec_emu, settings, store):
    named = client_in_1c(onec_emu, "O'Brien 'Шон'")
    lead_id = flagged_lead(amo_emu, client="O'Brien 'Шон'", contact={"name": "Шон", "phones": []})
    registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, lead_id) == named["ref"]


def _journal(store, lead_id) -> list[JournalEntry]:
    with store.session() as s:
        rows = list(s.query(JournalEntry).filter_by(lead_id=lead_id).order_by(JournalEntry.id))
        for r in rows:
            s.expunge(r)
        return rows


def test_given_a_new_patient_when_dry_run_then_the_client_with_its_phone_and_the_contact_key_are_planned_only(
        amo_emu, onec_emu, settings, store):
    lead_id = flagged_lead(amo_emu, client="Новикова Н.Н.", contact={"name": "Н", "phones": [SEED_PHONE]})
    before = clients(onec_emu)
    reset_requests(amo_emu)
    reset_requests(onec_emu)
    result = run(settings, store, dry_run=True)
    assert result.ok, result.errors
    planned = {p["action"]: p for p in result.planned}
    assert planned["client.create"]["name"] == "Новикова Н.Н."
    assert planned["client.create"]["phones"] == ["+7 911 123-45-67"]
    assert planned["contact.update"]["contact_id"] == contact_of(amo_emu, lead_id)["id"]
    assert writes(requests_of(amo_emu)) == {}
    assert writes(requests_of(onec_emu)) == {}
    assert clients(onec_emu) == before
    assert contact_of(amo_emu, lead_id)["fields"] == {}


def test_given_a_batch_of_new_patients_when_registered_then_their_keys_go_in_one_contacts_patch(
        amo_emu, onec_emu, settings, store):
    ids = [flagged_lead(amo_emu, client=f"Пациентова {n}.", contact={"phones": [f"8 911 555-44-3{i}"]},
                        time=t) for i, (n, t) in enumerate([("А", "9:05"), ("Б", "10:00"), ("В", "11:00")])]
    reset_requests(amo_emu)
    result = registered(amo_emu, onec_emu, settings, store)
    assert requests_of(amo_emu)["counts"]["PATCH /api/v4/contacts"] == 1
    assert result.counts["contact_keys_written"] == 3
    assert result.counts["clients_created"] == 3
    assert all(contact_of(amo_emu, i)["fields"] == {KEY_FIELD: client_of(onec_emu, i)} for i in ids)


def test_given_two_leads_of_one_new_patient_in_one_batch_when_registered_then_one_client(
        amo_emu, onec_emu, settings, store):
    first = flagged_lead(amo_emu, client="Новикова Н.Н.", contact={"name": "Н", "phones": [SEED_PHONE]})
    cid = contact_of(amo_emu, first)["id"]
    second = flagged_lead(amo_emu, client="Новикова Н.Н.", contact={"id": cid}, time="10:00")
    result = registered(amo_emu, onec_emu, settings, store)
    assert client_of(onec_emu, first) == client_of(onec_emu, second)
    assert result.counts["clients_created"] == 1
    assert result.counts["contact_keys_written"] == 1
    assert contact_of(amo_emu, first)["fields"] == {KEY_FIELD: client_of(onec_emu, first)}


def test_given_amocrm_fails_to_list_the_contacts_when_registering_then_nothing_is_written_and_the_next_cycle_does_it(
        amo_emu, onec_emu, settings, store):
    anna = client_in_1c(onec_emu, "Иванова Анна", SEED_PHONE)
    lead_id = flagged_lead(amo_emu, client="Иванова Анна", contact={"phones": [SEED_PHONE]})
    fault(amo_emu, count=1, status=500, method="GET", path_prefix="/api/v4/contacts")
    first = run(settings, store)
    assert not first.ok
    assert "will retry" in first.errors[0]
    assert zayavki(onec_emu, lead_id) == []
    assert lead(amo_emu, lead_id)["notes"] == []
    registered(amo_emu, onec_emu, settings, store)  # the cursor did not move past the lead
    assert client_of(onec_emu, lead_id) == anna["ref"]
