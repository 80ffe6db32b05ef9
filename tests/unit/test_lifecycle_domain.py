"""The lifecycle's pure decisions: events, notes, lead values, stage names and stage moves."""

from dataclasses import replace
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from amo1c_sync.domain import lifecycle as lc
from amo1c_sync.domain.lifecycle import Appointment, LeadStage, Stage, StageName, StateValues
from amo1c_sync.errors import ConfigError

MSK = ZoneInfo("Europe/Moscow")
A = Appointment(number="00000000219", day=date(2021, 12, 22), start=time(9, 5), doctor="Ефимова Е.В.")
MOVED_A = replace(A, day=date(2021, 12, 23), start=time(15, 30), doctor="Ишаева М.И.")
STATES = StateValues(cancelled=("Отменена",), no_show=("Не пришел",))


def kinds(events):
    return [(e.kind, e.reason) for e in events]


@pytest.mark.parametrize(("last", "now", "expected"), [
    (A, A, []),
    (A, replace(A, doctor="  ефимова   е.в. "), []),
    (A, MOVED_A, [("moved", "")]),
    (A, replace(A, start=time(9, 10)), [("moved", "")]),
    (A, replace(A, day=date(2021, 12, 24)), [("moved", "")]),
    (A, replace(A, deleted=True, posted=False), [("cancelled", "deletion_mark")]),
    (A, replace(A, deleted=True), [("cancelled", "deletion_mark")]),
    (A, replace(A, posted=False), [("cancelled", "unposted")]),
    (A, replace(A, state="Отменена"), [("cancelled", "state")]),
    (A, replace(A, state="отменена "), [("cancelled", "state")]),
    (A, None, [("cancelled", "removed")]),
    (A, replace(MOVED_A, deleted=True), [("cancelled", "deletion_mark")]),
    (A, replace(A, state="Не пришел"), [("no_show", "")]),
    (replace(A, state="Не пришел"), replace(A, state="Не пришел"), []),
    (A, replace(A, state="Пришел"), []),
    (replace(A, deleted=True), replace(A, deleted=True, posted=False), []),
    (replace(A, posted=False), replace(MOVED_A, posted=False), []),
    (replace(A, posted=False), None, []),
    (replace(A, posted=False), A, [("restored", "unposted")]),
    (replace(A, deleted=True), MOVED_A, [("restored", "deletion_mark"), ("moved", "")]),
    (None, A, []),
    (None, replace(A, deleted=True), []),
])
def test_given_the_last_mirrored_and_the_current_state_when_compared_then_these_events(last, now, expected):
    assert kinds(lc.detect(last, now, STATES)) == expected


def test_given_no_status_values_configured_when_the_state_changes_then_it_is_no_event():
    assert lc.detect(A, replace(A, state="Отменена")) == ()
    assert lc.detect(A, replace(A, state="Не пришел")) == ()


def test_given_amo1c_sync_wrote_the_change_itself_when_1c_shows_it_then_it_is_no_event():
    assert lc.detect(A, MOVED_A, STATES, written=MOVED_A) == ()
    cancelled_by_card = replace(A, deleted=True)
    assert lc.detect(A, cancelled_by_card, STATES, written=cancelled_by_card) == ()


def test_given_a_person_changed_it_after_amo1c_sync_wrote_when_compared_then_the_move_is_from_what_was_written():
    later = replace(MOVED_A, start=time(16, 0))
    (event,) = lc.detect(A, later, STATES, written=MOVED_A)
    assert event.note == "Запись перенесена: 23.12.2021 15:30 Ишаева М.И. -> 23.12.2021 16:00 Ишаева М.И."


