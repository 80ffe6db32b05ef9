"""F7 races with the card, over HTTP against both emulators: the registration job (a reschedule or
a cancel from the card) acts at one exact point of a lifecycle cycle (tests/support/lifecycle.py
``Hooked``), and the lead gets no echo, keeps what the card asks for, and loses no move."""

from __future__ import annotations

import dataclasses
from datetime import time, timedelta

import pytest
import requests

from amo1c_sync.domain.lifecycle import Appointment
from amo1c_sync.onec.names import OneCNames
from amo1c_sync.sandbox.onec_emulator import OneCEmulator
from amo1c_sync.store import lifecycle as lstore
from tests.support.e2e import (
    EFIMOVA,
    ISHAEVA,
    SEED_DAY,
    edit_lead,
    fault,
    lead,
    requests_of,
    reset_requests,
    seed_lead,
    zayavki,
)
from tests.support.lifecycle import (
    TOMORROW,
    Hooked,
    act,
    at,
    booked,
    cycle,
    gateways,
    notes,
    registered_from_card,
    run,
    settings_for,
    where,
)

LATER = TOMORROW + timedelta(days=1)
CANCEL = "Отменить запись в 1С"
FLAG = "Зарегистрировать в 1С"


@pytest.fixture
def onec_emu():
    with OneCEmulator(names=OneCNames(zayavka_state="Состояние")) as e:
        yield e


@pytest.fixture
def settings(amo_emu, onec_emu):
    return settings_for(amo_emu, onec_emu)


def registration(settings, store):
    def go():
        result = run(settings, store, "registration")
        assert result.status == "ok", result.errors
    return go


def cancelled_in_1c(texts: list[str]) -> list[str]:
    return [t for t in texts if t.startswith("Запись отменена в 1С") or t.startswith("Запись снова")]


def hooked_cycle(settings, store, *, system: str, name: str, **hook):
    amo, onec = gateways(settings, store)
    if system == "1c":
        onec = Hooked(onec, name, **hook)
    else:
        amo = Hooked(amo, name, **hook)
    result = run(settings, store, "lifecycle", amocrm=amo, onec=onec)
    assert result.status == "ok", result.errors
    return result


# --- a card cancel beside the lifecycle ---------------------------------------------------------

@pytest.mark.parametrize(("system", "name", "when"), [
    ("1c", "followed_zayavki", "before"),    # between the lifecycle's store read and its 1C read
    ("1c", "followed_zayavki", "after"),     # between its 1C read and its decision
    ("amo", "update_leads", "before"),       # between its intents and its write
])
def test_given_a_card_cancel_during_a_lifecycle_cycle_when_both_finish_then_no_cancelled_in_1c_echo(
        amo_emu, onec_emu, settings, store, system, name, when):
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    act(onec_emu, ref, start=at(LATER, "15:30"), doctor=ISHAEVA)   # the lifecycle has a change to read
    edit_lead(amo_emu, lid, **{CANCEL: True})

    hooked_cycle(settings, store, system=system, name=name, **{when: registration(settings, store)})
    registration(settings, store)()   # a cancel that waited for the lifecycle's write goes now
    cycle(settings, store)
    cycle(settings, store)

    texts = notes(amo_emu, lid)
    assert cancelled_in_1c(texts) == []
    assert len([t for t in texts if t.startswith("Запись отменена: ")]) == 1
    assert zayavki(onec_emu, lid)[0]["deletion_mark"] is True
    assert lead(amo_emu, lid)["status"] == "Отменена"
    assert lstore.counts(store)["pending"] == 0


def test_given_a_card_cancel_whose_1c_write_failed_when_the_lifecycle_runs_first_then_it_waits_and_writes_nothing(
        amo_emu, onec_emu, settings, store):
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    act(onec_emu, ref, start=at(LATER, "15:30"), doctor=ISHAEVA)
    edit_lead(amo_emu, lid, **{CANCEL: True})
    fault(onec_emu, count=1, status=500, method="POST", path_prefix="/odata/standard.odata/Document_")
    assert run(settings, store, "registration").status != "ok"   # its baseline says cancelled, 1C not yet
    assert lstore.cancels_under_way(store)

    held = cycle(settings, store)

    assert held.counts["held_card_cancel"] == 1
    assert notes(amo_emu, lid) == []
    registration(settings, store)()
    cycle(settings, store)
    texts = notes(amo_emu, lid)
    assert cancelled_in_1c(texts) == []
    assert len(texts) == 1
    assert texts[0].startswith("Запись отменена: ")


