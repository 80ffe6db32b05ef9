"""Finding flagged leads by amoCRM's events (jobs/flagged.py), over HTTP against the emulators with
a real store: what a registration cycle costs in amoCRM requests, counted by the emulator."""

from __future__ import annotations

import time

from amo1c_sync.jobs.base import run_job
from amo1c_sync.status import collect_status
from amo1c_sync.store import cursors
from tests.support.e2e import (
    edit_lead,
    lead,
    make_ctx,
    new_lead,
    requests_of,
    reset_requests,
    seed_lead,
)

FLAG = "Зарегистрировать в 1С"


def _gets(emu) -> dict:
    return {k: v for k, v in requests_of(emu)["counts"].items() if k.startswith("GET ")}


def test_given_many_changes_but_no_flag_when_a_cycle_runs_then_it_costs_one_amocrm_request(
        amo_emu, onec_emu, settings, store):
    ctx = make_ctx(settings, store)
    assert run_job(ctx, "registration").ok
    others = [new_lead(amo_emu, **{"ФИО клиента": f"Пациент {i}"}) for i in range(30)]
    for lead_id in others[:10]:
        edit_lead(amo_emu, lead_id, Врач="Петрова А.С.")
    reset_requests(amo_emu)
    result = run_job(ctx, "registration")
    assert result.ok
    assert requests_of(amo_emu)["counts"] == {"GET /api/v4/events": 1}
    assert requests_of(onec_emu)["total"] == 0


def test_given_a_lead_flagged_on_its_card_when_the_next_cycle_runs_then_one_events_read_finds_it(
        amo_emu, onec_emu, settings, store):
    ctx = make_ctx(settings, store)
    lead_id = seed_lead(amo_emu, flag=False)
    for i in range(20):
        new_lead(amo_emu, **{"ФИО клиента": f"Пациент {i}"})
    assert run_job(ctx, "registration").ok
    edit_lead(amo_emu, lead_id, **{FLAG: True})
    reset_requests(amo_emu)
    result = run_job(ctx, "registration")
    assert result.ok
    assert result.counts.get("created") == 1
    # one read finds it, one reads its fields (by id): not a listing of the account's leads
    assert _gets(amo_emu) == {"GET /api/v4/events": 1, "GET /api/v4/leads": 1}
    assert lead(amo_emu, lead_id)["fields"].get(FLAG) in (None, False)
    reset_requests(amo_emu)
    assert run_job(ctx, "registration").ok   # our own write-back cleared the flag: nothing open
    assert requests_of(amo_emu)["counts"] == {"GET /api/v4/events": 1}


def test_given_no_cursor_and_a_busy_day_when_the_first_cycle_runs_then_it_costs_three_reads_not_a_listing(
        amo_emu, onec_emu, settings, store):
    for i in range(300):   # leads edited today, none of them flagged
        amo_emu.create_lead(f"Пациент {i}", {"ФИО клиента": f"Пациент {i}"})
    flagged = seed_lead(amo_emu)
    reset_requests(amo_emu)
    result = run_job(make_ctx(settings, store), "registration")
    assert result.ok
    assert result.counts.get("created") == 1
    # the events, the lead by id, and the field list a new process reads once (then kept 10 min)
    assert _gets(amo_emu) == {"GET /api/v4/events": 1, "GET /api/v4/leads": 1,
                              "GET /api/v4/leads/custom_fields": 1}
    assert lead(amo_emu, flagged)["notes"]


def test_given_a_flag_whose_event_was_missed_when_the_reconciliation_is_due_then_it_is_repaired_and_counted(
        amo_emu, onec_emu, settings, store):
    ctx = make_ctx(settings, store)
    assert run_job(ctx, "registration").ok
    lead_id = seed_lead(amo_emu)
    with amo_emu.book.events.lock:   # amoCRM did not show this lead's events
        amo_emu.book.events.events[:] = [e for e in amo_emu.book.events.events if e["entity_id"] != lead_id]
    reset_requests(amo_emu)
    missed = run_job(ctx, "registration")
    assert missed.ok
    assert not missed.counts.get("flagged")
    assert "GET /api/v4/leads" not in requests_of(amo_emu)["counts"]   # not due yet
    state = cursors.registration_events(store)
    cursors.save_registration_events(store, {**state, "reconciled_at": int(time.time()) - 3601})
    repaired = run_job(ctx, "registration")
    assert repaired.ok
    assert repaired.counts.get("reconcile_repairs") == 1
    assert repaired.counts.get("created") == 1
    assert lead(amo_emu, lead_id)["notes"]
    shown = collect_status(store, settings)["change_detection"]
    assert shown["reconcile_repairs_total"] == 1
    assert shown["open_leads"] == [lead_id]
    reset_requests(amo_emu)
    after = run_job(ctx, "registration")   # the write-back's event closes it; no repair, no listing
    assert after.ok
    assert not after.counts.get("reconcile_repairs")
    assert collect_status(store, settings)["change_detection"]["open_leads"] == []


def test_given_a_run_killed_after_reading_the_events_when_the_next_run_comes_then_the_open_lead_is_read_again(
        amo_emu, onec_emu, settings, store):
    """The events cursor has moved past the flag's event, but the lead is recorded open in the
    same row: the next run reads it by id and registers it."""
    from amo1c_sync.jobs import flagged
    from amo1c_sync.jobs.base import JobResult
    from amo1c_sync.jobs.registration import field_map

    ctx = make_ctx(settings, store)
    assert run_job(ctx, "registration").ok
    lead_id = seed_lead(amo_emu)
    found = flagged.leads_to_register(ctx, JobResult("registration"), field_map(ctx.amocrm, settings))
    assert [int(x["id"]) for x in found] == [lead_id]   # ... and here the process was killed
    assert cursors.registration_events(store)["open"] == [lead_id]
    reset_requests(amo_emu)
    result = run_job(ctx, "registration")
    assert result.ok
    assert result.counts.get("created") == 1
    assert result.counts.get("flag_events", 0) == 0
    assert _gets(amo_emu) == {"GET /api/v4/events": 1, "GET /api/v4/leads": 1}


def test_given_a_burst_of_60_flags_when_read_then_one_listing_page_replaces_two_reads_by_id(
        amo_emu, onec_emu, settings, store):
    from amo1c_sync.jobs import flagged
    from amo1c_sync.jobs.base import JobResult
    from amo1c_sync.jobs.registration import field_map

    ctx = make_ctx(settings, store)
    assert run_job(ctx, "registration").ok
    burst = [seed_lead(amo_emu) for _ in range(60)]
    reset_requests(amo_emu)
    found = flagged.leads_to_register(ctx, JobResult("registration"), field_map(ctx.amocrm, settings))
    assert sorted(int(x["id"]) for x in found) == sorted(burst)
    assert _gets(amo_emu) == {"GET /api/v4/events": 1, "GET /api/v4/leads": 1}