@pytest.mark.parametrize(("now", "note"), [
    (MOVED_A, "Запись перенесена: 22.12.2021 9:05 Ефимова Е.В. -> 23.12.2021 15:30 Ишаева М.И."),
    (replace(A, deleted=True),
     "Запись отменена в 1С (Заявка № 219 помечена на удаление): 22.12.2021 9:05 Ефимова Е.В."),
    (replace(A, posted=False),
     "Запись отменена в 1С (проведение документа Заявка № 219 отменено): 22.12.2021 9:05 Ефимова Е.В."),
    (replace(A, state="Отменена"),
     "Запись отменена в 1С (Заявка № 219: состояние «Отменена»): 22.12.2021 9:05 Ефимова Е.В."),
    (None, "Запись отменена в 1С (Заявка № 219 удалена): 22.12.2021 9:05 Ефимова Е.В."),
    (replace(A, state="Не пришел"),
     "Пациент не пришёл на приём 22.12.2021 9:05 Ефимова Е.В. (Заявка № 219: состояние «Не пришел»)"),
])
def test_given_an_event_when_its_note_is_written_then_the_text_is_this(now, note):
    (event,) = lc.detect(A, now, STATES)
    assert event.note == note


def test_given_a_restored_zayavka_when_its_note_is_written_then_it_says_it_stands_again():
    (event,) = lc.detect(replace(A, posted=False), A, STATES)
    assert event.note == "Запись снова действует в 1С (Заявка № 219): 22.12.2021 9:05 Ефимова Е.В."
    assert event.stage is None


@pytest.mark.parametrize(("now", "stage"), [
    (replace(A, deleted=True), "cancelled"), (replace(A, state="Не пришел"), "no_show"), (MOVED_A, None)])
def test_given_an_event_when_asked_for_its_stage_key_then_cancel_and_no_show_have_one(now, stage):
    (event,) = lc.detect(A, now, STATES)
    assert event.stage == stage


def test_given_the_card_cancel_when_notes_are_written_then_the_number_has_no_leading_zeros():
    assert lc.card_cancelled_note("00000000219") == "Запись отменена: Заявка № 219"
    assert lc.card_already_cancelled_note("219").startswith("Запись уже отменена: Заявка № 219")
    assert lc.nothing_to_cancel_note() == "Отменять нечего: у сделки нет записи в 1С."


def test_given_a_moved_zayavka_when_lead_values_are_made_then_they_are_what_1c_says_in_amocrm_form():
    values = lc.lead_values(MOVED_A, MSK)
    assert values == {"date": int(datetime(2021, 12, 23, tzinfo=MSK).timestamp()),
                      "doctor": "Ишаева М.И.", "time": "15:30"}


# --- stage names and their resolution -------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("Запись к врачу / Отменена", StageName("Запись к врачу", "Отменена")),
    ("Запись к врачу/Отменена", StageName("Запись к врачу", "Отменена")),
    ("  Запись  к врачу  /  Не пришёл ", StageName("Запись к врачу", "Не пришёл")),
    ("Запись/перезапись / Отменена", StageName("Запись/перезапись", "Отменена")),
    ("", None), ("   ", None),
])
def test_given_a_stage_name_when_parsed_then_pipeline_and_stage(text, expected):
    assert lc.parse_stage_name(text) == expected


@pytest.mark.parametrize("text", ["Отменена", "Запись к врачу /", "/ Отменена", "a / b / c", "a/b/c"])
def test_given_a_malformed_stage_name_when_parsed_then_the_error_shows_the_form(text):
    with pytest.raises(ValueError, match="is not \"Pipeline name / Stage name\""):
        lc.parse_stage_name(text)


def pipelines(*spec):
    return {"_embedded": {"pipelines": [
        {"id": pid, "name": name, "_embedded": {"statuses": [
            {"id": sid, "name": sname, "pipeline_id": pid} for sid, sname in statuses]}}
        for pid, name, statuses in spec]}}


LISTING = pipelines(
    (10, "Запись к врачу", [(1, "Неразобранное"), (101, "Новая заявка"), (102, "Записан на приём"),
                            (103, "Оплачено"), (104, "Отменена"), (105, "Не пришёл"),
                            (142, "Успешно реализовано"), (143, "Закрыто и не реализовано")]),
    (20, "Воронка", [(201, "Первичный контакт"), (142, "Успешно реализовано")]))


