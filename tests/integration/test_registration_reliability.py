"""F2 reliability (issue 14 items 1, 9, 10) and write-back in batches (issue 16), end to end over
HTTP against both emulators, with a real store. Faults are the emulators' own: a create 1C carries
out after the client gave up, answers lost after a write was carried out."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import requests

from amo1c_sync.domain.retry import RequestRetry
from amo1c_sync.jobs.base import JobContext, run_job
from amo1c_sync.leader import LeadershipLost
from amo1c_sync.store import Store
from amo1c_sync.store import retry as retries
from amo1c_sync.store.models import Cursor, JournalEntry, Registration, RetryItem
from tests.support import wait_until
from tests.support.e2e import (
    edit_lead,
    fault,
    lead,
    make_amo,
    make_ctx,
    make_onec,
    make_settings,
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
ZAYAVKA_SET = "/odata/standard.odata/Document_Заявка"


def _due_now(store, *lead_ids) -> None:
    """The failed leads' backoff is over."""
    with store.session() as s:
        for lead_id in lead_ids:
            s.get(RetryItem, ("registration", lead_id)).next_attempt_at = \
                datetime.now(timezone.utc) - timedelta(seconds=1)


def _ctx(settings, store, *, read_timeout=60.0) -> JobContext:
    return JobContext(settings, store, amocrm=make_amo(settings, store),
                      onec=make_onec(settings, read_timeout=read_timeout))


def _count(counts: dict, method: str, prefix: str) -> int:
    return sum(n for k, n in counts.get("counts", {}).items()
               if k.startswith(f"{method} ") and k.split(" ", 1)[1].startswith(prefix))


# --- 14.1: no second «Заявка» --------------------------------------------------------------------


def test_given_1c_carries_out_the_create_after_the_read_timeout_when_retried_then_one_zayavka(
        amo_emu, onec_emu, store):
    settings = make_settings(amo_emu, onec_emu, create_settle_seconds="15s")
    lead_id = seed_lead(amo_emu)
    # 1C holds the create 1.5 s, then carries it out; the client gave up after 0.3 s
    fault(onec_emu, count=1, phase="before", delay_ms=1500, method="POST", path_prefix=ZAYAVKA_SET)
    first = run_job(_ctx(settings, store, read_timeout=0.3), "registration")
    assert first.counts["deferred_in_cycle"] == 1   # tried again in the cycle: not in 1C yet
    assert first.counts["failed"] == 1
    assert zayavki(onec_emu, lead_id) == []
    assert registration(store, lead_id).create_sent_at is not None   # the intent, committed before the send

    runs = runs_until_registered(settings, store, lead_id, ctx=lambda: _ctx(settings, store))
    # the cycles before 1C carried the create out waited for nothing and created nothing
    assert all(r.counts["settle_pending"] == 1 and r.counts["created"] == 0 for r in runs[:-1])
    assert runs[-1].ok, runs[-1].errors
    assert runs[-1].counts["settling"] == 1
    [z] = zayavki(onec_emu, lead_id)
    assert z["posted"]
    assert len(zayavki(onec_emu)) == 1
    assert lead(amo_emu, lead_id)["notes"] == [f"Создан документ Заявка № {shown(onec_emu, 219)}"]
    reg = registration(store, lead_id)
    assert reg.status == "done"
    assert reg.create_sent_at is None
    assert reg.claimed_by is None


def test_given_a_create_1c_carries_out_late_when_the_lead_is_made_invalid_meanwhile_then_it_waits_and_keeps_it(
        amo_emu, onec_emu, store):
    settings = make_settings(amo_emu, onec_emu, create_settle_seconds="15s")
    lead_id = seed_lead(amo_emu)
    fault(onec_emu, count=1, phase="before", delay_ms=1500, method="POST", path_prefix=ZAYAVKA_SET)
    assert run_job(_ctx(settings, store, read_timeout=0.3), "registration").counts["failed"] == 1
    edit_lead(amo_emu, lead_id, **{"Время записи": None})   # the person empties the time meanwhile

    runs = []

    def written_back() -> bool:
        _due_now(store, lead_id)
        runs.append(run_job(_ctx(settings, store), "registration"))
        return lead(amo_emu, lead_id)["fields"].get(FLAG) is not True

    wait_until(written_back, timeout=20, interval=0.1, message=lambda: f"lead written back: {runs[-1:]}")
    # while 1C could still carry the create out, the lead waited, its intent kept
    assert all(r.counts["settle_pending"] == 1 for r in runs[:-1])
    [z] = zayavki(onec_emu, lead_id)
    [note] = lead(amo_emu, lead_id)["notes"]
    assert f"Документ Заявка № {shown(onec_emu, 219)} в 1С не изменён" in note
    assert "Время записи" in note


