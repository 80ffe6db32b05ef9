"""``[stages]``, ``[sync] cancel_mode`` and the «Заявка» state values in sync.ini."""

from pathlib import Path

import pytest

from amo1c_sync.config import load_settings
from amo1c_sync.domain.lifecycle import StageName, StateValues
from amo1c_sync.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    p = tmp_path / "sync.ini"
    p.write_text(text, encoding="utf-8")
    return p


def test_given_the_shipped_example_when_loaded_then_no_stage_moves_and_cancel_by_deletion_mark():
    s = load_settings(ROOT / "sync.ini")
    assert s.stages.names() == {"registered": None, "cancelled": None, "no_show": None, "paid": None}
    assert s.stages.move_closed is False
    assert s.sync.cancel_mode == "delete_mark"
    assert s.sync.state_values == StateValues()
    assert s.onec_names.zayavka_state == ""


def test_given_stages_and_states_when_loaded_then_they_are_parsed(tmp_path):
    s = load_settings(write(tmp_path, (
        "[stages]\nregistered = Запись к врачу / Записан на приём\ncancelled = Запись к врачу/Отменена\n"
        "move_closed = yes\n"
        "[sync]\ncancel_mode = unpost\ncancelled_states = Отменена, Отказ\nno_show_states = Не пришел\n"
        "[onec_names]\nzayavka_state = Состояние\n")))
    assert s.stages.names() == {"registered": StageName("Запись к врачу", "Записан на приём"),
                                "cancelled": StageName("Запись к врачу", "Отменена"),
                                "no_show": None, "paid": None}
    assert s.stages.move_closed is True
    assert s.sync.cancel_mode == "unpost"
    assert s.sync.state_values == StateValues(cancelled=("Отменена", "Отказ"), no_show=("Не пришел",))
    assert s.onec_names.zayavka_state == "Состояние"


@pytest.mark.parametrize(("text", "expected"), [
    ("[stages]\ncancelled = Отменена\n",
     'sync.ini [stages] cancelled: "Отменена" is not "Pipeline name / Stage name"'),
    ("[stages]\npaid = a / b / c\n", '[stages] paid: "a / b / c" is not "Pipeline name / Stage name"'),
    ("[stages]\nmove_closed = sometimes\n", '[stages] move_closed: "sometimes" is not a yes/no value'),
    ("[stages]\nwon = Воронка / Успешно\n", "[stages] won: unknown key; valid keys are registered, "
                                             "cancelled, no_show, paid, move_closed"),
    ("[sync]\ncancel_mode = erase\n", '[sync] cancel_mode: "erase" is not valid; use one of delete_mark, unpost'),
    ("[sync]\nno_show_states = Не пришел\n",
     "[sync] no_show_states: needs the «Заявка» attribute that holds the state; set [onec_names] zayavka_state"),
    ("[onec_names]\nzayavka_state = Состояние\n[sync]\ncancelled_states = Не пришел\nno_show_states = не пришел\n",
     "[sync] no_show_states: «не пришел» is also in cancelled_states"),
    ("[onec_names]\nzayavka_state = 1Состояние\n", "zayavka_state='1Состояние' is not a 1C name"),
])
def test_given_a_bad_lifecycle_value_when_loaded_then_the_error_names_section_key_and_what_is_valid(
        tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert expected in str(err.value)