def test_given_configured_names_when_resolved_then_ids_and_empty_keys_are_no_move():
    names = {"registered": StageName("запись к врачу", "Записан на приём"),
             "cancelled": StageName("Запись к врачу", "Закрыто и не реализовано"), "paid": None}
    assert lc.resolve_stages(names, LISTING) == {
        "registered": Stage(10, 102, "Запись к врачу", "Записан на приём"),
        "cancelled": Stage(10, 143, "Запись к врачу", "Закрыто и не реализовано")}


@pytest.mark.parametrize(("name", "message"), [
    (StageName("Запись", "Отменена"), "sync.ini [stages] cancelled: «Запись / Отменена»: no pipeline «Запись»"),
    (StageName("Воронка", "Отменена"), "no stage «Отменена» in pipeline «Воронка»"),
])
def test_given_an_unknown_name_when_resolved_then_the_error_lists_what_exists(name, message):
    with pytest.raises(ConfigError) as err:
        lc.resolve_stages({"cancelled": name}, LISTING)
    text = str(err.value)
    assert message in text
    assert "«Запись к врачу»: «Неразобранное», «Новая заявка», «Записан на приём»" in text
    assert "«Воронка»: «Первичный контакт», «Успешно реализовано»" in text


def test_given_two_pipelines_of_one_name_when_resolved_then_it_is_an_error_not_a_guess():
    twice = pipelines((1, "Запись", [(11, "Отменена")]), (2, "запись", [(21, "Отменена")]))
    with pytest.raises(ConfigError, match="2 pipelines are named «Запись»"):
        lc.resolve_stages({"cancelled": StageName("Запись", "Отменена")}, twice)


def test_given_an_empty_listing_when_resolved_then_the_error_says_none_exist():
    with pytest.raises(ConfigError, match=r"pipelines and stages in amoCRM: \(none\)"):
        lc.resolve_stages({"paid": StageName("Запись", "Оплачено")}, {})


# --- stage moves ------------------------------------------------------------------------------------

STAGES = {"registered": Stage(10, 102, "Запись к врачу", "Записан на приём"),
          "paid": Stage(10, 103, "Запись к врачу", "Оплачено"),
          "cancelled": Stage(10, 104, "Запись к врачу", "Отменена")}


@pytest.mark.parametrize(("key", "lead", "passed", "move_closed", "expected"), [
    ("registered", LeadStage(10, 101), (), False, "move"),
    ("cancelled", LeadStage(10, 103), (102, 103), False, "move"),
    ("no_show", LeadStage(10, 102), (), False, "not_configured"),
    ("paid", LeadStage(10, 103), (), False, "already_there"),
    ("paid", LeadStage(10, 142), (), False, "closed"),
    ("cancelled", LeadStage(10, 143), (), False, "closed"),
    ("paid", LeadStage(10, 142), (), True, "move"),
    ("registered", LeadStage(20, 201), (), False, "other_pipeline"),
    ("registered", LeadStage(20, 201), (), True, "move"),
    ("registered", LeadStage(10, 103), (102, 103), False, "already_passed"),
    ("registered", LeadStage(10, 104), (102, 104), True, "already_passed"),
])
def test_given_an_event_and_the_leads_stage_when_deciding_then_move_or_stay_for_this_reason(
        key, lead, passed, move_closed, expected):
    decision = lc.decide_move(key, lead, STAGES, passed=passed, move_closed=move_closed)
    if expected == "move":
        assert decision == lc.Move(key, STAGES[key])
    else:
        assert decision == lc.Stay(key, expected)


def test_given_a_move_when_patched_then_the_element_carries_pipeline_and_status():
    move = lc.decide_move("paid", LeadStage(10, 102), STAGES)
    assert lc.lead_patch(30000093, move) == {"id": 30000093, "pipeline_id": 10, "status_id": 103}
