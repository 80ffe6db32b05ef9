"""Pure pieces of the registration's change detection: reading a field-change event, opening and
closing leads from a batch of events, and its setting."""

from __future__ import annotations

import pytest

from amo1c_sync.amocrm import events
from amo1c_sync.config import load_settings
from amo1c_sync.errors import ConfigError
from amo1c_sync.jobs.flagged import _apply


def _event(lead_id: int, at: int, text: str, eid: str = "") -> dict:
    return {"id": eid or f"{lead_id}-{at}-{text}", "entity_id": lead_id, "created_at": at,
            "type": "custom_field_7_value_changed",
            "value_after": [{"custom_field_value": {"field_id": 7, "field_type": 3, "enum_id": None, "text": text}}]}


@pytest.mark.parametrize(("after", "is_set"), [
    ([{"custom_field_value": {"text": "1"}}], True),
    ([{"custom_field_value": {"text": "0"}}], False),
    ([{"custom_field_value": {"text": ""}}], False),
    ([], False),
    ([{"custom_field_value": {"text": "Да", "enum_id": 5}}], True),
    (["not an object"], False),
])
def test_given_a_field_change_event_when_read_then_it_says_whether_the_field_was_left_set(after, is_set):
    assert events.set_value({"value_after": after}) is is_set


def test_given_a_flag_set_then_cleared_when_applied_then_the_lead_is_closed_and_a_new_one_opened():
    fresh = [_event(2, 105, "0"), _event(1, 100, "1"), _event(3, 101, "1"), _event(1, 104, "0")]
    assert _apply({2}, fresh) == {3}


def test_given_a_set_and_a_clear_in_the_same_second_when_applied_then_the_lead_stays_open_to_be_read():
    assert _apply(set(), [_event(1, 100, "0"), _event(1, 100, "1")]) == {1}
    assert _apply(set(), [_event(1, 100, "1"), _event(1, 100, "0")]) == {1}


def test_given_an_event_type_for_a_field_when_built_then_it_names_the_field_id():
    assert events.field_changed_type(1000006) == "custom_field_1000006_value_changed"


def test_given_a_reconcile_interval_when_loaded_then_durations_are_read_and_zero_is_refused(tmp_path):
    path = tmp_path / "sync.ini"
    path.write_text("[sync]\nlead_reconcile_interval = 2h\n", encoding="utf-8")
    path.chmod(0o600)
    assert load_settings(path).sync.lead_reconcile_interval == 7200
    path.write_text("[sync]\nlead_reconcile_interval = 0s\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "[sync] lead_reconcile_interval" in str(err.value)
    assert "greater than 0" in str(err.value)