@pytest.mark.parametrize("when", ["before", "after"])
def test_given_a_card_cancel_while_a_paid_move_is_being_written_when_both_finish_then_the_lead_stays_cancelled(
        amo_emu, onec_emu, settings, store, when):
    lid, _ = booked(amo_emu, onec_emu)
    cycle(settings, store)
    requests.post(onec_emu.url + "/_sandbox/services", json={"lead": lid, "amount": "150.00"},
                  timeout=5).raise_for_status()
    assert run(settings, store, "payments").status == "ok"
    edit_lead(amo_emu, lid, **{CANCEL: True})

    hooked_cycle(settings, store, system="amo", name="update_leads", **{when: registration(settings, store)})
    registration(settings, store)()
    cycle(settings, store)

    assert lead(amo_emu, lid)["status"] == "Отменена"
    assert zayavki(onec_emu, lid)[0]["deletion_mark"] is True
    assert len([t for t in notes(amo_emu, lid) if t.startswith("Запись отменена: ")]) == 1
    assert lstore.counts(store)["pending"] == 0
    assert lstore.cancels_under_way(store) == []


def test_given_a_cancel_under_way_when_the_lifecycle_records_a_write_for_its_lead_then_it_is_dropped(store):
    one = Appointment(number="0000000001", day=TOMORROW, start=time(9, 5), doctor=EFIMOVA)
    paid = lstore.Change(ref="00000000-0000-0000-0000-0000000000ab", version="v1", number=one.number,
                         lead_id=7, mirrored=one, patch={"id": 7, "status_id": 1})
    other = dataclasses.replace(paid, ref="00000000-0000-0000-0000-0000000000ac", lead_id=8,
                                patch={"id": 8, "status_id": 1})

    assert lstore.begin_cancel(store, [7]) == set()
    assert lstore.record_intents(store, [paid, other]) == [other]
    assert lstore.begin_cancel(store, [8]) == {8}   # the lifecycle's write to lead 8 goes first
    assert lstore.begin_cancel(store, []) == {8}    # also for a cancel already under way
    lstore.confirm(store, [other], job="lifecycle", run_id=None)
    assert lstore.begin_cancel(store, [8]) == set()


def test_given_a_card_cancel_and_a_lead_to_register_when_the_cycle_runs_then_the_cancel_goes_first(
        amo_emu, onec_emu, settings, store):
    lid, ref = booked(amo_emu, onec_emu)
    edit_lead(amo_emu, lid, **{CANCEL: True})
    other = seed_lead(amo_emu)
    reset_requests(onec_emu)

    registration(settings, store)()

    log = [(e["method"], e["path"]) for e in requests_of(onec_emu)["log"]]
    cancel = log.index(("PATCH", f"/odata/standard.odata/Document_Заявка(guid'{ref}')"))
    create = log.index(("POST", "/odata/standard.odata/Document_Заявка"))
    assert cancel < create
    assert lead(amo_emu, lid)["status"] == "Отменена"
    assert len(zayavki(onec_emu, other)) == 1


# --- a reschedule from the card beside the lifecycle --------------------------------------------

def test_given_a_reschedule_pending_on_the_card_when_1c_moves_the_visit_then_the_card_fields_are_kept(
        amo_emu, onec_emu, settings, store):
    lid, z = registered_from_card(amo_emu, onec_emu, settings, store)
    cycle(settings, store, since=SEED_DAY)
    edit_lead(amo_emu, lid, **{"Время записи": "10:00", FLAG: True})
    act(onec_emu, z["ref"], start=at(SEED_DAY, "15:30"))
    before = len(notes(amo_emu, lid))

    result = cycle(settings, store, since=SEED_DAY)

    assert result.counts["fields_kept_flagged"] == 1
    assert lead(amo_emu, lid)["fields"]["Время записи"] == "10:00"
    assert notes(amo_emu, lid)[before:] == [
        f"Запись перенесена: {where(SEED_DAY, '09:05', EFIMOVA)} -> {where(SEED_DAY, '15:30', EFIMOVA)}"]
    registration(settings, store)()
    assert zayavki(onec_emu, lid)[0]["start"].endswith("T10:00:00")
    after = len(notes(amo_emu, lid))
    assert cycle(settings, store, since=SEED_DAY).counts["moved"] == 0
    assert len(notes(amo_emu, lid)) == after
    assert lead(amo_emu, lid)["fields"]["Время записи"] == "10:00"


