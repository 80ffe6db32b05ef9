"""The JobRun lifecycle in one place: started, finished, closed when its process died, pruned,
and read back for `status` and /healthz."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from amo1c_sync.store.models import JobRun, utcnow

if TYPE_CHECKING:
    from amo1c_sync.store.db import Store

SUCCESS = ("ok", "partial")


def start(store: Store, job: str, *, dry_run: bool) -> int:
    """A new run in state ``running``; its id."""
    with store.session() as s:
        run = JobRun(job=job, dry_run=dry_run)
        s.add(run)
        s.flush()
        return run.id


def finish(store: Store, run_id: int, *, status: str, counts: dict[str, int], errors: list[str]) -> None:
    with store.session() as s:
        run = s.get_one(JobRun, run_id)
        run.finished_at = utcnow()
        run.status = status
        run.counts = dict(counts)
        run.error = "; ".join(errors[:20]) or None


def close_running(store: Store, why: str, *, job: str | None = None, status: str = "interrupted") -> None:
    """Runs left ``running`` (not dry runs), of ``job`` or of every job, become ``status`` with
    ``why`` added to their error."""
    with store.session() as s:
        q = select(JobRun).where(JobRun.status == "running", JobRun.dry_run.is_(False))
        if job is not None:
            q = q.where(JobRun.job == job)
        for run in s.scalars(q):
            run.status = status
            run.finished_at = run.finished_at or utcnow()
            run.error = (run.error + "; " if run.error else "") + why[:500]


def prune(store: Store, *, older_than_days: int) -> int:
    """Delete finished runs started more than ``older_than_days`` ago; how many."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    with store.session() as s:
        done = s.execute(delete(JobRun).where(JobRun.started_at < cutoff, JobRun.status != "running"))
        return cast("CursorResult[Any]", done).rowcount or 0  # a DELETE's result is a CursorResult


def last(s: Session, job: str, statuses: tuple[str, ...] | None = None) -> JobRun | None:
    """The latest run of ``job`` (not a dry run), of one of ``statuses`` when given."""
    q = select(JobRun).where(JobRun.job == job, JobRun.dry_run.is_(False))
    if statuses:
        q = q.where(JobRun.status.in_(statuses))
    return s.scalars(q.order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(1)).first()


def succeeded_at(s: Session, job: str) -> datetime | None:
    """When the latest successful run of ``job`` ended (or started, if it has no end)."""
    run = last(s, job, SUCCESS)
    return (run.finished_at or run.started_at) if run else None


def latest(store: Store, job: str) -> tuple[JobRun | None, datetime | None]:
    """The latest run of ``job`` and when its latest successful run ended (for `status`, /healthz)."""
    with store.session() as s:
        return last(s, job), succeeded_at(s, job)


def as_dict(run: JobRun | None, iso: Callable[[datetime | None], str | None]) -> dict[str, Any] | None:
    if run is None:
        return None
    duration = None
    if run.finished_at and run.started_at:
        duration = round((run.finished_at - run.started_at).total_seconds(), 3)
    return {"id": run.id, "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
            "duration_s": duration, "status": run.status, "counts": dict(run.counts or {}),
            "error": run.error}
