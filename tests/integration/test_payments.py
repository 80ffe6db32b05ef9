"""F3 payments end to end: both emulators over HTTP, a real store (SQLite file and PostgreSQL)."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests
from sqlalchemy import select

from amo1c_sync.config import Settings, load_settings
from amo1c_sync.jobs import JobContext, JobResult, run_job
from amo1c_sync.onec import OneC
from amo1c_sync.store import cursors
from amo1c_sync.store.payments import UNCONFIRMED, skipped_documents, unsettled_totals
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator
from amo1c_sync.store import Store
from amo1c_sync.store.models import JournalEntry, LeadTotal, OnecDocument, RetryItem

DOCTOR = "Ефимова Е.В."
PATCH = "PATCH /api/v4/leads"


@dataclass
class Systems:
    amo: AmoCRMEmulator
    onec: OneCEmulator
    store: Store
    settings: Settings

    # --- the people's side, over the control APIs --------------------------------------------
    def new_lead(self, name: str = "") -> int:
        r = requests.post(f"{self.amo.url}/_sandbox/leads", json={"name": name or "Пациент"}, timeout=5)
        r.raise_for_status()
        return r.json()["id"]

    def lead(self, lead_id: int) -> dict:
        r = requests.get(f"{self.amo.url}/_sandbox/leads/{lead_id}", timeout=5)
        r.raise_for_status()
        return r.json()

    def sum1c(self, lead_id: int) -> Decimal | None:
        value = self.lead(lead_id)["fields"].get("Сумма1С")
        return None if value in (None, "") else Decimal(str(value))

    def delete_lead(self, lead_id: int) -> None:
        requests.delete(f"{self.amo.url}/_sandbox/leads/{lead_id}", timeout=5).raise_for_status()

    def zayavka(self, lead: int | None) -> str:
        start = datetime.now().replace(hour=9, minute=5, second=0, microsecond=0)
        r = requests.post(f"{self.onec.url}/_sandbox/zayavki",
                          json={"lead": lead, "doctor": DOCTOR, "start": start.isoformat()}, timeout=5)
        r.raise_for_status()
        return r.json()["ref"]

    def service(self, amount: str, *, lead: int | None = None, zayavka_ref: str | None = None,
                no_base: bool = False) -> str:
        body: dict = {"amount": amount}
        if no_base:
            body["zayavka_ref"] = None
        elif zayavka_ref is not None:
            body["zayavka_ref"] = zayavka_ref
        else:
            body["lead"] = lead
        r = requests.post(f"{self.onec.url}/_sandbox/services", json=body, timeout=5)
        r.raise_for_status()
        return r.json()["ref"]

    def service_action(self, ref: str, action: str, **body) -> None:
        requests.post(f"{self.onec.url}/_sandbox/services/{ref}/{action}", json=body or None,
                      timeout=5).raise_for_status()

    # --- the job ------------------------------------------------------------------------------
    def run(self, **kw) -> JobResult:
        return run_job(JobContext(self.settings, self.store, **kw), "payments")

    def amo_requests(self) -> dict:
        return requests.get(f"{self.amo.url}/_sandbox/requests", timeout=5).json()

    def reset_requests(self) -> None:
        requests.delete(f"{self.amo.url}/_sandbox/requests", timeout=5).raise_for_status()
        requests.delete(f"{self.onec.url}/_sandbox/requests", timeout=5).raise_for_status()

    def journal(self, action: str, lead_id: int | None = None) -> list[JournalEntry]:
        with self.store.session() as s:
            q = select(JournalEntry).where(JournalEntry.action == action).order_by(JournalEntry.id)
            if lead_id is not None:
                q = q.where(JournalEntry.lead_id == lead_id)
            return list(s.scalars(q))

    def lead_total(self, lead_id: int) -> LeadTotal | None:
        with self.store.session() as s:
            return s.get(LeadTotal, lead_id)

    def retry_item(self, lead_id: int) -> RetryItem | None:
        with self.store.session() as s:
            return s.get(RetryItem, ("payment", lead_id))


def settings_for(amo: AmoCRMEmulator, onec: OneCEmulator, store_url: str, token: str) -> Settings:
    return load_settings(None, overrides={
        "amocrm": {"base_url": amo.url, "long_lived_token": token},
        "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
        "store": {"url": store_url},
    })


@pytest.fixture
def sys_(store):
    with AmoCRMEmulator() as amo, OneCEmulator() as onec:
        token = amo.issue_long_lived_token()
        yield Systems(amo, onec, store, settings_for(amo, onec, store.url, token))


def paid(sys_: Systems, amount: str) -> tuple[int, str]:
    """A lead with its «Заявка» and a posted «Оказание услуг» of ``amount``."""
    lead = sys_.new_lead()
    sys_.zayavka(lead)
    return lead, sys_.service(amount, lead=lead)


# ---------------------------------------------------------------------------------------------
def test_given_the_seeds_zayavka_when_a_service_of_150_is_posted_then_the_lead_gets_price_150_and_sum_150(sys_):
    lead, ref = paid(sys_, "150.00")

    result = sys_.run()

    assert result.ok, result.errors
    view = sys_.lead(lead)
    assert view["price"] == 150
    assert Decimal(view["fields"]["Сумма1С"]) == Decimal("150")
    total = sys_.lead_total(lead)
    assert (total.status, total.pushed_total) == ("ok", Decimal("150.00"))
    entries = sys_.journal("lead.total_pushed", lead)
    assert len(entries) == 1
    assert entries[0].detail["old_total"] is None
    assert entries[0].detail["new_total"] == "150.00"
    assert [d["ref"] for d in entries[0].detail["documents"]] == [ref]
    with sys_.store.session() as s:
        doc = s.get(OnecDocument, ref)
        assert doc.lead_id == lead
        assert doc.data_version
        assert doc.skip_reason is None


def test_given_a_pushed_lead_when_documents_are_reposted_unposted_and_marked_then_the_total_follows(sys_):
    lead, first = paid(sys_, "150.00")
    assert sys_.run().ok

    sys_.service_action(first, "post", amount="200.00")
    assert sys_.run().ok
    assert (sys_.lead(lead)["price"], sys_.sum1c(lead)) == (200, Decimal("200"))

    second = sys_.service("50.50", lead=lead)
    assert sys_.run().ok
    assert (sys_.lead(lead)["price"], sys_.sum1c(lead)) == (251, Decimal("250.50"))

    sys_.service_action(first, "unpost")
    assert sys_.run().ok
    assert (sys_.lead(lead)["price"], sys_.sum1c(lead)) == (51, Decimal("50.50"))

    sys_.service_action(second, "delete")
    assert sys_.run().ok
    assert (sys_.lead(lead)["price"], sys_.sum1c(lead)) == (0, Decimal("0"))

    pushed = [(e.detail["old_total"], e.detail["new_total"]) for e in sys_.journal("lead.total_pushed", lead)]
    assert pushed == [(None, "150.00"), ("150.00", "200.00"), ("200.00", "250.50"), ("250.50", "50.50"),
                      ("50.50", "0.00")]
    with sys_.store.session() as s:
        row = s.get(LeadTotal, lead)
        assert row.pushed_total == Decimal("0")
        assert row.status == "ok"


def test_given_documents_without_base_or_lead_number_when_run_then_they_are_skipped_and_visible(sys_):
    no_base = sys_.service("300.00", no_base=True)
    orphan_zayavka = sys_.zayavka(None)
    no_number = sys_.service("400.00", zayavka_ref=orphan_zayavka)
    lead, counted = paid(sys_, "150.00")

    result = sys_.run()

    assert result.ok, result.errors
    assert result.counts["skipped"] == 2
    assert sys_.lead(lead)["price"] == 150
    skipped = {d.ref: d for d in skipped_documents(sys_.store)}
    assert set(skipped) == {no_base, no_number}
    assert "no base document" in skipped[no_base].reason
    assert "«Номер AmoCRM»" in skipped[no_number].reason
    assert skipped[no_base].amount == Decimal("300.00")
    assert skipped[no_base].posted
    assert {e.ref for e in sys_.journal("document.skipped")} == {no_base, no_number}

    # once per DataVersion: a run without changes journals nothing new; a change journals again
    assert sys_.run().counts["skipped"] == 0
    assert len(sys_.journal("document.skipped")) == 2
    sys_.service_action(no_base, "post", amount="310.00")
    assert sys_.run().counts["skipped"] == 1
    assert len(sys_.journal("document.skipped")) == 3


def test_given_a_lead_deleted_in_amocrm_when_run_then_it_fails_alone_and_waits_for_a_document_change(sys_):
    gone, ref = paid(sys_, "100.00")
    others = [paid(sys_, "150.00")[0], paid(sys_, "99.99")[0]]
    sys_.delete_lead(gone)

    result = sys_.run()

    assert result.status == "partial"
    assert [sys_.lead(o)["price"] for o in others] == [150, 100]
    assert sys_.lead_total(gone).status == "failed"
    assert sys_.lead_total(gone).pushed_total is None
    failed = sys_.retry_item(gone)
    assert (failed.state, failed.attempts, failed.code) == ("item_error", 1, "amocrm:NotFound")
    assert "NotFound" in failed.error
    assert failed.next_attempt_at is None
    assert len(sys_.journal("lead.total_rejected", gone)) == 1
    assert [(r.lead_id, r.status) for r in unsettled_totals(sys_.store)] == [(gone, "failed")]

    # an item error is not retried while nothing changed: no PATCH, the run is ok
    sys_.reset_requests()
    again = sys_.run()
    assert again.ok
    assert again.counts["waiting_for_change"] == 1
    assert sys_.amo_requests()["counts"].get(PATCH, 0) == 0
    # a change of its document makes it worth a new try (and it fails again)
    sys_.service_action(ref, "post", amount="120.00")
    third = sys_.run()
    assert third.status == "partial"
    assert sys_.retry_item(gone).attempts == 2


def test_given_no_change_in_1c_when_run_again_then_no_patch_and_only_the_hot_window_is_read(sys_):
    paid(sys_, "150.00")
    first = sys_.run()
    assert first.ok
    assert first.counts["window_full"] == 1
    assert cursors.last_full_scan(sys_.store) is not None
    sys_.reset_requests()

    second = sys_.run()

    assert second.ok
    assert second.counts["window_hot"] == 1
    assert second.counts["changed"] == 0
    assert sys_.amo_requests()["total"] == 0
    targets = [unquote(t["target"]) for t in sys_.onec.requests()["log"]
               if "ОказаниеУслуг" in unquote(t["target"])]
    assert len(targets) == 1
    lower = re.search(r"Date ge datetime'([^']+)'", targets[0])
    assert lower, targets[0]
    read_from = datetime.fromisoformat(lower.group(1))
    hot_from = datetime.now(sys_.settings.sync.tz).replace(tzinfo=None) - timedelta(
        seconds=sys_.settings.sync.hot_window)
    assert abs((read_from - hot_from).total_seconds()) < 120
    assert "$select=" in targets[0]


def test_given_a_backfill_since_date_when_run_then_the_window_reaches_back_to_it(sys_):
    paid(sys_, "150.00")
    since = (datetime.now() - timedelta(days=100)).date()
    sys_.reset_requests()

    result = sys_.run(since=since)

    assert result.ok
    assert result.counts["window_since"] == 1
    assert result.counts["pushed"] == 1
    targets = [unquote(t["target"]) for t in sys_.onec.requests()["log"]
               if "ОказаниеУслуг" in unquote(t["target"])]
    lowest = min(datetime.fromisoformat(m.group(1)) for t in targets
                 for m in [re.search(r"Date ge datetime'([^']+)'", t)] if m)
    assert lowest.date() == since


def test_given_changes_when_dry_run_then_nothing_is_written_and_patches_are_planned(sys_):
    lead, _ = paid(sys_, "150.00")

    result = sys_.run(dry_run=True)

    assert result.ok
    assert [p["lead_id"] for p in result.planned] == [lead]
    assert result.planned[0]["body"]["price"] == 150
    assert result.planned[0]["body"]["custom_fields_values"][0]["values"] == [{"value": "150"}]
    assert sys_.amo_requests()["counts"].get(PATCH, 0) == 0
    assert sys_.lead(lead)["price"] == 0
    with sys_.store.session() as s:
        assert s.scalars(select(OnecDocument)).first() is None
        assert s.scalars(select(LeadTotal)).first() is None
        assert s.scalars(select(JournalEntry)).first() is None
    assert cursors.last_full_scan(sys_.store) is None
    # and the real run afterwards does it
    assert sys_.run().ok
    assert sys_.lead(lead)["price"] == 150


def test_given_1200_leads_changed_at_once_when_run_then_at_most_24_patches_within_the_rate_limit(sys_):
    amo, onec = sys_.amo, sys_.onec
    leads = [amo.create_lead(f"Пациент {i}") for i in range(1200)]
    start = datetime.now().replace(hour=10, minute=0, second=0, microsecond=0)
    for i, lead in enumerate(leads):
        z = onec.add_zayavka(lead=lead, doctor=DOCTOR, start=start)
        onec.add_service(zayavka_ref=z["Ref_Key"], amount=Decimal(100 + i) + Decimal("0.50"))

    result = sys_.run()

    assert result.ok, result.errors[:3]
    assert result.counts["pushed"] == 1200
    traffic = sys_.amo_requests()
    assert traffic["counts"][PATCH] <= 24
    assert traffic["max_per_second"] <= 7
    assert traffic["by_status"].get("429", 0) == 0
    for i in (0, 599, 1199):
        view = amo.lead(leads[i])
        assert view["price"] == 100 + i + 1  # x.50 rounds half up
        assert Decimal(view["fields"]["Сумма1С"]) == Decimal(100 + i) + Decimal("0.50")



def odata_patch(sys_: Systems, entity_set: str, ref: str, body: dict) -> None:
    """Edit a 1C object as a person would in the 1C client (the login is Cyrillic: UTF-8 Basic)."""
    token = base64.b64encode(f"{sys_.onec.username}:{sys_.onec.password}".encode("utf-8")).decode()
    r = requests.patch(f"{sys_.onec.odata_url}{entity_set}(guid'{ref}')?$format=json", json=body,
                       headers={"Authorization": f"Basic {token}"}, timeout=5)
    assert r.status_code == 200, r.text


def test_given_a_document_moved_to_another_zayavka_when_run_then_both_leads_are_recomputed(sys_):
    a, ref = paid(sys_, "150.00")
    b = sys_.new_lead()
    zb = sys_.zayavka(b)
    assert sys_.run().ok
    assert sys_.lead(a)["price"] == 150

    odata_patch(sys_, "Document_ОказаниеУслуг", ref,
                {"ДокументОснование": zb, "ДокументОснование_Type": "StandardODATA.Document_Заявка"})
    result = sys_.run()

    assert result.ok
    assert result.counts["pushed"] == 2
    assert (sys_.lead(a)["price"], sys_.sum1c(a)) == (0, Decimal("0"))
    assert (sys_.lead(b)["price"], sys_.sum1c(b)) == (150, Decimal("150"))


def test_given_a_document_losing_its_base_when_run_then_its_old_lead_drops_and_it_is_skipped(sys_):
    a, ref = paid(sys_, "150.00")
    assert sys_.run().ok

    odata_patch(sys_, "Document_ОказаниеУслуг", ref,
                {"ДокументОснование": "", "ДокументОснование_Type": "StandardODATA.Undefined"})
    result = sys_.run()

    assert result.ok
    assert result.counts["skipped"] == 1
    assert sys_.lead(a)["price"] == 0
    assert [d.ref for d in skipped_documents(sys_.store)] == [ref]


def test_given_a_failed_lead_when_its_total_returns_to_the_pushed_one_then_it_is_ok_again(sys_):
    lead, ref = paid(sys_, "150.00")
    assert sys_.run().ok
    sys_.service_action(ref, "post", amount="200.00")
    sys_.amo.add_fault(count=1, status=400, path_prefix="/api/v4/leads", method="PATCH")
    failed = sys_.run()
    assert failed.status == "partial"
    assert sys_.lead_total(lead).status == "failed"

    sys_.service_action(ref, "post", amount="150.00")
    sys_.reset_requests()
    result = sys_.run()

    assert result.ok
    assert sys_.amo_requests()["counts"].get(PATCH, 0) == 0
    row = sys_.lead_total(lead)
    assert (row.status, row.pushed_total) == ("ok", Decimal("150"))
    assert sys_.retry_item(lead) is None


def test_given_a_run_stopped_before_the_push_when_run_again_then_the_pending_total_is_pushed(sys_):
    lead, _ = paid(sys_, "150.00")
    stop = threading.Event()
    ctx = JobContext(sys_.settings, sys_.store, stop=stop)
    original = ctx.amocrm.lead_field_map

    def fields_then_stop(*args, **kw):
        out = original(*args, **kw)
        stop.set()  # SIGTERM arrives while the run is between reading 1C and writing amoCRM
        return out

    ctx.amocrm.lead_field_map = fields_then_stop
    interrupted = run_job(ctx, "payments")
    assert interrupted.status == "interrupted"
    assert sys_.lead(lead)["price"] == 0
    assert sys_.lead_total(lead).status == "pending"

    # the pending total survived the interruption; the next cycle pushes it
    assert sys_.run().ok
    assert sys_.lead(lead)["price"] == 150
    assert sys_.lead_total(lead).status == "ok"


# ---------------------------------------------------------------------------------------------
# crash between the amoCRM write and the store commit: amoCRM carries out the PATCH and holds
# its answer (an after-commit fault); the `once` subprocess is SIGKILLed while it waits
# ---------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def crash_sys(store, tmp_path):
    with AmoCRMEmulator() as amo, OneCEmulator() as onec:
        token = amo.issue_long_lived_token()
        ini = tmp_path / "sync.ini"
        ini.write_text(
            f"[amocrm]\nbase_url = {amo.url}\n\n"
            f"[onec]\nbase_url = {onec.url}\nusername = {onec.username}\n\n"
            f"[store]\nurl = {store.url}\n\n[logging]\nformat = json\nlevel = WARNING\n",
            encoding="utf-8")
        systems = Systems(amo, onec, store, settings_for(amo, onec, store.url, token))
        systems.ini = ini  # type: ignore[attr-defined]
        systems.env = {**os.environ, "AMO1C_AMOCRM_LONG_LIVED_TOKEN": token,  # type: ignore[attr-defined]
                       "AMO1C_ONEC_PASSWORD": onec.password, "PYTHONPATH": str(ROOT)}
        yield systems


def once_payments(sys_) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amo1c_sync", "--config", str(sys_.ini), "once", "payments"],
                          env=sys_.env, cwd=str(ROOT), capture_output=True, text=True, timeout=60)


def once_payments_killed_after_the_amocrm_write(sys_, lead: int, price: int) -> int:
    """`once payments` while amoCRM holds the answer to its PATCH for a minute; SIGKILLed as soon
    as amoCRM shows the lead at ``price`` (written, never confirmed). -> the return code."""
    requests.post(f"{sys_.amo.url}/_sandbox/faults", timeout=5, json={
        "count": 1, "phase": "after", "delay_ms": 60_000, "path_prefix": "/api/v4/leads",
        "method": "PATCH"}).raise_for_status()
    proc = subprocess.Popen([sys.executable, "-m", "amo1c_sync", "--config", str(sys_.ini), "once", "payments"],
                            env=sys_.env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while sys_.lead(lead)["price"] != price:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "amoCRM never got the PATCH"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stderr.close()
        requests.delete(f"{sys_.amo.url}/_sandbox/faults", timeout=5).raise_for_status()


def test_given_a_run_killed_after_the_amocrm_write_when_rerun_then_right_total_and_one_journal_entry(crash_sys):
    sys_ = crash_sys
    lead = sys_.new_lead()
    sys_.zayavka(lead)
    ref = sys_.service("150.00", lead=lead)
    assert once_payments(sys_).returncode == 0
    sys_.service_action(ref, "post", amount="200.00")

    killed = once_payments_killed_after_the_amocrm_write(sys_, lead, 200)

    assert killed == -signal.SIGKILL
    # amoCRM has the new total, the store does not know yet
    assert sys_.lead(lead)["price"] == 200
    with sys_.store.session() as s:
        row = s.get(LeadTotal, lead)
        assert (row.status, row.pushed_total) == ("pending", Decimal("150"))
        assert s.get(OnecDocument, ref).data_version != sys_.onec.services()[0]["data_version"]

    rerun = once_payments(sys_)

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sys_.lead(lead)["price"] == 200
    assert sys_.sum1c(lead) == Decimal("200")
    assert sys_.amo_requests()["counts"][PATCH] == 3  # first run, the killed one, its repeat
    with sys_.store.session() as s:
        row = s.get(LeadTotal, lead)
        assert (row.status, row.pushed_total) == ("ok", Decimal("200"))
        assert s.get(OnecDocument, ref).data_version == sys_.onec.services()[0]["data_version"]
        pushed = [(e.detail["old_total"], e.detail["new_total"]) for e in s.scalars(
            select(JournalEntry).where(JournalEntry.action == "lead.total_pushed").order_by(JournalEntry.id))]
    assert pushed == [(None, "150.00"), ("150.00", "200.00")]


def test_given_a_first_push_killed_when_rerun_then_the_new_document_is_counted_once(crash_sys):
    sys_ = crash_sys
    lead = sys_.new_lead()
    sys_.zayavka(lead)
    ref = sys_.service("150.00", lead=lead)

    killed = once_payments_killed_after_the_amocrm_write(sys_, lead, 150)

    assert killed == -signal.SIGKILL
    with sys_.store.session() as s:
        assert s.get(OnecDocument, ref).data_version == UNCONFIRMED
        assert s.get(LeadTotal, lead).status == "pending"
    # meanwhile a second payment is posted: the rerun pushes both, counted once each
    sys_.service("50.50", lead=lead)

    assert once_payments(sys_).returncode == 0

    assert sys_.lead(lead)["price"] == 201
    assert sys_.sum1c(lead) == Decimal("200.50")
    with sys_.store.session() as s:
        pushed = [e.detail["new_total"] for e in s.scalars(
            select(JournalEntry).where(JournalEntry.action == "lead.total_pushed"))]
    assert pushed == ["200.50"]


# ---------------------------------------------------------------------------------------------
# a push amoCRM carried out but never confirmed, then 1C returns to the last confirmed total
# ---------------------------------------------------------------------------------------------
def test_given_a_push_whose_answer_was_lost_when_1c_returns_to_the_confirmed_total_then_amocrm_gets_it(store):
    with AmoCRMEmulator() as amo, OneCEmulator() as onec:
        token = amo.issue_long_lived_token()
        settings = load_settings(None, overrides={
            "amocrm": {"base_url": amo.url, "long_lived_token": token},
            "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
            "store": {"url": store.url}, "retry": {"request_retries": "0"}})
        sys_ = Systems(amo, onec, store, settings)
        lead, _ = paid(sys_, "150.00")
        assert sys_.run().ok
        extra = sys_.service("50.00", lead=lead)
        sys_.amo.add_fault(count=1, status=None, drop=True, phase="after", path_prefix="/api/v4/leads",
                           method="PATCH")

        lost = sys_.run()

        assert lost.status == "failed"
        assert sys_.lead(lead)["price"] == 200  # amoCRM carried it out; the answer never came
        row = sys_.lead_total(lead)
        assert (row.pushed_total, row.pushing_total) == (Decimal("150"), Decimal("200"))

        sys_.service_action(extra, "unpost")  # back to the total last confirmed
        again = sys_.run()

        assert again.ok, again.errors
        assert (sys_.lead(lead)["price"], sys_.sum1c(lead)) == (150, Decimal("150"))
        row = sys_.lead_total(lead)
        assert (row.status, row.pushed_total, row.pushing_total) == ("ok", Decimal("150"), None)


def test_given_a_run_killed_after_the_amocrm_write_when_1c_returns_to_the_recorded_total_then_amocrm_follows(crash_sys):
    sys_ = crash_sys
    lead = sys_.new_lead()
    sys_.zayavka(lead)
    sys_.service("150.00", lead=lead)
    assert once_payments(sys_).returncode == 0
    extra = sys_.service("50.00", lead=lead)

    killed = once_payments_killed_after_the_amocrm_write(sys_, lead, 200)

    assert killed == -signal.SIGKILL
    assert sys_.lead_total(lead).pushing_total == Decimal("200")
    sys_.service_action(extra, "unpost")

    rerun = once_payments(sys_)

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (sys_.lead(lead)["price"], sys_.sum1c(lead)) == (150, Decimal("150"))
    row = sys_.lead_total(lead)
    assert (row.status, row.pushed_total, row.pushing_total) == ("ok", Decimal("150"), None)


# ---------------------------------------------------------------------------------------------
# changes in 1C a document's own DataVersion does not show: its base «Заявка», or its deletion
# ---------------------------------------------------------------------------------------------
def odata_delete(sys_: Systems, entity_set: str, ref: str) -> None:
    token = base64.b64encode(f"{sys_.onec.username}:{sys_.onec.password}".encode("utf-8")).decode()
    r = requests.delete(f"{sys_.onec.odata_url}{entity_set}(guid'{ref}')",
                        headers={"Authorization": f"Basic {token}"}, timeout=5)
    assert r.status_code == 204, r.text


def relink(sys_: Systems, zayavka_ref: str, value: str) -> None:
    """A 1C user types «Номер AmoCRM» on the «Заявка» (fills it in, corrects it, relinks it)."""
    odata_patch(sys_, "Document_Заявка", zayavka_ref, {"НомерAmoCRM": value})


def test_given_a_skipped_payment_when_the_lead_number_is_filled_in_on_its_zayavka_then_the_lead_gets_it(sys_):
    lead = sys_.new_lead()
    z = sys_.zayavka(None)
    ref = sys_.service("300.00", zayavka_ref=z)
    assert sys_.run().counts["skipped"] == 1

    relink(sys_, z, str(lead))
    result = sys_.run()

    assert result.ok
    assert result.counts["window_hot"] == 1
    assert result.counts["pushed"] == 1
    assert (sys_.lead(lead)["price"], sys_.sum1c(lead)) == (300, Decimal("300"))
    assert skipped_documents(sys_.store) == []
    with sys_.store.session() as s:
        assert s.get(OnecDocument, ref).lead_id == lead


def test_given_a_zayavka_relinked_to_another_lead_when_run_then_the_money_moves_to_the_second(sys_):
    a, _ = paid(sys_, "150.00")
    b = sys_.new_lead()
    assert sys_.run().ok
    assert sys_.lead(a)["price"] == 150
    z = sys_.onec.zayavki(str(a))[0]["ref"]

    relink(sys_, z, f" {b} ")  # corrected, with the spaces a person leaves
    result = sys_.run()

    assert result.ok
    assert result.counts["pushed"] == 2
    assert (sys_.lead(a)["price"], sys_.sum1c(a)) == (0, Decimal("0"))
    assert (sys_.lead(b)["price"], sys_.sum1c(b)) == (150, Decimal("150"))
    # and the base is now known: the next cycle looks nothing up by ref
    sys_.reset_requests()
    assert sys_.run().counts["changed"] == 0
    assert not [t for t in sys_.onec.requests()["log"] if "Ref_Key eq" in unquote(t["target"])]


def test_given_a_document_deleted_outright_in_1c_when_run_then_the_lead_loses_its_sum(sys_):
    lead, first = paid(sys_, "150.00")
    second = sys_.service("50.00", lead=lead)
    assert sys_.run().ok
    assert sys_.lead(lead)["price"] == 200

    odata_delete(sys_, "Document_ОказаниеУслуг", second)
    result = sys_.run()

    assert result.ok
    assert result.counts["gone"] == 1
    assert result.counts["window_hot"] == 1
    assert (sys_.lead(lead)["price"], sys_.sum1c(lead)) == (150, Decimal("150"))
    with sys_.store.session() as s:
        assert s.get(OnecDocument, second) is None
        assert s.get(OnecDocument, first) is not None
    gone = sys_.journal("document.gone", lead)
    assert len(gone) == 1
    assert gone[0].ref == second
    assert "50.00" in gone[0].message


def test_given_a_document_whose_date_moved_out_of_the_window_when_run_then_it_still_counts(sys_):
    lead, ref = paid(sys_, "150.00")
    assert sys_.run().ok
    old = (datetime.now() - timedelta(days=30)).replace(microsecond=0)

    odata_patch(sys_, "Document_ОказаниеУслуг", ref, {"Date": old.isoformat()})
    result = sys_.run()  # the hot window no longer holds it: looked up by ref, not gone

    assert result.ok
    assert result.counts.get("gone", 0) == 0
    assert sys_.lead(lead)["price"] == 150
    with sys_.store.session() as s:
        assert s.get(OnecDocument, ref).doc_date.astimezone(sys_.settings.sync.tz).date() == old.date()


def test_given_old_edits_outside_every_window_when_once_payments_since_then_all_are_repaired(sys_):
    long_ago = (datetime.now() - timedelta(days=100)).replace(hour=10, minute=0, second=0, microsecond=0)
    a, b, c = sys_.new_lead(), sys_.new_lead(), sys_.new_lead()
    za, zc = sys_.zayavka(a), sys_.zayavka(None)
    moved = sys_.service("150.00", zayavka_ref=za)
    deleted = sys_.service("40.00", zayavka_ref=za)
    unlinked = sys_.service("70.00", zayavka_ref=zc)
    for ref in (moved, deleted, unlinked):
        odata_patch(sys_, "Document_ОказаниеУслуг", ref, {"Date": long_ago.isoformat()})
    since = (long_ago - timedelta(days=1)).date()
    assert sys_.run(since=since).ok
    assert sys_.lead(a)["price"] == 190

    relink(sys_, za, str(b))          # the money of «Заявка» a moves to lead b
    relink(sys_, zc, str(c))          # a number filled in
    odata_delete(sys_, "Document_ОказаниеУслуг", deleted)
    assert sys_.run().ok
    assert sys_.lead(a)["price"] == 190

    result = sys_.run(since=since)

    assert result.ok, result.errors
    assert [sys_.lead(x)["price"] for x in (a, b, c)] == [0, 150, 70]
    assert result.counts["gone"] == 1


def test_given_a_known_window_when_one_document_changes_then_the_scan_reads_versions_and_only_its_full_row(sys_):
    lead, ref = paid(sys_, "150.00")
    others = [paid(sys_, "10.00")[1] for _ in range(3)]
    assert sys_.run().ok
    sys_.service_action(ref, "post", amount="175.00")
    sys_.reset_requests()

    result = sys_.run()

    assert result.ok
    assert result.counts["changed"] == 1
    assert sys_.lead(lead)["price"] == 175
    reads = [unquote(t["target"]) for t in sys_.onec.requests()["log"] if "ОказаниеУслуг" in unquote(t["target"])]
    assert len(reads) == 2, reads
    assert "$select=Ref_Key,DataVersion&" in reads[0]
    assert "Date ge" in reads[0]
    assert f"Ref_Key eq guid'{ref}'" in reads[1]
    assert not any(o in reads[1] for o in others)


def test_given_a_periodic_full_scan_when_cycles_run_then_it_goes_in_slices_after_the_hot_window(sys_):
    lead, _ = paid(sys_, "150.00")
    old_lead = sys_.new_lead()
    old = sys_.service("70.00", zayavka_ref=sys_.zayavka(old_lead))
    month_ago = (datetime.now() - timedelta(days=30)).replace(microsecond=0)
    odata_patch(sys_, "Document_ОказаниеУслуг", old, {"Date": month_ago.isoformat()})
    assert sys_.run().ok
    assert sys_.lead(old_lead)["price"] == 70
    odata_delete(sys_, "Document_ОказаниеУслуг", old)
    due = datetime.now(timezone.utc) - timedelta(hours=2)
    cursors.record_full_scan(sys_.store, due)
    sys_.service("25.00", lead=lead)

    first = sys_.run()

    assert first.ok
    assert first.counts["window_hot"] == 1
    assert first.counts["window_slice"] == 1
    assert sys_.lead(lead)["price"] == 175   # the posting did not wait for the scan
    assert cursors.last_full_scan(sys_.store) == due
    cycles = 1
    while cursors.last_full_scan(sys_.store) == due:
        assert sys_.run().ok
        cycles += 1
        assert cycles < 20, "the full scan never ends"
    assert cycles > 2
    assert sys_.lead(old_lead)["price"] == 0  # its slice saw the deletion
    assert sys_.run().counts.get("window_slice", 0) == 0  # done until the next one falls due


def _old(sys_: Systems, ref: str, days: int = 30) -> None:
    """Date a document back out of the hot window (a person correcting the date in 1C)."""
    when = (datetime.now() - timedelta(days=days)).replace(microsecond=0)
    odata_patch(sys_, "Document_ОказаниеУслуг", ref, {"Date": when.isoformat()})


def _prices(sys_: Systems, *leads: int) -> list[int]:
    return [sys_.lead(x)["price"] for x in leads]


def _zayavka_with_old_and_new_payment(sys_: Systems) -> tuple[int, str, str, str]:
    """Lead A, its «Заявка» and two payments on it: 150 today, 50 dated out of the hot window."""
    a = sys_.new_lead()
    z = sys_.zayavka(a)
    today = sys_.service("150.00", zayavka_ref=z)
    old = sys_.service("50.00", zayavka_ref=z)
    _old(sys_, old)
    assert sys_.run().ok
    assert _prices(sys_, a) == [200]
    return a, z, today, old


def test_given_a_zayavka_with_a_payment_out_of_the_window_when_relinked_and_back_then_both_leads_follow(sys_):
    a, z, today, _old_ref = _zayavka_with_old_and_new_payment(sys_)
    b = sys_.new_lead()

    relink(sys_, z, str(b))
    assert sys_.run().ok
    assert _prices(sys_, a, b) == [0, 200]
    assert (sys_.sum1c(a), sys_.sum1c(b)) == (Decimal("0"), Decimal("200"))

    sys_.service_action(today, "post", amount="175.00")  # a payment posted again meanwhile
    assert sys_.run().ok
    assert _prices(sys_, a, b) == [0, 225]

    relink(sys_, z, str(a))
    assert sys_.run().ok
    assert _prices(sys_, a, b) == [225, 0]
    assert (sys_.sum1c(a), sys_.sum1c(b)) == (Decimal("225"), Decimal("0"))
    # settled: a full pass over the lookback changes nothing
    cursors.record_full_scan(sys_.store, datetime.now(timezone.utc) - timedelta(days=1))
    while cursors.last_full_scan(sys_.store) < datetime.now(timezone.utc) - timedelta(hours=1):
        assert sys_.run().counts.get("pushed", 0) == 0
    assert _prices(sys_, a, b) == [225, 0]


def test_given_a_relinked_zayavka_when_its_old_payment_is_moved_back_to_a_zayavka_of_a_then_both_leads_follow(sys_):
    a, z, _today, old = _zayavka_with_old_and_new_payment(sys_)
    b, c = sys_.new_lead(), sys_.new_lead()
    zc = sys_.zayavka(c)

    relink(sys_, z, str(b))
    odata_patch(sys_, "Document_ОказаниеУслуг", old,
                {"ДокументОснование": zc, "ДокументОснование_Type": "StandardODATA.Document_Заявка"})
    assert sys_.run().ok
    assert _prices(sys_, a, b, c) == [0, 150, 50]

    za = sys_.zayavka(a)
    odata_patch(sys_, "Document_ОказаниеУслуг", old,
                {"ДокументОснование": za, "ДокументОснование_Type": "StandardODATA.Document_Заявка"})
    relink(sys_, zc, str(b))   # a document of the window points the job at zc again
    sys_.service(amount="10.00", zayavka_ref=zc)
    assert sys_.run().ok
    assert _prices(sys_, a, b, c) == [50, 160, 0]


def test_given_a_zayavka_with_a_payment_out_of_the_window_when_the_zayavka_is_deleted_then_its_lead_drops(sys_):
    a, z, today, old = _zayavka_with_old_and_new_payment(sys_)

    odata_delete(sys_, "Document_Заявка", z)
    result = sys_.run()

    assert result.ok, result.errors
    assert (sys_.lead(a)["price"], sys_.sum1c(a)) == (0, Decimal("0"))
    assert {d.ref for d in skipped_documents(sys_.store)} == {today, old}


def test_given_a_relinked_zayavka_when_its_old_payment_is_deleted_outright_then_no_lead_keeps_it(sys_):
    a, z, _today, old = _zayavka_with_old_and_new_payment(sys_)
    b = sys_.new_lead()

    relink(sys_, z, str(b))
    odata_delete(sys_, "Document_ОказаниеУслуг", old)
    result = sys_.run()

    assert result.ok, result.errors
    assert _prices(sys_, a, b) == [0, 150]
    with sys_.store.session() as s:
        assert s.get(OnecDocument, old) is None


def _field_list_threads(sys_: Systems) -> tuple[JobResult, list[str]]:
    """One cycle, with the thread each lead field list request was made from."""
    ctx = JobContext(sys_.settings, sys_.store)
    threads: list[str] = []
    original = ctx.amocrm.lead_field_map

    def recorded(*a, **kw):
        threads.append(threading.current_thread().name)
        return original(*a, **kw)

    ctx.amocrm.lead_field_map = recorded  # type: ignore[method-assign]
    return run_job(ctx, "payments"), threads


def test_given_a_first_read_of_the_whole_lookback_when_payments_runs_then_the_field_list_is_read_beside_1c(sys_):
    lead, _ = paid(sys_, "150.00")

    result, threads = _field_list_threads(sys_)

    assert result.ok, result.errors
    assert result.counts["window_full"] == 1
    assert sys_.lead(lead)["price"] == 150
    assert len(threads) == 1, threads
    assert threads[0].startswith("payments-bases"), threads


def test_given_a_known_hot_window_when_a_posting_changes_then_the_field_list_is_read_only_to_push(sys_):
    lead, ref = paid(sys_, "150.00")
    assert sys_.run().ok
    sys_.service_action(ref, "post", amount="175.00")

    result, threads = _field_list_threads(sys_)

    assert result.ok, result.errors
    assert result.counts.get("window_full", 0) == 0
    assert sys_.lead(lead)["price"] == 175
    assert threads == [threading.current_thread().name], threads


def _zayavka_scan_seen(sys_: Systems, deadline_s: float = 5.0) -> bool:
    """Poll the 1C emulator's log, with a deadline, for the «Заявки» scan's first request."""
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        if any("Document_Заявка?" in unquote(e["target"]) for e in sys_.onec.requests()["log"]):
            return True
        time.sleep(0.01)
    return False


def test_given_a_cold_read_of_many_pages_when_payments_runs_then_the_zayavki_scan_overlaps_and_totals_are_whole(sys_):
    amo, onec = sys_.amo, sys_.onec
    start = datetime.now().replace(hour=10, minute=0, second=0, microsecond=0)
    leads = [amo.create_lead(f"Пациент {i}") for i in range(30)]
    expected: dict[int, Decimal] = {}
    for i, lead in enumerate(leads):   # two payments a lead: by Ref_Key they land on any page
        z = onec.add_zayavka(lead=lead, doctor=DOCTOR, start=start)
        for amount in (Decimal(100 + i) + Decimal("0.25"), Decimal(7 * i) + Decimal("0.25")):
            onec.add_service(zayavka_ref=z["Ref_Key"], amount=amount)
            expected[lead] = expected.get(lead, Decimal(0)) + amount
    gateway = OneC(onec.url, onec.username, onec.password, page_size=4, scan_page_size=10)
    ctx = JobContext(sys_.settings, sys_.store, onec=gateway)
    overlapped: list[bool] = []
    read = gateway.services_in_window

    def documents_once_the_zayavki_scan_is_under_way(*a, **kw):
        # a read of the documents that waits for the «Заявки» scan: it only ever comes while the
        # documents are read if the two reads overlap (sequential, it would come after)
        overlapped.append(_zayavka_scan_seen(sys_))
        return read(*a, **kw)

    gateway.services_in_window = documents_once_the_zayavki_scan_is_under_way  # type: ignore[method-assign]
    sys_.reset_requests()

    result = run_job(ctx, "payments")

    assert result.ok, result.errors[:3]
    assert result.counts["window_full"] == 1
    assert overlapped == [True]
    assert result.counts["pushed"] == 30
    for lead in leads:   # every total whole: both payments, wherever their pages were
        assert sys_.sum1c(lead) == expected[lead], lead
        assert len(sys_.journal("lead.total_pushed", lead)) == 1
    assert sys_.amo_requests()["counts"][PATCH] == 1
    pages = [re.findall(r"\$top=(\d+)", unquote(e["target"]))[0] for e in onec.requests()["log"]
             if "ОказаниеУслуг?" in unquote(e["target"])]
    assert pages == ["4", "10", "10", "10", "10", "10", "10"]   # 4 + 5 x 10 + 6 rows: 7 requests, not 15