def test_given_the_card_flagged_after_the_lifecycle_read_the_lead_when_it_patches_then_the_card_fields_stay(
        amo_emu, onec_emu, settings, store):
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    act(onec_emu, ref, start=at(TOMORROW, "15:30"))

    def reschedule_on_the_card():
        edit_lead(amo_emu, lid, **{"Время записи": "11:00", FLAG: True})

    result = hooked_cycle(settings, store, system="amo", name="get_leads", after=reschedule_on_the_card)

    assert result.counts["fields_kept_flagged"] == 1
    shown = lead(amo_emu, lid)
    assert shown["fields"]["Время записи"] == "11:00"
    assert shown["fields"][FLAG]
    assert notes(amo_emu, lid) == [
        f"Запись перенесена: {where(TOMORROW, '09:05', EFIMOVA)} -> {where(TOMORROW, '15:30', EFIMOVA)}"]


def test_given_the_card_rescheduled_twice_when_the_lifecycle_runs_between_then_no_echo_of_the_first(
        amo_emu, onec_emu, settings, store):
    lid, _ = registered_from_card(amo_emu, onec_emu, settings, store)
    cycle(settings, store, since=SEED_DAY)
    edit_lead(amo_emu, lid, **{"Время записи": "10:00", FLAG: True})
    registration(settings, store)()                                      # 1C now says 10:00
    edit_lead(amo_emu, lid, **{"Время записи": "11:00", FLAG: True})    # the card moves on

    result = cycle(settings, store, since=SEED_DAY)

    assert result.counts["moved"] == 0
    assert [t for t in notes(amo_emu, lid) if t.startswith("Запись перенесена")] == []
    assert lead(amo_emu, lid)["fields"]["Время записи"] == "11:00"


# --- the compare-and-set in the store -----------------------------------------------------------

def test_given_the_card_wrote_a_baseline_after_a_change_was_computed_when_recorded_then_dropped_and_the_newer_stays(
        store):
    one = Appointment(number="0000000001", day=TOMORROW, start=time(9, 5), doctor=EFIMOVA)
    ref = "00000000-0000-0000-0000-0000000000aa"
    lstore.confirm(store, [lstore.Change(ref=ref, version="v1", number=one.number, lead_id=7, mirrored=one)],
                   job="lifecycle", run_id=None)
    (seen,) = lstore.of_lead(store, 7)
    moved = dataclasses.replace(one, start=time(15, 30))
    stale = lstore.Change(ref=ref, version="v2", number=one.number, lead_id=7, mirrored=moved,
                          notes=["Запись перенесена"], base=lstore.state_of(seen))
    assert lstore.record_intents(store, [stale]) == [stale]
    cancelled = dataclasses.replace(moved, posted=False, deleted=True)
    lstore.set_written(store, ref, one.number, 7, cancelled, job="registration", run_id=None,
                       entry={"action": "card_cancel.1c"})

    assert lstore.record_intents(store, [dataclasses.replace(stale, version="v3")]) == []
    lstore.confirm(store, [stale], job="lifecycle", run_id=None)   # the write was made: journaled only

    (row,) = lstore.of_lead(store, 7)
    assert (row.data_version, row.mirrored, row.pending) == (lstore.UNCONFIRMED, cancelled, None)


# --- no move swallowed --------------------------------------------------------------------------