def test_given_1c_created_the_zayavka_and_its_answer_came_after_the_read_timeout_when_retried_then_one(
        amo_emu, onec_emu, store):
    settings = make_settings(amo_emu, onec_emu, create_settle_seconds="15s")
    lead_id = seed_lead(amo_emu)
    fault(onec_emu, count=1, phase="after", delay_ms=1500, method="POST", path_prefix=ZAYAVKA_SET)
    first = run_job(_ctx(settings, store, read_timeout=0.3), "registration")
    # the lead's second attempt in the cycle finds the «Заявка» 1C made and registers it
    assert first.ok, first.errors
    assert first.counts["deferred_in_cycle"] == 1
    assert registration(store, lead_id).status == "done"
    assert run_job(_ctx(settings, store), "registration").ok
    assert len(zayavki(onec_emu, lead_id)) == 1
    assert len(zayavki(onec_emu)) == 1
    assert lead(amo_emu, lead_id)["notes"] == [f"Создан документ Заявка № {shown(onec_emu, 219)}"]


def test_given_an_unconfirmed_create_older_than_the_settle_time_when_retried_then_it_is_created(
        amo_emu, onec_emu, store):
    """The intent only delays: a create 1C never carried out is made once the settle time passed."""
    settings = make_settings(amo_emu, onec_emu, create_settle_seconds="5s")
    lead_id = seed_lead(amo_emu)
    with store.session() as s:
        s.add(Registration(lead_id=lead_id, status="failed",
                           create_sent_at=datetime.now(timezone.utc) - timedelta(seconds=6)))
    assert run(settings, store).ok
    assert len(zayavki(onec_emu, lead_id)) == 1


def test_given_two_leaders_on_one_postgresql_when_the_first_create_is_in_flight_then_one_zayavka(
        amo_emu, onec_emu, pg_url):
    settings = make_settings(amo_emu, onec_emu, create_settle_seconds="20s")
    store_a = Store(pg_url)
    store_a.upgrade()
    store_b = Store(pg_url)   # the standby: its own engine, as another process has
    _empty(store_a)
    try:
        lead_id = seed_lead(amo_emu)
        fault(onec_emu, count=1, phase="before", delay_ms=2500, method="POST", path_prefix=ZAYAVKA_SET)
        results = {}
        a = threading.Thread(target=lambda: results.setdefault("a", run_job(_ctx(settings, store_a), "registration")))
        a.start()
        wait_until(lambda: (registration(store_b, lead_id) or Registration()).create_sent_at is not None,
                   message="leader A's intent in the store")

        # B while A holds the lead's claim: leaves it alone
        b1 = run_job(_ctx(settings, store_b), "registration")
        assert b1.counts["claimed_elsewhere"] == 1
        assert zayavki(onec_emu, lead_id) == []

        # A's claim runs out (its store connection was cut): B finds A's intent, and 1C showing
        # nothing yet, leaves the lead for a later cycle rather than create it again
        with store_b.session() as s:
            s.get(Registration, lead_id).claimed_until = datetime.now(timezone.utc) - timedelta(seconds=1)
        b2 = run_job(_ctx(settings, store_b), "registration")
        assert b2.counts["settling"] == 1
        assert b2.counts["settle_pending"] == 1
        assert b2.counts["created"] == 0
        a.join(timeout=30)
        assert not a.is_alive()
        runs_until_registered(settings, store_b, lead_id, ctx=lambda: _ctx(settings, store_b))
        assert len(zayavki(onec_emu, lead_id)) == 1
        assert len(zayavki(onec_emu)) == 1
    finally:
        _empty(store_a)
        store_a.dispose()
        store_b.dispose()


