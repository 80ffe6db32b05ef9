"""What `amo1c-sync status` and `/healthz` show, read from the store only (works from any host,
whether or not the daemon runs there)."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Sequence

from sqlalchemy import delete, func, select

from amo1c_sync.config import Settings
from amo1c_sync.jobs import JOBS, Job
from amo1c_sync.store import retry as retries
from amo1c_sync.store.models import (Cursor, JobRun, LeadTotal, OAuthToken, OnecDocument, Registration,
                                     RetryItem, utcnow)

HEARTBEAT_PREFIX = "daemon.heartbeat."
HEARTBEAT_EVERY = 5.0      # seconds between heartbeats of a running daemon
HEARTBEAT_STALE = 30.0     # a heartbeat older than this is a dead (or hung) instance
SUCCESS = ("ok", "partial")
LIST_LIMIT = 200


# --- heartbeat (written by the daemon) ------------------------------------------------------
def instance_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}"


def write_heartbeat(store, role: str, *, since: datetime | None = None, extra: dict | None = None) -> None:
    now = utcnow()
    value = {"pid": os.getpid(), "host": socket.gethostname()[:60], "role": role,
             "at": now.isoformat(timespec="seconds")}
    if since is not None:
        value["since"] = since.isoformat(timespec="seconds")
    if extra:
        value.update(extra)
    text = json.dumps(value, separators=(",", ":"))[:200]
    name = HEARTBEAT_PREFIX + instance_id()
    with store.session() as s:
        row = s.get(Cursor, name)
        if row is None:
            s.add(Cursor(name=name, value=text, updated_at=now))
        else:
            row.value = text
            row.updated_at = now


def clear_heartbeat(store, *, older_than: float | None = None) -> None:
    """Remove this instance's heartbeat, or (``older_than``) every heartbeat older than that."""
    with store.session() as s:
        if older_than is None:
            s.execute(delete(Cursor).where(Cursor.name == HEARTBEAT_PREFIX + instance_id()))
        else:
            cutoff = utcnow() - timedelta(seconds=older_than)
            s.execute(delete(Cursor).where(Cursor.name.like(HEARTBEAT_PREFIX + "%"),
                                           Cursor.updated_at < cutoff))


def clear_other_leaders(store) -> None:
    """Called by a process that has just won the leader lock: any other 'leader' heartbeat is
    from a dead process."""
    with store.session() as s:
        s.execute(delete(Cursor).where(Cursor.name.like(HEARTBEAT_PREFIX + "%"),
                                       Cursor.name != HEARTBEAT_PREFIX + instance_id(),
                                       Cursor.value.like('%"role":"leader"%')))


# --- helpers ------------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds") if value else None


