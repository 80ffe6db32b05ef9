"""What `amo1c-sync status` and `/healthz` show, read from the store only (works from any host,
whether or not the daemon runs there)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Sequence

from amo1c_sync.config import Settings
from amo1c_sync.jobs import JOBS, Job
from amo1c_sync.store import cursors, payments, retry as retries, runs
from amo1c_sync.store.instances import instances
from amo1c_sync.store.models import utcnow
from amo1c_sync.store.tokens import stored_tokens

LIST_LIMIT = 200


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds") if value else None


def _iso_ts(unix: Any) -> str | None:
    return _iso(datetime.fromtimestamp(int(unix), timezone.utc))


def _money(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _jobs(jobs: Sequence[Job] | None) -> Sequence[Job]:
    return JOBS if jobs is None else jobs


def _stale_after(settings: Settings, job: Job) -> float:
    """/healthz threshold: [http] stale_after, but never less than two of the job's intervals
    (the directory job runs hourly by default)."""
    return max(settings.http.stale_after, 2 * job.interval(settings) + 30)


def _alive(store, now: datetime) -> tuple[list[dict], dict | None, list[dict]]:
    """(every instance, the live leader, the live standbys)."""
    every = instances(store, now)
    alive = [i for i in every if i["alive"]]
    leader = next((i for i in alive if i.get("role") == "leader"), None)
    standby = [i for i in alive if i.get("role") == "standby"
               and (leader is None or i.get("pid") != leader.get("pid") or i.get("host") != leader.get("host"))]
    return every, leader, standby


def _job_lines(store, settings: Settings, job_list: Sequence[Job], now: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for job in job_list:
        last, success_at = runs.latest(store, job.name)
        out[job.name] = {
            "interval_s": job.interval(settings),
            "last_run": runs.as_dict(last, _iso),
            "last_success_at": _iso(success_at),
            "stale": success_at is None or (now - success_at).total_seconds() > _stale_after(settings, job),
        }
    return out


def _item(kind: str, row, failure) -> dict[str, Any]:
    d = {"kind": kind, "lead_id": row.lead_id, "status": row.status,
         "error": failure.error if failure else getattr(row, "error", None),
         "code": failure.code if failure else None, "retry": failure.state if failure else None,
         "attempts": failure.attempts if failure else 0,
         "next_attempt_at": _iso(failure.next_attempt_at) if failure else None,
         "updated_at": _iso(row.updated_at)}
    if kind == retries.REGISTRATION:
        d["zayavka_number"] = row.zayavka_number
    else:
        d["pushed_total"] = _money(row.pushed_total)
    return d


def _skipped(store) -> list[dict[str, Any]]:
    return [{"ref": d.ref, "number": d.number, "date": d.doc_date.isoformat() if d.doc_date else None,
             "lead_id": d.lead_id, "amount": _money(d.amount), "posted": d.posted,
             "reason": d.reason, "updated_at": _iso(d.updated_at)}
            for d in payments.skipped_documents(store, limit=LIST_LIMIT)]


def _tokens(store, now: datetime) -> list[dict[str, Any]]:
    return [{"account": t.account, "expires_at": _iso(t.expires_at),
             "expired": bool(t.expires_at and t.expires_at <= now), "generation": t.generation,
             "has_refresh_token": bool(t.refresh_token), "revoked_reason": t.revoked_reason,
             "updated_at": _iso(t.updated_at)} for t in stored_tokens(store)]


def _change_detection(store) -> dict[str, Any] | None:
    """The registration's events read (jobs/flagged.py): where it resumes, the leads still open,
    and the flagged leads the periodic lead listing found that the events had missed."""
    state = cursors.registration_events(store)
    if state is None:
        return None
    return {"events_cursor_at": _iso_ts(state["at"]), "open_leads": list(state.get("open") or []),
            "last_reconciliation_at": _iso_ts(state["reconciled_at"]),
            "reconcile_repairs_total": int(state.get("repairs_total") or 0)}


def lifecycle_status(store) -> dict[str, Any]:
    """The «Заявки» the lifecycle follows, those it writes to no lead (and why), writes under way."""
    from amo1c_sync.store import lifecycle

    return {**lifecycle.counts(store), "cancels_under_way": len(lifecycle.cancels_under_way(store)),
            "skipped_zayavki": [{"ref": r.ref, "number": r.number, "lead_id": r.lead_id,
                                 "reason": r.skip_reason, "at": _iso(r.updated_at)}
                                for r in lifecycle.skipped(store, limit=LIST_LIMIT)]}


# --- status -------------------------------------------------------------------------------
def collect_status(store, settings: Settings, jobs: Sequence[Job] | None = None) -> dict[str, Any]:
    """Everything `status` shows, through the store's readers (those the jobs write with)."""
    now = utcnow()
    every, leader, standby = _alive(store, now)
    counts, items = retries.unsettled(store, limit=LIST_LIMIT)
    listed = [_item(kind, row, failure) for kind, row, failure in items]
    return {
        "generated_at": _iso(now),
        "store": store.dialect,
        "config": settings.source,
        "role": "leader running" if leader else ("standby only, no leader" if standby else "not running"),
        "leader": leader,
        "standby": standby,
        "instances": every,
        "jobs": _job_lines(store, settings, _jobs(jobs), now),
        "counts": counts,
        "pending": [i for i in listed if i["status"] == "pending"],
        "failed": [i for i in listed if i["status"] != "pending"],
        "skipped_documents": _skipped(store),
        "skipped_documents_total": payments.count_skipped(store),
        "lifecycle": lifecycle_status(store),
        "tokens": _tokens(store, now),
        "amocrm_auth": "long-lived token" if settings.amocrm.long_lived_token else "oauth",
        "change_detection": _change_detection(store),
    }


def health(store, settings: Settings, *, role: str | None = None,
           jobs: Sequence[Job] | None = None) -> tuple[int, dict[str, Any]]:
    """/healthz: 200 when every job had a successful run recently enough, else 503 (also when the
    store cannot be read)."""
    job_list = _jobs(jobs)
    now = utcnow()
    body: dict[str, Any] = {"at": _iso(now)}
    if role:
        body["role"] = role
    try:
        _, leader, _ = _alive(store, now)
        body["leader"] = ({"host": leader.get("host"), "pid": leader.get("pid"), "at": leader.get("at")}
                          if leader else None)
        per_job: dict[str, dict[str, Any]] = {}
        stale = []
        for job in job_list:
            _, at = runs.latest(store, job.name)
            age = (now - at).total_seconds() if at else None
            limit = _stale_after(settings, job)
            ok = age is not None and age <= limit
            per_job[job.name] = {"last_success_at": _iso(at), "age_s": round(age, 1) if age is not None else None,
                              "stale_after_s": limit, "ok": ok}
            if not ok:
                stale.append(job.name)
    except Exception as exc:  # noqa: BLE001 - the probe must answer, not crash
        body.update(status="error", error=f"store: {type(exc).__name__}")
        return 503, body
    body["jobs"] = per_job
    if stale:
        body.update(status="stale", stale=stale)
        return 503, body
    body["status"] = "ok"
    return 200, body