def _empty(store) -> None:
    with store.engine.begin() as conn:
        for table in ("registrations", "retry_items", "journal", "cursors", "job_runs"):
            conn.exec_driver_sql(f"DELETE FROM {table}")


class _LosesLeadership(JobContext):
    """A leader whose lock cannot be confirmed after ``confirmed`` checks."""

    confirmed = 0

    def fence(self) -> None:
        if self.confirmed <= 0:
            raise LeadershipLost("lock not confirmed (test)")
        self.confirmed -= 1


def test_given_leadership_lost_after_the_create_when_registering_then_no_post_no_amocrm_write_no_cursor(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu)
    reset_requests(amo_emu)
    ctx = _LosesLeadership(settings, store, amocrm=make_amo(settings, store), onec=_ctx(settings, store).onec)
    ctx.confirmed = 2   # the claim and the create are fenced; the post finds the lock gone
    result = run_job(ctx, "registration")
    assert result.status == "interrupted"
    assert result.counts["leadership_lost"] == 1
    [z] = zayavki(onec_emu, lead_id)
    assert not z["posted"]
    assert writes(requests_of(amo_emu)) == {}
    with store.session() as s:
        assert s.get(Cursor, "registration.updated_at") is None


# --- 16: write-back in batches; its crash points ----------------------------------------------


def _flag_many(amo_emu, n: int) -> list[int]:
    times = [f"{h}:{m:02d}" for h in (8, 9, 10, 11, 12) for m in range(15 if h == 8 else 0, 60, 15)]
    assert n <= len(times)   # Ефимова works 8:15-13:00 on the seed day
    return [seed_lead(amo_emu, time=times[i]) for i in range(n)]


def test_given_a_passing_1c_fault_on_one_leads_post_when_a_group_registers_then_the_others_go_first_and_none_waits(
        amo_emu, onec_emu, settings, store):
    ids = _flag_many(amo_emu, 3)
    fault(onec_emu, count=1, status=503, method="POST", path_prefix=ZAYAVKA_SET + "(")
    reset_requests(onec_emu)
    onec = make_onec(settings)
    onec.transport.policy = RequestRetry(retries=3, backoff_base=0.5, backoff_max=2.0)
    slept: list[float] = []
    onec.transport.sleep = slept.append
    result = run_job(JobContext(settings, store, amocrm=make_amo(settings, store), onec=onec), "registration")

    assert result.ok, result.errors
    assert (result.counts["created"], result.counts["deferred_in_cycle"]) == (3, 1)
    posts = [e for e in requests_of(onec_emu)["log"] if e["method"] == "POST" and e["path"].endswith("/Post")]
    assert len(posts) == 4
    refused = posts[0]
    assert refused["status"] == 503
    # the others' posts went between the refused one and its second try; no backoff was slept
    assert [p["path"] for p in posts].index(refused["path"], 1) == 3
    assert slept == []
    assert all(z["posted"] for lead_id in ids for z in zayavki(onec_emu, lead_id))


def test_given_an_unconfirmed_create_younger_than_the_settle_time_when_1c_shows_nothing_then_the_cycle_leaves_it(
        amo_emu, onec_emu, store):
    settings = make_settings(amo_emu, onec_emu, create_settle_seconds="30s")
    lead_id = seed_lead(amo_emu)
    sent = datetime.now(timezone.utc) - timedelta(seconds=2)
    with store.session() as s:
        s.add(Registration(lead_id=lead_id, status="failed", create_sent_at=sent))
    reset_requests(onec_emu)

    result = run(settings, store)

    assert result.counts["settle_pending"] == 1
    assert result.counts["created"] == 0
    assert _count(requests_of(onec_emu), "POST", ZAYAVKA_SET) == 0
    reg = registration(store, lead_id)
    assert reg.create_sent_at is not None   # the intent is kept
    assert reg.claimed_by is None           # the claim released
    assert lead(amo_emu, lead_id)["fields"][FLAG] is True
    with store.session() as s:   # the settle time is over: 1C did not carry it out
        s.get(Registration, lead_id).create_sent_at = sent - timedelta(seconds=30)
    assert run(settings, store).counts["created"] == 1
    assert len(zayavki(onec_emu, lead_id)) == 1


