"""The amoCRM emulator's event log over HTTP: lead edits (the API's PATCH and the control API) are
recorded as amoCRM records them and ``GET /api/v4/events`` serves them with its filters and paging."""

from __future__ import annotations

import itertools

import requests

from tests.support.e2e import TOKEN, edit_lead, new_lead

FLAG = "Зарегистрировать в 1С"


def _events(emu, **params) -> requests.Response:
    return requests.get(emu.url + "/api/v4/events", params=params, timeout=5,
                        headers={"Authorization": f"Bearer {TOKEN}"})


def _patch(emu, lead_id, field_id, values) -> None:
    r = requests.patch(emu.url + "/api/v4/leads", timeout=5, headers={"Authorization": f"Bearer {TOKEN}"},
                       json=[{"id": lead_id, "custom_fields_values": [{"field_id": field_id, "values": values}]}])
    r.raise_for_status()


def test_given_a_flag_set_through_the_api_when_listing_its_events_then_value_before_and_after_show_the_change(amo_emu):
    flag = amo_emu.field_id(FLAG)
    lead_id = new_lead(amo_emu, **{"ФИО клиента": "Петров"})
    _patch(amo_emu, lead_id, flag, [{"value": True}])
    r = _events(amo_emu, **{"filter[type]": f"custom_field_{flag}_value_changed", "filter[entity]": "lead"})
    assert r.status_code == 200
    (event,) = r.json()["_embedded"]["events"]
    assert event["type"] == f"custom_field_{flag}_value_changed"
    assert event["entity_id"] == lead_id
    assert event["entity_type"] == "lead"
    assert event["value_before"] == []
    assert event["value_after"] == [{"custom_field_value": {"field_id": flag, "field_type": 3,
                                                            "enum_id": None, "text": "1"}}]
    assert event["created_at"] == amo_emu.lead(lead_id)["updated_at"]


def test_given_edits_on_the_card_when_listing_events_then_lead_added_and_each_field_change_are_there(amo_emu):
    lead_id = new_lead(amo_emu, Врач="Ефимова Е.В.")
    edit_lead(amo_emu, lead_id, **{"Врач": "Петрова А.С.", FLAG: True})
    edit_lead(amo_emu, lead_id, Врач="Петрова А.С.")   # the same value: no change, no event
    doctor = amo_emu.field_id("Врач")
    found = _events(amo_emu, **{"filter[entity_id]": lead_id, "filter[entity]": "lead"}).json()["_embedded"]["events"]
    types = [e["type"] for e in found]   # newest first
    assert sorted(types) == sorted(["lead_added", f"custom_field_{doctor}_value_changed",
                                    f"custom_field_{doctor}_value_changed",
                                    f"custom_field_{amo_emu.field_id(FLAG)}_value_changed"])
    assert types[-1] == "lead_added"
    change = next(e for e in found if e["type"] == f"custom_field_{doctor}_value_changed" and e["value_before"])
    assert change["value_before"][0]["custom_field_value"]["text"] == "Ефимова Е.В."
    assert change["value_after"][0]["custom_field_value"]["text"] == "Петрова А.С."
    assert change["value_after"][0]["custom_field_value"]["enum_id"] is not None


def test_given_events_over_time_when_filtering_by_created_at_and_type_then_only_those_come(amo_emu):
    seconds = itertools.count(1_700_000_000, 10)
    amo_emu.book.clock = lambda: next(seconds)
    flag = amo_emu.field_id(FLAG)
    leads = [new_lead(amo_emu, **{"ФИО клиента": f"П{i}"}) for i in range(3)]
    for lead_id in leads:
        _patch(amo_emu, lead_id, flag, [{"value": True}])
    every = _events(amo_emu, **{"filter[type]": f"custom_field_{flag}_value_changed"}).json()["_embedded"]["events"]
    cut = sorted(e["created_at"] for e in every)[1]
    later = _events(amo_emu, **{"filter[type]": f"custom_field_{flag}_value_changed,lead_added",
                                "filter[created_at][from]": cut}).json()["_embedded"]["events"]
    assert {e["entity_id"] for e in later} == set(leads[1:])
    assert all(e["created_at"] >= cut for e in later)
    assert _events(amo_emu, **{"filter[type]": "lead_status_changed"}).status_code == 204


def test_given_more_events_than_a_page_when_paging_then_every_one_comes_once_and_limit_caps_at_100(amo_emu):
    for _ in range(105):
        new_lead(amo_emu)
    page1 = _events(amo_emu, **{"filter[type]": "lead_added", "limit": 500})
    assert len(page1.json()["_embedded"]["events"]) == 100
    assert "next" in page1.json()["_links"]
    page2 = _events(amo_emu, **{"filter[type]": "lead_added", "limit": 500, "page": 2}).json()
    assert len(page2["_embedded"]["events"]) == 5
    assert "next" not in page2["_links"]
    ids = [e["id"] for e in page1.json()["_embedded"]["events"] + page2["_embedded"]["events"]]
    assert len(set(ids)) == 105
    assert _events(amo_emu, **{"filter[type]": "lead_added", "limit": 50, "page": 4}).status_code == 204


def test_given_a_bad_timestamp_when_filtering_events_then_400_names_the_parameter(amo_emu):
    r = _events(amo_emu, **{"filter[created_at][from]": "yesterday"})
    assert r.status_code == 400
    assert "filter[created_at][from]" in r.json()["detail"]