def _money(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _jobs(jobs: Sequence[Job] | None) -> Sequence[Job]:
    return JOBS if jobs is None else jobs


def _instances(s, now: datetime) -> list[dict[str, Any]]:
    out = []
    for row in s.scalars(select(Cursor).where(Cursor.name.like(HEARTBEAT_PREFIX + "%"))):
        try:
            value = json.loads(row.value)
        except ValueError:
            continue
        age = (now - row.updated_at).total_seconds()
        value["age_s"] = round(age, 1)
        value["alive"] = age <= HEARTBEAT_STALE
        out.append(value)
    out.sort(key=lambda v: (v.get("role") != "leader", v["age_s"]))
    return out


def _run_dict(run: JobRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    duration = None
    if run.finished_at and run.started_at:
        duration = round((run.finished_at - run.started_at).total_seconds(), 3)
    return {"id": run.id, "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
            "duration_s": duration, "status": run.status, "counts": dict(run.counts or {}),
            "error": run.error}


def _last_run(s, job: str, statuses: tuple[str, ...] | None = None) -> JobRun | None:
    q = select(JobRun).where(JobRun.job == job, JobRun.dry_run.is_(False))
    if statuses:
        q = q.where(JobRun.status.in_(statuses))
    return s.scalars(q.order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(1)).first()


def _stale_after(settings: Settings, job: Job) -> float:
    """/healthz threshold: [http] stale_after, but never less than two of the job's intervals
    (the directory job runs hourly by default)."""
    return max(settings.http.stale_after, 2 * job.interval(settings) + 30)


def _item(kind: str, row, failure: RetryItem | None) -> dict[str, Any]:
    d = {"kind": kind, "lead_id": row.lead_id, "status": row.status,
         "error": failure.error if failure else getattr(row, "error", None),
         "code": failure.code if failure else None, "retry": failure.state if failure else None,
         "attempts": failure.attempts if failure else 0,
         "next_attempt_at": _iso(failure.next_attempt_at) if failure else None,
         "updated_at": _iso(row.updated_at)}
    if kind == "registration":
        d["zayavka_number"] = row.zayavka_number
    else:
        d["pushed_total"] = _money(row.pushed_total)
    return d


# --- status -------------------------------------------------------------------------------
def collect_status(store, settings: Settings, jobs: Sequence[Job] | None = None) -> dict[str, Any]:
    job_list = _jobs(jobs)
    now = utcnow()
    with store.session() as s:
        instances = _instances(s, now)
        alive = [i for i in instances if i["alive"]]
        leader = next((i for i in alive if i.get("role") == "leader"), None)
        standby = [i for i in alive if i.get("role") == "standby"
                   and (leader is None or i.get("pid") != leader.get("pid") or i.get("host") != leader.get("host"))]

        jobs: dict[str, Any] = {}
        for job in job_list:
            name = job.name
            last = _last_run(s, name)
            success = _last_run(s, name, SUCCESS)
            success_at = (success.finished_at or success.started_at) if success else None
            threshold = _stale_after(settings, job)
            jobs[name] = {
                "interval_s": job.interval(settings),
                "last_run": _run_dict(last),
                "last_success_at": _iso(success_at),
                "stale": success_at is None or (now - success_at).total_seconds() > threshold,
            }

        pending: list[dict] = []
        failed: list[dict] = []
        counts: dict[str, dict[str, int]] = {"registration": {}, "payment": {}}
        for kind, model, good in (("registration", Registration, "done"), ("payment", LeadTotal, "ok")):
            for status, n in s.execute(select(model.status, func.count()).group_by(model.status)):
                counts[kind][status] = n
            rows = list(s.scalars(select(model).where(model.status != good)
                                  .order_by(model.updated_at.desc()).limit(LIST_LIMIT)))
            failures = retries.load(s, kind, [r.lead_id for r in rows])
            for row in rows:
                item = _item(kind, row, failures.get(row.lead_id))
                (pending if row.status == "pending" else failed).append(item)

        skipped = [
            {"ref": d.ref, "number": d.number, "date": d.doc_date.isoformat() if d.doc_date else None,
             "lead_id": d.lead_id, "amount": _money(d.amount), "posted": d.posted,
             "reason": d.skip_reason, "updated_at": _iso(d.updated_at)}
            for d in s.scalars(select(OnecDocument).where(OnecDocument.skip_reason.is_not(None))
                               .order_by(OnecDocument.updated_at.desc()).limit(LIST_LIMIT))
        ]
        n_skipped = s.scalar(select(func.count()).select_from(OnecDocument)
                             .where(OnecDocument.skip_reason.is_not(None)))

        tokens = [
            {"account": t.account, "expires_at": _iso(t.expires_at),
             "expired": bool(t.expires_at and t.expires_at <= now), "generation": t.generation,
             "has_refresh_token": bool(t.refresh_token), "revoked_reason": t.revoked_reason,
             "updated_at": _iso(t.updated_at)}
            for t in s.scalars(select(OAuthToken).order_by(OAuthToken.account))
        ]

    return {
        "generated_at": _iso(now),
        "store": store.dialect,
        "config": settings.source,
        "role": "leader running" if leader else ("standby only, no leader" if standby else "not running"),
        "leader": leader,
        "standby": standby,
        "instances": instances,
        "jobs": jobs,
        "counts": counts,
        "pending": pending,
        "failed": failed,
        "skipped_documents": skipped,
        "skipped_documents_total": n_skipped or 0,
        "tokens": tokens,
        "amocrm_auth": "long-lived token" if settings.amocrm.long_lived_token else "oauth",
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
        with store.session() as s:
            instances = [i for i in _instances(s, now) if i["alive"]]
            leader = next((i for i in instances if i.get("role") == "leader"), None)
            body["leader"] = ({"host": leader.get("host"), "pid": leader.get("pid"), "at": leader.get("at")}
                              if leader else None)
            jobs = {}
            stale = []
            for job in job_list:
                name = job.name
                run = _last_run(s, name, SUCCESS)
                at = (run.finished_at or run.started_at) if run else None
                age = (now - at).total_seconds() if at else None
                limit = _stale_after(settings, job)
                ok = age is not None and age <= limit
                jobs[name] = {"last_success_at": _iso(at), "age_s": round(age, 1) if age is not None else None,
                              "stale_after_s": limit, "ok": ok}
                if not ok:
                    stale.append(name)
    except Exception as exc:  # noqa: BLE001 - the probe must answer, not crash
        body.update(status="error", error=f"store: {type(exc).__name__}")
        return 503, body
    body["jobs"] = jobs
    if stale:
        body.update(status="stale", stale=stale)
        return 503, body
    body["status"] = "ok"
    return 200, body