def test_given_18_leads_flagged_at_once_when_registered_then_one_notes_post_one_patch_and_few_1c_requests(
        amo_emu, onec_emu, settings, store):
    ids = _flag_many(amo_emu, 18)
    reset_requests(amo_emu)
    reset_requests(onec_emu)
    result = run(settings, store)
    assert result.ok, result.errors
    assert result.counts["created"] == 18, result.errors
    amo = requests_of(amo_emu)
    amo["counts"].pop("GET /api/v4/leads/custom_fields", None)   # the field map, once per gateway
    # the flag's events, the 18 flagged leads read by id, one notes POST, one PATCH
    assert amo["counts"] == {"GET /api/v4/events": 1, "GET /api/v4/leads": 1, "POST /api/v4/leads/notes": 1,
                             "PATCH /api/v4/leads": 1}
    onec = requests_of(onec_emu)
    assert onec["total"] / 18 <= 2.5, onec["counts"]
    assert all(len(zayavki(onec_emu, i)) == 1 for i in ids)
    assert all(lead(amo_emu, i)["fields"].get(FLAG) in (False, None) for i in ids)
    with store.session() as s:
        assert s.query(Registration).filter_by(status="done").count() == 18


def test_given_a_lone_lead_in_a_running_daemon_when_registered_then_at_most_three_1c_requests(
        amo_emu, onec_emu, settings, store):
    ctx = make_ctx(settings, store)   # as the daemon does: one context for the term
    seed_lead(amo_emu, time="9:05")
    assert run_job(ctx, "registration").ok
    lead_id = seed_lead(amo_emu, time="10:00")
    reset_requests(onec_emu)
    assert run_job(ctx, "registration").ok
    onec = requests_of(onec_emu)
    assert onec["total"] <= 3, onec["counts"]
    assert len(zayavki(onec_emu, lead_id)) == 1
    assert zayavki(onec_emu, lead_id)[0]["posted"]


def test_given_the_notes_answer_lost_after_amocrm_wrote_them_when_rerun_then_a_duplicate_note_at_worst(
        amo_emu, onec_emu, settings, store):
    ids = _flag_many(amo_emu, 3)
    fault(amo_emu, count=1, phase="after", drop=True, method="POST", path_prefix="/api/v4/leads/notes")
    first = run(settings, store)
    assert first.counts["failed"] == 3
    assert all(lead(amo_emu, i)["fields"][FLAG] is True and len(lead(amo_emu, i)["notes"]) == 1 for i in ids)

    _due_now(store, *ids)
    assert run(settings, store).ok
    for i in ids:
        notes = lead(amo_emu, i)["notes"]
        assert len(notes) == 2
        assert notes[0] == notes[1]
        assert notes[0].startswith("Создан документ Заявка №")
        assert len(zayavki(onec_emu, i)) == 1
        assert registration(store, i).status == "done"
    assert len(zayavki(onec_emu)) == 3


def test_given_the_patch_answer_lost_after_amocrm_wrote_it_when_next_cycle_then_reconciled_done_one_note(
        amo_emu, onec_emu, settings, store):
    ids = _flag_many(amo_emu, 3)
    fault(amo_emu, count=1, phase="after", drop=True, method="PATCH", path_prefix="/api/v4/leads")
    first = run(settings, store)
    assert first.counts["failed"] == 3
    assert all(lead(amo_emu, i)["fields"].get(FLAG) in (False, None) for i in ids)   # carried out

    again = run(settings, store)
    assert again.ok, again.errors
    assert again.counts["reconciled"] == 3, again.errors
    for i in ids:
        assert registration(store, i).status == "done"
        assert retry_item(store, i) is None
        assert len(lead(amo_emu, i)["notes"]) == 1
        assert len(zayavki(onec_emu, i)) == 1


# --- 14.9: entries that never resolve ------------------------------------------------------------


