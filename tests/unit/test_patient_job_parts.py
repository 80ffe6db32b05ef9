"""The pure parts of jobs/patient.py and of `setup amocrm`'s contact field: how an amoCRM contact's
answer is read (its PHONE values, the key field) and what set-up plans for «Клиент 1С»."""

from __future__ import annotations

from amo1c_sync.commands.setup import plan_contact_field
from amo1c_sync.jobs.patient import Contact, _contact

KEY_FIELD_ID = 40001


def test_given_a_contact_answer_when_read_then_every_phone_value_and_the_key_field():
    answer = {"id": 7, "name": "Иванова Анна", "custom_fields_values": [
        {"field_id": 1, "field_code": "PHONE", "values": [
            {"value": "8 (911) 123-45-67", "enum_code": "WORK"}, {"value": " ", "enum_code": "MOB"},
            {"value": "+7 495 123-45-67", "enum_code": "HOME"}]},
        {"field_id": 2, "field_code": "EMAIL", "values": [{"value": "a@example.ru"}]},
        {"field_id": KEY_FIELD_ID, "field_code": None, "values": [{"value": "6f1c3a52-0d1e-4f0a-9b7e-1a2b3c4d5e6f"}]},
    ]}
    assert _contact(answer, KEY_FIELD_ID) == Contact(7, "Иванова Анна", ("8 (911) 123-45-67", "+7 495 123-45-67"),
                                                     "6f1c3a52-0d1e-4f0a-9b7e-1a2b3c4d5e6f")
    assert _contact(answer, None).key == ""  # the key field switched off: never read


def test_given_an_empty_contact_when_read_then_no_name_no_phones_no_key():
    assert _contact({"id": 8, "name": None, "custom_fields_values": None}, KEY_FIELD_ID) == Contact(8)


def test_given_the_accounts_contact_fields_when_planning_the_key_field_then_create_exists_wrong_or_off():
    fields = [{"id": 1, "name": "Телефон", "type": "multitext"}, {"id": 5, "name": "клиент 1с", "type": "text"},
              {"id": 6, "name": "Карта", "type": "numeric"}]
    assert plan_contact_field("Клиент 1С", fields).action == "exists"
    assert plan_contact_field("Клиент 1С", fields).field_id == 5
    assert plan_contact_field("Карта", fields).action == "wrong_type"
    assert plan_contact_field("Номер в 1С", fields).action == "create"
    assert plan_contact_field("  ", fields) is None
