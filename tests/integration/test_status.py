"""collect_status / health: what `status` and /healthz report, from the store."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from amo1c_sync.config import Settings
from amo1c_sync.status import collect_status, health
from amo1c_sync.store.instances import write_heartbeat
from amo1c_sync.store.models import JobRun, LeadTotal, OAuthToken, OnecDocument, Registration, RetryItem



def _now() -> datetime:
    """Read when used: the module is imported at collection, maybe many minutes before its tests run."""
    return datetime.now(timezone.utc)


def _fill(store, *, age: float = 5):
    at = _now() - timedelta(seconds=age)
    with store.session() as s:
        for job in ("directory", "registration", "payments", "lifecycle"):
            s.add(JobRun(job=job, started_at=at - timedelta(seconds=2), finished_at=at, status="ok",
                         counts={"pushed": 2}))
        s.add(JobRun(job="payments", started_at=at + timedelta(seconds=1), finished_at=None, status="running"))
        s.add(Registration(lead_id=1, status="done", zayavka_number="219"))
        s.add(Registration(lead_id=2, status="failed"))
        s.add(RetryItem(kind="registration", lead_id=2, state="retrying", error="1C: no doctor «Петров»",
                        attempts=3, next_attempt_at=_now() + timedelta(minutes=5)))
        s.add(Registration(lead_id=3, status="pending"))
        s.add(LeadTotal(lead_id=1, status="ok", pushed_total=Decimal("150.00")))
        s.add(LeadTotal(lead_id=4, status="failed"))
        s.add(RetryItem(kind="payment", lead_id=4, state="item_error", error="amoCRM: lead 4 deleted",
                        code="amocrm:NotFound", attempts=1))
        s.add(OnecDocument(ref="00000000-0000-0000-0000-000000000001", data_version="A", number="0000007",
                           amount=Decimal("300"), posted=True, skip_reason="no base «Заявка»"))
        s.add(OAuthToken(account="clinic", access_token="SECRET-ACCESS", refresh_token="SECRET-REFRESH",
                         expires_at=_now() + timedelta(hours=1), generation=4))


def test_given_runs_items_and_tokens_then_status_has_every_field_and_no_secret(store):
    _fill(store)
    write_heartbeat(store, "leader", since=_now())
    st = collect_status(store, Settings())
    assert st["leader"]["pid"]
    assert st["leader"]["role"] == "leader"
    assert st["standby"] == []
    assert set(st["jobs"]) == {"directory", "registration", "payments", "lifecycle"}
    pay = st["jobs"]["payments"]
    assert pay["last_run"]["status"] == "running"
    assert pay["last_success_at"]
    assert pay["stale"] is False
    reg = st["jobs"]["registration"]["last_run"]
    assert reg["duration_s"] == 2.0
    assert reg["counts"] == {"pushed": 2}
    assert reg["error"] is None
    assert [(i["kind"], i["lead_id"]) for i in st["pending"]] == [("registration", 3)]
    failed = {(i["kind"], i["lead_id"]): i for i in st["failed"]}
    assert set(failed) == {("registration", 2), ("payment", 4)}
    assert failed[("registration", 2)]["error"] == "1C: no doctor «Петров»"
    assert failed[("registration", 2)]["attempts"] == 3
    assert failed[("registration", 2)]["retry"] == "retrying"
    assert (failed[("payment", 4)]["retry"], failed[("payment", 4)]["code"]) == ("item_error", "amocrm:NotFound")
    assert st["skipped_documents"][0]["reason"] == "no base «Заявка»"
    assert st["skipped_documents_total"] == 1
    (tok,) = st["tokens"]
    assert tok["generation"] == 4
    assert tok["expired"] is False
    assert tok["revoked_reason"] is None
    text = json.dumps(st, ensure_ascii=False)
    assert "SECRET" not in text
    assert st["counts"]["registration"] == {"done": 1, "failed": 1, "pending": 1}


def test_given_recent_successful_runs_then_healthz_is_200(store):
    _fill(store, age=5)
    code, body = health(store, Settings())
    assert code == 200
    assert body["status"] == "ok"
    assert set(body["jobs"]) == {"directory", "registration", "payments", "lifecycle"}


def test_given_a_job_without_a_recent_success_then_healthz_is_503_naming_it(store):
    _fill(store, age=5)
    with store.session() as s:
        for run in s.query(JobRun).filter(JobRun.job == "registration"):
            run.started_at = run.finished_at = _now() - timedelta(hours=2)
    code, body = health(store, Settings())
    assert code == 503
    assert body["stale"] == ["registration"]


def test_given_an_empty_store_then_status_shows_nothing_run_and_healthz_is_503(store):
    st = collect_status(store, Settings())
    assert st["leader"] is None
    assert st["role"] == "not running"
    assert all(j["last_run"] is None and j["stale"] for j in st["jobs"].values())
    assert health(store, Settings())[0] == 503