def test_given_pending_after_a_kill_between_note_and_commit_when_amocrm_has_the_patch_then_done(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu)
    fault(amo_emu, count=1, phase="after", drop=True, method="PATCH", path_prefix="/api/v4/leads")
    run(settings, store)
    with store.session() as s:   # what a SIGKILL before the commit leaves: pending, no failure record
        s.get(Registration, lead_id).status = "pending"
        s.delete(s.get(RetryItem, ("registration", lead_id)))

    result = run(settings, store)
    assert result.ok
    assert result.counts["reconciled"] == 1
    assert registration(store, lead_id).status == "done"
    with store.session() as s:
        assert s.query(JournalEntry).filter_by(lead_id=lead_id, action="lead.reconciled").count() == 1


def test_given_a_failed_lead_deleted_in_amocrm_when_next_cycle_then_recorded_deleted_and_out_of_retries(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu)
    fault(onec_emu, count=1, status=500, method="POST", path_prefix=ZAYAVKA_SET)
    assert run(settings, store).counts["failed"] == 1
    assert retry_item(store, lead_id).state == "retrying"
    requests.delete(f"{amo_emu.url}/_sandbox/leads/{lead_id}", timeout=5).raise_for_status()

    result = run(settings, store)
    assert result.counts["leads_deleted"] == 1
    assert registration(store, lead_id).status == "deleted"
    assert retry_item(store, lead_id) is None
    assert zayavki(onec_emu, lead_id) == []
    _counts, unsettled = retries.unsettled(store, limit=50)   # what `status` lists as not settled
    assert [row.lead_id for kind, row, _ in unsettled if kind == "registration"] == []


# --- 14.10: messages and needless writes ---------------------------------------------------------


def test_given_1c_keeps_refusing_the_post_when_retried_then_one_note_says_so_and_no_repatch(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu)
    # two refusals a cycle: its first attempt's, and the one of its second attempt in the cycle
    fault(onec_emu, count=4, status=500, method="POST", path_prefix=ZAYAVKA_SET + "(")
    first = run(settings, store)
    assert first.counts["post_refused"] == 1
    [note] = lead(amo_emu, lead_id)["notes"]
    assert "не проводит" in note
    assert "повторяться автоматически" in note
    assert shown(onec_emu, 219) in note
    assert lead(amo_emu, lead_id)["fields"][FLAG] is True

    _due_now(store, lead_id)
    reset_requests(onec_emu)
    second = run(settings, store)
    assert second.counts["post_refused"] == 1
    assert len(lead(amo_emu, lead_id)["notes"]) == 1
    assert _count(requests_of(onec_emu), "PATCH", ZAYAVKA_SET) == 0

    _due_now(store, lead_id)
    reset_requests(onec_emu)
    assert run(settings, store).ok
    assert _count(requests_of(onec_emu), "PATCH", ZAYAVKA_SET) == 0
    assert zayavki(onec_emu, lead_id)[0]["posted"]
    assert len(zayavki(onec_emu)) == 1
    assert lead(amo_emu, lead_id)["notes"][1] == f"Создан документ Заявка № {shown(onec_emu, 219)}"


def test_given_the_date_31_12_9999_when_flagged_then_a_readable_note_not_a_raw_timestamp(
        amo_emu, onec_emu, settings, store):
    lead_id = seed_lead(amo_emu, day="31.12.9999")
    result = run(settings, store)
    assert result.ok, result.errors
    assert result.counts["invalid"] == 1, result.errors
    [note] = lead(amo_emu, lead_id)["notes"]
    assert "31.12.9999" in note, note
    assert "2534022" not in note, note
    assert zayavki(onec_emu, lead_id) == []
    assert lead(amo_emu, lead_id)["fields"].get(FLAG) in (False, None)


def test_given_a_claim_of_a_killed_daemon_on_this_host_when_the_next_one_runs_then_it_registers_at_once(
        amo_emu, onec_emu, settings, store):
    import socket
    import subprocess
    import sys

    lead_id = seed_lead(amo_emu)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    with store.session() as s:   # its claim would run for another 10 minutes
        s.add(Registration(lead_id=lead_id, status="pending", claimed_by=f"{socket.gethostname()[:40]}:{pid}:x",
                           claimed_until=datetime.now(timezone.utc) + timedelta(minutes=10)))
    result = run(settings, store)
    assert result.ok, result.counts
    assert result.counts["created"] == 1, result.counts
    assert len(zayavki(onec_emu, lead_id)) == 1
