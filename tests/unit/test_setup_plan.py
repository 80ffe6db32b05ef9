"""`setup amocrm`'s plan, with no account: what exists, what to create, what has the wrong type."""

from __future__ import annotations

from amo1c_sync.commands.setup import FIELD_TYPES, field_body, plan_fields, time_grid
from amo1c_sync.config import FieldNames


def test_given_every_configured_field_when_planned_then_each_has_a_type_to_create():
    # a [fields] key added later must say which amoCRM type `setup amocrm` creates for it
    assert set(FIELD_TYPES) == set(vars(FieldNames()))


def test_given_an_account_with_some_fields_when_planned_then_only_the_missing_are_created_and_none_changed():
    existing = [{"id": 1, "name": "Врач", "type": "select"}, {"id": 2, "name": "сумма1с", "type": "numeric"},
                {"id": 3, "name": "Дата записи к врачу", "type": "text"}]
    plans = {p.key: p for p in plan_fields(FieldNames(), existing)}
    assert plans["doctor"].action == "exists"
    assert plans["doctor"].field_id == 1
    assert plans["sum"].action == "exists"  # a name differing only in case is the same field to a person
    assert plans["date"].action == "wrong_type"
    assert plans["date"].found_type == "text"
    assert {k for k, p in plans.items() if p.action == "create"} == {"time", "client_name", "flag",
                                                                       "zayavka_number"}


def test_given_an_optional_field_left_empty_when_planned_then_it_is_not_created():
    names = FieldNames(zayavka_number="", client_name="")
    assert {p.key for p in plan_fields(names, [])} == {"date", "doctor", "time", "sum", "flag"}


def test_given_a_select_when_its_body_is_built_then_options_are_enums_in_order():
    (plan,) = [p for p in plan_fields(FieldNames(), []) if p.key == "time"]
    body = field_body(plan, time_grid(15)[:3])
    assert body == {"name": "Время записи", "type": "select",
                    "enums": [{"value": "8:00", "sort": 10}, {"value": "8:15", "sort": 20},
                              {"value": "8:30", "sort": 30}]}
    assert time_grid(5)[-1] == "20:00"
    assert len(time_grid(5)) == 145