def test_given_two_moves_in_1c_at_different_times_when_cycles_run_between_then_two_notes_and_the_last_shown(
        amo_emu, onec_emu, settings, store):
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    act(onec_emu, ref, start=at(TOMORROW, "15:30"))
    cycle(settings, store)
    act(onec_emu, ref, start=at(LATER, "16:00"), doctor=ISHAEVA)
    cycle(settings, store)

    assert notes(amo_emu, lid) == [
        f"Запись перенесена: {where(TOMORROW, '09:05', EFIMOVA)} -> {where(TOMORROW, '15:30', EFIMOVA)}",
        f"Запись перенесена: {where(TOMORROW, '15:30', EFIMOVA)} -> {where(LATER, '16:00', ISHAEVA)}"]
    assert lead(amo_emu, lid)["fields"]["Время записи"] == "16:00"


def test_given_a_move_in_1c_while_the_card_reschedule_is_being_posted_when_cycles_run_then_the_move_is_noted_and_shown(
        amo_emu, onec_emu, settings, store):
    lid, z = registered_from_card(amo_emu, onec_emu, settings, store)
    cycle(settings, store, since=SEED_DAY)
    edit_lead(amo_emu, lid, **{"Время записи": "10:00", FLAG: True})
    amo, onec = gateways(settings, store)
    admin = Hooked(onec, "post", before=lambda: act(onec_emu, z["ref"], start=at(SEED_DAY, "15:30")))
    assert run(settings, store, "registration", amocrm=amo, onec=admin).status == "ok"
    assert admin.fired

    cycle(settings, store, since=SEED_DAY)
    act(onec_emu, z["ref"], start=at(SEED_DAY, "16:00"))
    cycle(settings, store, since=SEED_DAY)

    moved = [t for t in notes(amo_emu, lid) if t.startswith("Запись перенесена")]
    assert moved == [
        f"Запись перенесена: {where(SEED_DAY, '10:00', EFIMOVA)} -> {where(SEED_DAY, '15:30', EFIMOVA)}",
        f"Запись перенесена: {where(SEED_DAY, '15:30', EFIMOVA)} -> {where(SEED_DAY, '16:00', EFIMOVA)}"]
    assert lead(amo_emu, lid)["fields"]["Время записи"] == "16:00"


def test_given_a_move_out_of_the_hot_window_and_back_when_hot_cycles_run_between_then_both_moves_are_noted(
        amo_emu, onec_emu, settings, store):
    lid, ref = booked(amo_emu, onec_emu)
    assert cycle(settings, store).counts["window_full"] == 1
    gone = TOMORROW - timedelta(days=12)          # outside the 3-day hot window, inside the lookback
    act(onec_emu, ref, start=at(gone, "15:30"))

    first = cycle(settings, store)
    act(onec_emu, ref, start=at(LATER, "16:00"))
    cycle(settings, store)

    assert first.counts["window_hot"] == 1
    assert notes(amo_emu, lid) == [
        f"Запись перенесена: {where(TOMORROW, '09:05', EFIMOVA)} -> {where(gone, '15:30', EFIMOVA)}",
        f"Запись перенесена: {where(gone, '15:30', EFIMOVA)} -> {where(LATER, '16:00', EFIMOVA)}"]


# --- a cancel 1C refuses ------------------------------------------------------------------------

def test_given_1c_refusing_a_cancel_from_the_card_when_retried_then_one_note_says_so_and_it_is_cancelled_later(
        amo_emu, onec_emu, settings, store):
    lid, ref = booked(amo_emu, onec_emu)
    cycle(settings, store)
    edit_lead(amo_emu, lid, **{CANCEL: True})
    fault(onec_emu, count=2, status=400, method="POST", path_prefix="/odata/standard.odata/Document_")

    for _ in range(2):
        assert run(settings, store, "registration").status != "ok"
        cycle(settings, store)

    refused = [t for t in notes(amo_emu, lid) if t.startswith("Запись не отменена в 1С")]
    assert len(refused) == 1
    assert "повтор" in refused[0]
    (row,) = lstore.of_lead(store, lid)
    assert row.mirrored is not None
    assert not row.mirrored.deleted          # the baseline never claims what 1C refused
    registration(settings, store)()
    cycle(settings, store)
    texts = notes(amo_emu, lid)
    assert texts[-1].startswith("Запись отменена: ")
    assert cancelled_in_1c(texts) == []
    assert zayavki(onec_emu, lid)[0]["deletion_mark"] is True
