"""F7 end to end over HTTP against both emulators: what the clinic does to a «Заявка» in 1C
reaches its lead (note, fields, stage), once, with no echoes; crash safety by after-commit faults."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest
import requests

from amo1c_sync.config import load_settings
from amo1c_sync.domain.registration import display_number
from amo1c_sync.onec import OneC
from amo1c_sync.onec.names import OneCNames
from amo1c_sync.sandbox.onec_emulator import OneCEmulator
from amo1c_sync.store import journal
from amo1c_sync.store import lifecycle as lstore
from tests.support.e2e import (
    EFIMOVA,
    ISHAEVA,
    SEED_DAY,
    TOKEN,
    edit_lead,
    fault,
    lead,
    new_lead,
    requests_of,
    reset_requests,
    writes,
    zayavki,
)
from tests.support.lifecycle import (
    MSK,
    STAGES,
    TOMORROW,
    act,
    at,
    booked,
    cycle,
    notes,
    registered_from_card,
    run,
    settings_for,
    where,
)


@pytest.fixture
def onec_emu():
    with OneCEmulator(names=OneCNames(zayavka_state="Состояние")) as e:
        yield e


@pytest.fixture
def settings(amo_emu, onec_emu):
    return settings_for(amo_emu, onec_emu)


# --- events -------------------------------------------------------------------------------------

def test_given_a_hand_made_zayavka_when_first_seen_then_the_lead_moves_to_registered(
        amo_emu, onec_emu, settings, store):
    lid, _ = booked(amo_emu, onec_emu)
    result = cycle(settings, store)
    assert lead(amo_emu, lid)["status"] == "Записан на приём"
    assert notes(amo_emu, lid) == []
    assert result.counts["first_seen"] == 1


def test_given_a_zayavka_moved_in_1c_when_a_cycle_runs_then_the_lead_shows_the_new_time_and_a_note(
        amo_emu, onec_emu, settings, store):
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    later = TOMORROW + timedelta(days=1)
    act(onec_emu, ref, start=at(later, "15:30"), doctor=ISHAEVA)

    cycle(settings, store)

    shown = lead(amo_emu, lid)
    assert shown["fields"]["Дата записи к врачу"] == later.strftime("%d.%m.%Y")
    assert (shown["fields"]["Врач"], shown["fields"]["Время записи"]) == (ISHAEVA, "15:30")
    assert notes(amo_emu, lid) == [
        f"Запись перенесена: {where(TOMORROW, '09:05', EFIMOVA)} -> {where(later, '15:30', ISHAEVA)}"]
    assert shown["status"] == "Записан на приём"
    cycle(settings, store)
    assert len(notes(amo_emu, lid)) == 1


@pytest.mark.parametrize(("action", "body", "why"), [
    ("delete", {}, "помечена на удаление"),
    ("unpost", {}, "проведение документа"),
    (None, {"state": "Отменена"}, "состояние «Отменена»"),
])
def test_given_a_zayavka_cancelled_in_1c_when_a_cycle_runs_then_a_note_and_the_cancelled_stage(
        amo_emu, onec_emu, settings, store, action, body, why):
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    act(onec_emu, ref, action, **body)

    cycle(settings, store)

    (note,) = notes(amo_emu, lid)
    assert note.startswith("Запись отменена в 1С (")
    assert why in note
    assert lead(amo_emu, lid)["status"] == "Отменена"


def test_given_a_no_show_in_1c_when_a_cycle_runs_then_a_note_and_the_no_show_stage(amo_emu, onec_emu, settings, store):
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    act(onec_emu, ref, state="Не пришел")
    cycle(settings, store)
    assert notes(amo_emu, lid)[0].startswith("Пациент не пришёл на приём")
    assert lead(amo_emu, lid)["status"] == "Не пришёл"


def test_given_no_show_states_not_configured_when_the_state_changes_then_nothing_is_written(
        amo_emu, onec_emu, store):
    settings = load_settings(None, overrides={
        "amocrm": {"base_url": amo_emu.url, "long_lived_token": TOKEN, "rate_limit": "1000"},
        "onec": {"base_url": onec_emu.url, "username": onec_emu.username, "password": onec_emu.password},
        "onec_names": {"zayavka_state": "Состояние"}, "stages": STAGES})
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    act(onec_emu, ref, state="Не пришел")
    cycle(settings, store)
    assert notes(amo_emu, lid) == []
    assert lead(amo_emu, lid)["status"] == "Записан на приём"


def test_given_a_pushed_payment_when_a_cycle_runs_then_the_lead_moves_to_paid(amo_emu, onec_emu, settings, store):
    lid, _ = booked(amo_emu, onec_emu)
    cycle(settings, store)
    requests.post(onec_emu.url + "/_sandbox/services", json={"lead": lid, "amount": "150.00"},
                  timeout=5).raise_for_status()
    assert run(settings, store, "payments").status == "ok"
    cycle(settings, store)
    assert lead(amo_emu, lid)["status"] == "Оплачено"
    reset_requests(amo_emu)
    cycle(settings, store)
    assert requests_of(amo_emu)["counts"] == {}


# --- protection ---------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["Успешно реализовано", "Закрыто и не реализовано", "Воронка / Переговоры"])
def test_given_a_lead_closed_or_in_another_pipeline_when_its_zayavka_is_cancelled_then_its_stage_stays(
        amo_emu, onec_emu, settings, store, status):
    lid, ref = booked(amo_emu, onec_emu, status=status)
    before = lead(amo_emu, lid)["status"]
    cycle(settings, store)
    act(onec_emu, ref, "delete")
    result = cycle(settings, store)
    assert lead(amo_emu, lid)["status"] == before
    assert len(notes(amo_emu, lid)) == 1   # the note still tells what happened
    assert sum(v for k, v in result.counts.items() if k.startswith("stage_kept_")) == 1


def test_given_move_closed_when_a_closed_lead_is_cancelled_then_it_moves(amo_emu, onec_emu, store):
    settings = settings_for(amo_emu, onec_emu, move_closed="yes")
    lid, ref = booked(amo_emu, onec_emu, status="Успешно реализовано")
    cycle(settings, store)
    act(onec_emu, ref, "delete")
    cycle(settings, store)
    assert lead(amo_emu, lid)["status"] == "Отменена"


def test_given_a_reposted_zayavka_when_a_cycle_runs_then_the_lead_is_not_sent_back_to_registered(
        amo_emu, onec_emu, settings, store):
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    act(onec_emu, ref, "unpost")
    cycle(settings, store)
    act(onec_emu, ref, "post")
    cycle(settings, store)
    assert lead(amo_emu, lid)["status"] == "Отменена"
    assert notes(amo_emu, lid)[-1].startswith("Запись снова действует в 1С")


def test_given_a_deleted_lead_or_a_bad_number_when_seen_then_skipped_counted_and_journaled_once(
        amo_emu, onec_emu, settings, store):
    lid, ref = booked(amo_emu, onec_emu)
    requests.delete(f"{amo_emu.url}/_sandbox/leads/{lid}", timeout=5).raise_for_status()
    requests.post(onec_emu.url + "/_sandbox/zayavki", timeout=5,
                  json={"lead": "Иванова", "doctor": EFIMOVA, "start": at(TOMORROW, "10:00")}).raise_for_status()
    first = cycle(settings, store)
    assert first.counts["skipped"] == 2
    again = cycle(settings, store)
    assert again.counts["skipped"] == 0
    assert again.counts["changed"] == 0
    reasons = {r.skip_reason for r in lstore.skipped(store)}
    assert reasons == {"«Номер AmoCRM» «Иванова» is not a lead id", f"lead {lid} does not exist in amoCRM (deleted?)"}
    assert lstore.counts(store)["skipped"] == 2
    from amo1c_sync.status import collect_status

    shown = collect_status(store, settings)["lifecycle"]
    assert shown["skipped"] == 2
    assert {r["reason"] for r in shown["skipped_zayavki"]} == reasons
    assert [e.action for e in journal.of_lead(store, lid)] == ["lifecycle.skipped"]
    act(onec_emu, ref, start=at(TOMORROW, "11:00"))
    assert cycle(settings, store).counts["skipped"] == 1
    assert [e.action for e in journal.of_lead(store, lid)] == ["lifecycle.skipped"] * 2


def test_given_an_unknown_stage_name_when_the_job_starts_then_it_fails_listing_the_stages(amo_emu, onec_emu, store):
    from amo1c_sync.errors import ConfigError

    settings = settings_for(amo_emu, onec_emu, cancelled="Запись к врачу / Отменено")
    with pytest.raises(ConfigError, match="no stage «Отменено».*«Отменена»"):
        run(settings, store, "lifecycle")


# --- idle cycles ----------------------------------------------------------------------------------

def test_given_nothing_changed_when_a_cycle_runs_then_it_reads_only_versions_in_the_hot_window_and_writes_nothing(
        amo_emu, onec_emu, settings, store):
    booked(amo_emu, onec_emu)
    cycle(settings, store)
    reset_requests(amo_emu)
    reset_requests(onec_emu)

    result = cycle(settings, store)

    assert result.counts["window_hot"] == 1
    assert requests_of(amo_emu)["counts"] == {}
    (target,) = [e["target"] for e in requests_of(onec_emu)["log"]]
    assert "$select=Ref_Key,DataVersion" in requests.utils.unquote(target)
    hot_from = (datetime.now(MSK).date() - timedelta(days=3)).isoformat()
    assert f"ДатаПриема ge datetime'{hot_from}T00:00:00'" in requests.utils.unquote(target).replace("+", " ")


# --- crash safety -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/v4/leads/notes", "/api/v4/leads"])
def test_given_the_answer_to_a_write_is_lost_when_the_next_cycle_runs_then_no_duplicate_note_and_no_lost_move(
        amo_emu, onec_emu, settings, store, path):
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    later = TOMORROW + timedelta(days=1)
    act(onec_emu, ref, start=at(later, "15:30"), doctor=ISHAEVA)
    fault(amo_emu, count=1, phase="after", drop=True, path_prefix=path,
          method="PATCH" if path == "/api/v4/leads" else "POST")

    first = run(settings, store, "lifecycle")
    assert first.status != "ok"
    assert lstore.counts(store)["pending"] == 1
    cycle(settings, store)
    cycle(settings, store)

    shown = lead(amo_emu, lid)
    assert len(shown["notes"]) == 1
    assert shown["notes"][0].startswith("Запись перенесена")
    assert shown["fields"]["Время записи"] == "15:30"
    assert lstore.counts(store)["pending"] == 0
    assert [e.action for e in journal.of_lead(store, lid)].count("lifecycle.moved") == 1


# --- from the card ------------------------------------------------------------------------------

def test_given_the_cancel_button_when_the_registration_job_runs_then_the_zayavka_is_marked_and_the_lead_cancelled(
        amo_emu, onec_emu, settings, store):
    lid, z = registered_from_card(amo_emu, onec_emu, settings, store)
    cycle(settings, store, since=SEED_DAY)   # the lifecycle follows it from here
    assert lead(amo_emu, lid)["status"] == "Записан на приём"   # registered by F2: the stage
    edit_lead(amo_emu, lid, **{"Отменить запись в 1С": True})

    assert run(settings, store, "registration").status == "ok"

    (after,) = zayavki(onec_emu, lid)
    assert after["deletion_mark"] is True
    shown = lead(amo_emu, lid)
    assert shown["notes"][-1] == f"Запись отменена: Заявка № {display_number(z['number'])}"
    assert not shown["fields"].get("Отменить запись в 1С")
    assert shown["status"] == "Отменена"
    before = len(shown["notes"])
    cycle(settings, store, since=SEED_DAY)   # no echo: the lifecycle job writes no «отменена в 1С»
    assert len(lead(amo_emu, lid)["notes"]) == before


def test_given_the_cancel_button_twice_when_run_then_the_second_says_already_cancelled_and_1c_is_untouched(
        amo_emu, onec_emu, settings, store):
    lid, _z = registered_from_card(amo_emu, onec_emu, settings, store)
    edit_lead(amo_emu, lid, **{"Отменить запись в 1С": True})
    run(settings, store, "registration")
    reset_requests(onec_emu)
    edit_lead(amo_emu, lid, **{"Отменить запись в 1С": True})
    assert run(settings, store, "registration").status == "ok"
    assert lead(amo_emu, lid)["notes"][-1].startswith("Запись уже отменена: Заявка № ")
    assert writes(requests_of(onec_emu)) == {}


def test_given_unpost_mode_when_cancelled_from_the_card_then_the_zayavka_is_unposted_not_marked(
        amo_emu, onec_emu, store):
    settings = settings_for(amo_emu, onec_emu)
    settings = dataclasses.replace(settings, sync=dataclasses.replace(settings.sync, cancel_mode="unpost"))
    lid, _ = registered_from_card(amo_emu, onec_emu, settings, store)
    edit_lead(amo_emu, lid, **{"Отменить запись в 1С": True})
    assert run(settings, store, "registration").status == "ok"
    (after,) = zayavki(onec_emu, lid)
    assert (after["posted"], after["deletion_mark"]) == (False, False)


def test_given_a_lead_with_no_zayavka_when_cancel_is_pressed_then_a_note_says_there_was_nothing(
        amo_emu, onec_emu, settings, store):
    lid = new_lead(amo_emu, **{"Отменить запись в 1С": True})
    assert run(settings, store, "registration").status == "ok"
    shown = lead(amo_emu, lid)
    assert shown["notes"] == ["Отменять нечего: у сделки нет записи в 1С."]
    assert not shown["fields"].get("Отменить запись в 1С")
    assert shown["status"] == "Новая заявка"


@pytest.mark.parametrize(("system", "method", "path"), [
    ("amo", "PATCH", "/api/v4/leads"), ("amo", "POST", "/api/v4/leads/notes"),
    ("1c", "PATCH", "/odata/standard.odata/Document_"), ("1c", "POST", "/odata/standard.odata/Document_")])
def test_given_a_lost_answer_to_a_cancel_write_when_the_next_cycle_runs_then_one_note_the_mark_and_the_flag_cleared(
        amo_emu, onec_emu, settings, store, system, method, path):
    lid, _ = registered_from_card(amo_emu, onec_emu, settings, store)
    cycle(settings, store, since=SEED_DAY)
    edit_lead(amo_emu, lid, **{"Отменить запись в 1С": True})
    fault(amo_emu if system == "amo" else onec_emu, count=1, phase="after", drop=True, path_prefix=path,
          method=method)
    assert run(settings, store, "registration").status != "ok"
    assert lstore.cancels_under_way(store)
    assert run(settings, store, "registration").status == "ok"
    shown = lead(amo_emu, lid)
    assert [n for n in shown["notes"] if n.startswith("Запись отменена")] == [shown["notes"][-1]]
    assert shown["notes"][-1].startswith("Запись отменена: Заявка №")
    assert not shown["fields"].get("Отменить запись в 1С")
    assert not lstore.cancels_under_way(store)
    assert zayavki(onec_emu, lid)[0]["deletion_mark"] is True
    assert shown["status"] == "Отменена"
    before = len(shown["notes"])
    cycle(settings, store, since=SEED_DAY)
    assert len(lead(amo_emu, lid)["notes"]) == before   # and the lifecycle does not echo it


def test_given_a_reschedule_from_the_card_when_the_lifecycle_runs_then_no_moved_note_comes_back(
        amo_emu, onec_emu, settings, store):
    lid, _ = registered_from_card(amo_emu, onec_emu, settings, store)
    cycle(settings, store, since=SEED_DAY)
    edit_lead(amo_emu, lid, **{"Время записи": "10:00", "Зарегистрировать в 1С": True})
    assert run(settings, store, "registration").status == "ok"
    (z,) = zayavki(onec_emu, lid)
    assert z["start"].endswith("T10:00:00")
    before = lead(amo_emu, lid)["notes"]
    reset_requests(amo_emu)
    result = cycle(settings, store, since=SEED_DAY)
    assert result.counts["moved"] == 0
    assert lead(amo_emu, lid)["notes"] == before
    assert writes(requests_of(amo_emu)) == {}


def test_given_the_lifecycle_wrote_a_move_to_the_lead_when_registration_polls_then_nothing_is_registered(
        amo_emu, onec_emu, settings, store):
    _lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    act(onec_emu, ref, start=at(TOMORROW, "15:30"))
    cycle(settings, store)
    reset_requests(onec_emu)
    result = run(settings, store, "registration")
    assert result.counts["flagged"] == 0
    assert writes(requests_of(onec_emu)) == {}


# --- trace and status ---------------------------------------------------------------------------

def test_given_a_lead_through_its_lifecycle_when_traced_then_every_step_is_shown(amo_emu, onec_emu, settings, store):
    from amo1c_sync.commands.trace import collect_trace, render
    from amo1c_sync.status import collect_status

    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    act(onec_emu, ref, start=at(TOMORROW, "15:30"))
    cycle(settings, store)
    act(onec_emu, ref, "delete")
    cycle(settings, store)

    tr = collect_trace(store, lid)
    actions = [e["action"] for e in tr["journal"]]
    assert actions == ["lifecycle.stage", "lifecycle.moved", "lifecycle.cancelled", "lifecycle.stage"]
    text = render(tr)
    assert "Запись перенесена" in text
    assert "Запись отменена в 1С" in text
    assert "Этап -> Запись к врачу / Отменена" in text
    assert "lifecycle «Заявка»" in text
    assert "deleted" in text
    st = collect_status(store, settings)
    assert st["lifecycle"]["followed"] == 1
    assert st["lifecycle"]["skipped"] == 0


@pytest.mark.parametrize(("cancelled", "expect"), [
    ("Запись к врачу / Отменена", "OK   amoCRM stages: registered = Запись к врачу / Записан на приём"),
    ("Запись к врачу / Отменено", "FAIL amoCRM stages:"),
])
def test_given_configured_stages_when_check_runs_then_it_resolves_them_or_names_what_exists(
        amo_emu, onec_emu, store, cancelled, expect):
    from amo1c_sync.commands.check import run_checks

    settings = settings_for(amo_emu, onec_emu, cancelled=cancelled)
    lines: list[str] = []
    run_checks(settings, store, out=lines.append)
    (line,) = [x for x in lines if "amoCRM stages" in x]
    assert line.startswith(expect.split(":")[0])
    assert expect.split("  ")[-1].split(":")[0] in line
    if "FAIL" in expect:
        assert "«Отменена»" in line
        assert "«Не пришёл»" in line


@pytest.mark.parametrize("action", ["unpost", "delete"])
def test_given_a_zayavka_cancelled_in_1c_when_free_times_are_asked_then_its_time_is_free_again(
        amo_emu, onec_emu, settings, action):
    from datetime import time as t

    from amo1c_sync.services.slots import SlotFinder

    r = requests.post(onec_emu.url + "/_sandbox/zayavki", timeout=5,
                      json={"lead": 1, "doctor": EFIMOVA, "start": at(SEED_DAY, "09:05"), "end": at(SEED_DAY, "09:20")})
    ref = r.json()["ref"]
    o = settings.onec
    finder = SlotFinder.from_settings(settings, OneC(o.base_url, o.username, o.password, max_retries=0))
    assert t(9, 5) not in finder.free_times(SEED_DAY, EFIMOVA)
    act(onec_emu, ref, action)
    finder.invalidate()
    assert t(9, 5) in finder.free_times(SEED_DAY, EFIMOVA)


def test_given_a_dry_run_when_a_move_is_seen_then_the_patch_and_note_are_planned_and_nothing_is_written(
        amo_emu, onec_emu, settings, store):
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    act(onec_emu, ref, start=at(TOMORROW, "15:30"))
    reset_requests(amo_emu)
    result = run(settings, store, dry_run=True)
    assert result.status == "ok"
    assert result.counts["moved"] == 1
    assert writes(requests_of(amo_emu)) == {}
    assert notes(amo_emu, lid) == []
    assert lstore.followed(store, [ref])[ref].mirrored.start.hour == 9
    assert any("Запись перенесена" in str(p) for p in result.planned)


def test_given_a_lead_already_paid_when_its_zayavka_is_first_seen_then_it_is_not_sent_back_to_registered(
        amo_emu, onec_emu, settings, store):
    lid, _ = booked(amo_emu, onec_emu, status="Оплачено")
    result = cycle(settings, store)
    assert lead(amo_emu, lid)["status"] == "Оплачено"
    assert result.counts["stage_kept_already_passed"] == 1
