"""F2 end to end over HTTP: amoCRM emulator -> registration job -> 1C emulator, with a real store
(SQLite file and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, time, timezone

import pytest
import requests

from amo1c_sync.domain.registration import display_number
from amo1c_sync.jobs.base import run_job
from amo1c_sync.services.slots import SlotFinder
from amo1c_sync.sandbox import seed
from amo1c_sync.store.models import Cursor, JournalEntry, Registration, RetryItem
from tests.support.e2e import (
    EFIMOVA,
    PETROVA,
    SEED_DAY,
    edit_lead,
    fault,
    lead,
    make_ctx,
    make_onec,
    make_settings,
    number,
    registration,
    requests_of,
    reset_requests,
    retry_item,
    run,
    runs_until_registered,
    seed_lead,
    shown,
    writes,
    zayavki,
)

FLAG = "Зарегистрировать в 1С"


def _journal(store, lead_id) -> list[str]:
    with store.session() as s:
        return [e.action for e in s.query(JournalEntry).filter_by(lead_id=lead_id).order_by(JournalEntry.id)]


def test_given_seed_lead_when_flagged_then_zayavka_219_note_flag_cleared_and_time_busy(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu)
    result = run(settings, store)
    assert result.ok, result.errors

    [z] = zayavki(onec_emu, lead_id)
    assert z["number"] == number(onec_emu)
    assert z["client"] == "Клиент из AmoCRM"
    assert z["doctor"] == EFIMOVA
    assert z["start"] == "2021-12-22T09:05:00"
    assert z["end"] == "2021-12-22T09:20:00"
    assert z["lead"] == str(lead_id)
    assert z["posted"]
    assert not z["deletion_mark"]
    [full] = make_onec(settings).zayavki_by_lead(lead_id)
    assert full.nomenclature_ref == seed.DEFAULT_NOMENCLATURE_REF

    view = lead(amo_emu, lead_id)
    assert view["notes"] == [f"Создан документ Заявка № {shown(onec_emu, 219)}"]
    assert view["fields"].get(FLAG) in (False, None)
    assert view["fields"]["Заявка 1С"] == shown(onec_emu)

    free = SlotFinder(make_onec(settings)).free_times(SEED_DAY, EFIMOVA)
    assert time(9, 5) not in free
    assert time(8, 50) in free
    assert time(9, 20) in free

    reg = registration(store, lead_id)
    assert reg.status == "done"
    assert reg.zayavka_ref == z["ref"]
    assert reg.zayavka_number == number(onec_emu)
    assert len(reg.fingerprint) == 64
    assert _journal(store, lead_id) == ["zayavka.created", "zayavka.posted", "lead.registered"]
    with store.session() as s:
        assert int(s.get(Cursor, "registration.updated_at").value) > 0


def test_given_client_names_when_registering_then_unknown_created_known_reused_and_quotes_work(
        amo_emu, onec_emu, settings, store):
    first = seed_lead(amo_emu, client="Петров П.П.", time="9:05")
    second = seed_lead(amo_emu, client="  Петров   П.П. ", time="10:00")
    third = seed_lead(amo_emu, client="O'Brien", time="11:00")
    result = run(settings, store)
    assert result.ok, result.errors

    clients = [c["name"] for c in make_onec_clients(onec_emu)]
    assert clients.count("Петров П.П.") == 1
    assert clients.count("O'Brien") == 1
    assert zayavki(onec_emu, first)[0]["client"] == "Петров П.П."
    assert zayavki(onec_emu, second)[0]["client"] == "Петров П.П."
    assert zayavki(onec_emu, third)[0]["client"] == "O'Brien"
    assert lead(amo_emu, first)["notes"] == [
        f"Создан документ Заявка № {shown(onec_emu, 219)}\nКлиент «Петров П.П.» не найден в 1С — создан новый клиент."]
    assert lead(amo_emu, second)["notes"] == [f"Создан документ Заявка № {shown(onec_emu, 220)}"]
    assert lead(amo_emu, third)["notes"][0].startswith(f"Создан документ Заявка № {shown(onec_emu, 221)}")
    assert "client.created" in _journal(store, first)
    assert "client.created" not in _journal(store, second)


def make_onec_clients(onec_emu):
    import requests

    return requests.get(onec_emu.url + "/_sandbox/clients", timeout=5).json()


def test_given_two_clients_with_the_name_when_registering_then_first_by_code_and_said_in_note(
        amo_emu, onec_emu, settings, store):
    onec_emu.add_catalog_item(onec_emu.names.clients, "Сидоров С.С.")
    onec_emu.add_catalog_item(onec_emu.names.clients, "Сидоров С.С.")
    lead_id = seed_lead(amo_emu, client="Сидоров С.С.")
    assert run(settings, store).ok
    note = lead(amo_emu, lead_id)["notes"][0]
    assert note.startswith(f"Создан документ Заявка № {shown(onec_emu, 219)}\n")
    assert "найдено клиентов «Сидоров С.С.»: 2" in note
    codes = sorted(c["code"] for c in make_onec_clients(onec_emu) if c["name"] == "Сидоров С.С.")
    assert codes[0] in note


def test_given_registered_lead_when_flagged_again_with_new_time_then_same_zayavka_updated(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu)
    assert run(settings, store).ok
    edit_lead(amo_emu, lead_id, **{"Время записи": "9:10", FLAG: True})  # overlaps its own 9:05
    result = run(settings, store)
    assert result.ok, result.errors

    [z] = zayavki(onec_emu, lead_id)
    assert z["number"] == number(onec_emu)
    assert z["start"] == "2021-12-22T09:10:00"
    assert z["posted"]
    assert len(zayavki(onec_emu)) == 1
    view = lead(amo_emu, lead_id)
    assert view["notes"] == [f"Создан документ Заявка № {shown(onec_emu)}",
                             f"Изменён документ Заявка № {shown(onec_emu)}"]
    assert view["fields"].get(FLAG) in (False, None)
    assert "zayavka.updated" in _journal(store, lead_id)


def test_given_registered_lead_when_flagged_again_unchanged_then_noop_note_and_no_1c_write(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu)
    assert run(settings, store).ok
    edit_lead(amo_emu, lead_id, **{FLAG: True})
    reset_requests(onec_emu)
    result = run(settings, store)
    assert result.ok
    assert result.counts["unchanged"] == 1
    assert writes(requests_of(onec_emu)) == {}
    notes = lead(amo_emu, lead_id)["notes"]
    assert len(notes) == 2
    assert "уже зарегистрирована" in notes[1]
    assert f"№ {shown(onec_emu)}" in notes[1]
    assert lead(amo_emu, lead_id)["fields"].get(FLAG) in (False, None)
    assert len(zayavki(onec_emu)) == 1


def test_given_amocrm_patch_fails_after_1c_created_when_store_row_lost_and_rerun_then_one_zayavka(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu)
    fault(amo_emu, count=1, status=400, path_prefix="/api/v4/leads", method="PATCH")
    result = run(settings, store)
    assert not result.ok
    assert result.counts["failed"] == 1
    assert len(zayavki(onec_emu, lead_id)) == 1
    retry = retry_item(store, lead_id)
    assert registration(store, lead_id).status == "failed"
    assert retry.attempts == 1
    assert "400" in retry.error
    assert retry.state == "item_error"
    assert retry.code == "http:400"
    assert retry.next_attempt_at is None  # no backoff: it waits for the lead to change
    assert lead(amo_emu, lead_id)["fields"].get(FLAG) is True

    # the lead as it is cannot succeed: the next cycles leave it alone (nothing asked of 1C)
    reset_requests(onec_emu)
    again = run(settings, store)
    assert again.ok
    assert again.counts["waiting_for_change"] == 1
    assert requests_of(onec_emu)["total"] == 0

    # a change of the lead makes it worth a try; the crash also lost the store row: the 1C lookup
    # by «Номер AmoCRM» still finds the «Заявка»
    with store.session() as s:
        s.delete(s.get(Registration, lead_id))
        s.delete(s.get(RetryItem, ("registration", lead_id)))
    edit_lead(amo_emu, lead_id, **{"Время записи": "9:10", FLAG: True})
    result = run(settings, store)
    assert result.ok, result.errors
    assert len(zayavki(onec_emu, lead_id)) == 1
    assert len(zayavki(onec_emu)) == 1
    assert lead(amo_emu, lead_id)["notes"][-1] == f"Создан документ Заявка № {shown(onec_emu, 219)}"
    assert lead(amo_emu, lead_id)["fields"].get(FLAG) in (False, None)
    assert registration(store, lead_id).status == "done"


def test_given_an_item_error_recorded_when_the_lead_changes_then_it_is_tried_again(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu)
    fault(amo_emu, count=1, status=400, path_prefix="/api/v4/leads", method="PATCH")
    assert run(settings, store).counts["failed"] == 1
    assert run(settings, store).counts["waiting_for_change"] == 1
    edit_lead(amo_emu, lead_id, **{"Время записи": "9:10", FLAG: True})
    result = run(settings, store)
    assert result.ok
    assert result.counts["waiting_for_change"] == 0
    assert registration(store, lead_id).status == "done"
    assert len(zayavki(onec_emu, lead_id)) == 1


def test_given_1c_created_the_zayavka_but_the_answer_was_lost_when_retried_in_the_cycle_then_still_one_zayavka(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu)
    # 1C carries out the POST that creates the «Заявка», then the connection drops before the answer
    fault(onec_emu, count=1, phase="after", drop=True, method="POST",
          path_prefix="/odata/standard.odata/Document_Заявка")

    result = run(settings, store)

    assert result.ok, result.errors
    assert result.counts["deferred_in_cycle"] == 1   # the second attempt looked it up: found
    assert result.counts.get("failed") is None
    assert run(settings, store).ok
    [z] = zayavki(onec_emu, lead_id)
    assert z["posted"]
    assert z["number"] == number(onec_emu)
    assert lead(amo_emu, lead_id)["notes"] == [f"Создан документ Заявка № {shown(onec_emu, 219)}"]


@pytest.mark.parametrize(("fields", "code", "expected"), [
    ({"Время записи": None}, "missing_fields", ["не заполнено поле «Время записи»"]),
    ({"Врач": None, "Дата записи к врачу": None}, "missing_fields",
     ["«Дата записи к врачу», «Врач»"]),
    ({"Врач": "Иванов И.И."}, "unknown_doctor",
     ["врача «Иванов И.И.» нет в 1С", "22.12.2021 работают: Ефимова Е.В., Ишаева М.И."]),
    ({"Врач": PETROVA}, "not_working", ["«Петрова А.С.» не работает 22.12.2021", "Ефимова Е.В., Ишаева М.И."]),
    ({"Время записи": "9:07"}, "time_off_grid", ["9:07 не попадает в сетку", "8:50, 9:20"]),
    ({"Время записи": "14:00"}, "time_outside", ["14:00 вне графика", "8:15–13:00", "12:45"]),
    ({"Время записи": "9:10"}, "time_busy", ["время 9:10 занято", "Ближайшее свободное время: 8:45, 8:50"]),
])
def test_given_invalid_lead_when_flagged_then_note_names_problem_flag_cleared_nothing_in_1c(
        amo_emu, onec_emu, settings, store, fields, code, expected):
    onec_emu.add_zayavka(lead=None, doctor=EFIMOVA, start=datetime(2021, 12, 22, 9, 5))
    lead_id = seed_lead(amo_emu)
    edit_lead(amo_emu, lead_id, **fields)
    reset_requests(onec_emu)
    result = run(settings, store)
    assert result.ok, result.errors
    assert result.counts["invalid"] == 1, result.errors

    assert writes(requests_of(onec_emu)) == {}
    assert zayavki(onec_emu, lead_id) == []
    view = lead(amo_emu, lead_id)
    assert view["fields"].get(FLAG) in (False, None)
    assert "Заявка 1С" not in view["fields"]
    [note] = view["notes"]
    for text in expected:
        assert text in note, note
    reg = registration(store, lead_id)
    assert reg.status == "invalid"
    assert reg.error == note
    with store.session() as s:
        [entry] = s.query(JournalEntry).filter_by(lead_id=lead_id).all()
        assert entry.action == "lead.invalid"
        assert entry.detail["code"] == code


def test_given_nothing_changed_when_cycle_runs_then_one_amocrm_request_and_no_1c_request(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu)
    ctx = make_ctx(settings, store)  # as the daemon does: one context (and gateways) per term
    assert run_job(ctx, "registration").ok
    assert run_job(ctx, "registration").ok  # sees its own write-back (flag cleared): nothing to do
    reset_requests(amo_emu)
    reset_requests(onec_emu)
    result = run_job(ctx, "registration")
    assert result.ok
    amo = requests_of(amo_emu)
    assert amo["total"] == 1
    assert amo["counts"] == {"GET /api/v4/events": 1}
    assert requests_of(onec_emu)["total"] == 0
    assert lead(amo_emu, lead_id)["notes"] == [f"Создан документ Заявка № {shown(onec_emu, 219)}"]


def test_given_1c_fails_for_one_lead_when_cycle_runs_then_others_go_on_and_it_is_retried_later(
        amo_emu, onec_emu, store):
    settings = make_settings(amo_emu, onec_emu, create_settle_seconds="1s")
    bad = seed_lead(amo_emu, time="9:05")
    good = seed_lead(amo_emu, time="10:00")
    fault(onec_emu, count=1, status=500, method="POST", path_prefix="/odata/standard.odata/Document_")
    result = run(settings, store)
    assert result.status == "partial"
    assert result.counts["failed"] == 1
    assert zayavki(onec_emu, bad) == []
    assert len(zayavki(onec_emu, good)) == 1
    assert lead(amo_emu, good)["notes"] == [f"Создан документ Заявка № {shown(onec_emu, 220)}"] or \
        lead(amo_emu, good)["notes"] == [f"Создан документ Заявка № {shown(onec_emu, 219)}"]
    retry = retry_item(store, bad)
    assert registration(store, bad).status == "failed"
    assert retry.attempts == 1
    assert "1C" in retry.error
    assert retry.state == "retrying"
    assert retry.next_attempt_at > datetime.now(timezone.utc)
    assert lead(amo_emu, bad)["fields"][FLAG] is True
    with store.session() as s:
        cursor = int(s.get(Cursor, "registration.updated_at").value)
    assert cursor < amo_emu.lead(bad)["updated_at"]  # not past the failed lead

    # 1C may still carry the refused create out: the lead waits the settle time, then is created
    runs = runs_until_registered(settings, store, bad)
    assert runs[-1].ok, runs[-1].errors
    assert retry_item(store, bad) is None
    assert len(zayavki(onec_emu, bad)) == 1
    assert registration(store, bad).status == "done"
    assert lead(amo_emu, bad)["notes"][0].startswith("Создан документ Заявка №")


def test_given_flagged_lead_when_dry_run_then_plans_and_writes_nothing(amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu, client="Новиков Н.Н.")
    reset_requests(amo_emu)
    reset_requests(onec_emu)
    result = run(settings, store, dry_run=True)
    assert result.ok, result.errors
    actions = [p["action"] for p in result.planned]
    assert {"client.create", "zayavka.create", "document.post", "lead.note", "lead.update"} <= set(actions)
    assert writes(requests_of(amo_emu)) == {}
    assert writes(requests_of(onec_emu)) == {}
    assert registration(store, lead_id) is None
    assert _journal(store, lead_id) == []
    with store.session() as s:
        assert s.get(Cursor, "registration.updated_at") is None
    assert lead(amo_emu, lead_id)["fields"][FLAG] is True
    assert lead(amo_emu, lead_id)["notes"] == []


def test_given_other_time_zone_when_registering_then_date_is_the_clinics_day(amo_emu, onec_emu, store):
    # account and clinic in New York; the date field is midnight in New York
    ny = make_settings(amo_emu, onec_emu, timezone="America/New_York")
    amo_emu.tz = __import__("zoneinfo").ZoneInfo("America/New_York")
    lead_id = seed_lead(amo_emu)
    assert run(ny, store).ok
    assert zayavki(onec_emu, lead_id)[0]["start"] == "2021-12-22T09:05:00"


@pytest.mark.parametrize("written_in_1c", ["0{id}", " {id} "])
def test_given_a_zayavka_whose_number_amocrm_reads_as_the_lead_when_flagged_then_it_is_updated_not_doubled(
        amo_emu, onec_emu, settings, store, written_in_1c):
    """Payments read «030000093» as lead 30000093; registration must find the same «Заявка»."""
    lead_id = seed_lead(amo_emu, flag=False)
    for written in (written_in_1c.format(id=lead_id), f"1{lead_id}"):  # the second is another lead
        requests.post(onec_emu.url + "/_sandbox/zayavki", timeout=5, json={
            "lead": written, "doctor": EFIMOVA, "start": "2021-12-22T10:00:00"}).raise_for_status()
    edit_lead(amo_emu, lead_id, **{FLAG: True})
    result = run(settings, store)
    assert result.ok, result.errors

    # a fixed-length «Номер AmoCRM» comes padded: the control API shows it without the padding
    mine = [z for z in zayavki(onec_emu) if z["lead"] == written_in_1c.format(id=lead_id).rstrip()]
    assert len(zayavki(onec_emu)) == 2
    assert [z["start"] for z in mine] == ["2021-12-22T09:05:00"]
    assert lead(amo_emu, lead_id)["fields"]["Заявка 1С"] == display_number(mine[0]["number"])
