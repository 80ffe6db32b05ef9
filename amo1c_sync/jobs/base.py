"""What every job shares: its context, its result, the Job object and the run wrapper.

``journal`` (store/journal.py) is re-exported here for the jobs."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any, Callable, TypeVar, Union

from amo1c_sync.config import Settings
from amo1c_sync.errors import ConfigError, FatalError, RetriableError
from amo1c_sync.jobs.dry_run import DryRunAmoCRM, DryRunOneC, DryRunStore
from amo1c_sync.jobs.ports import AmoCRMPort, OneCPort
from amo1c_sync.logs import get_logger
from amo1c_sync.store import Store
from amo1c_sync.store import runs

log = get_logger("amo1c_sync.jobs")
P = TypeVar("P", AmoCRMPort, OneCPort)  # a port, and its dry-run recorder in its place

@dataclass
class JobResult:
    """What one run of a job did: counts, errors, and in a dry run what it would write."""

    job: str
    status: str = "ok"  # ok | partial | failed | interrupted (| skipped, by the daemon)
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    planned: list[dict[str, Any]] = field(default_factory=list)  # what a dry run would write
    run_id: int | None = None

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def item_failed(self, message: str) -> None:
        """One item failed; the run goes on with the others."""
        self.errors.append(message)
        if self.status == "ok":
            self.status = "partial"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class JobContext:
    """Everything a job needs. Gateways are built on first use so that a job touching only one
    system does not need the other to be configured. With ``dry_run`` the jobs see the recording
    adapters of jobs/dry_run.py instead (writes go to ``planned``, store transactions roll back);
    ``run_store`` is the real store, where the run itself is recorded and the tokens are kept."""

    def __init__(self, settings: Settings, store: Store, *, dry_run: bool = False,
                 stop: threading.Event | None = None, since: date | None = None,
                 amocrm: AmoCRMPort | None = None, onec: OneCPort | None = None):
        self.settings = settings
        self.run_store = store
        self.dry_run = dry_run
        self.planned: list[dict[str, Any]] = []
        self.store: Any = DryRunStore(store) if dry_run else store
        self.stop = stop or threading.Event()
        self.since = since
        if amocrm is not None:
            self.__dict__["amocrm"] = self._recorded(amocrm, DryRunAmoCRM)
        if onec is not None:
            self.__dict__["onec"] = self._recorded(onec, DryRunOneC)

    def _recorded(self, gateway: P, recorder: Callable[[P, list[dict[str, Any]]], P]) -> P:
        return recorder(gateway, self.planned) if self.dry_run else gateway

    @cached_property
    def amocrm(self) -> AmoCRMPort:
        from amo1c_sync import amocrm

        return self._recorded(amocrm.from_settings(self.settings, self.run_store), DryRunAmoCRM)

    @cached_property
    def onec(self) -> OneCPort:
        from amo1c_sync import onec

        return self._recorded(onec.from_settings(self.settings), DryRunOneC)

    def stopping(self) -> bool:
        return self.stop.is_set()


@dataclass(frozen=True)
class Job:
    """One job: its name (in `status`, `once`, the journal), what one run does, and how often the
    daemon runs it (read from the settings in force, so that a SIGHUP reload changes it)."""

    name: str
    run: Callable[["JobContext", JobResult], None]
    interval: Callable[[Settings], float]
    needs_amocrm: bool = True   # skipped by the daemon while no usable amoCRM token is stored


AUTH_COMMAND = "amo1c-sync auth --code CODE"


def amocrm_not_authorised(tokens: Any) -> str | None:
    """Why amoCRM calls cannot work now, starting with the command a person must run; None when
    a token is usable (or being refreshed). ``tokens``: the TokenManager; its ``status()`` is one
    primary-key read of the token row, cheap enough for every cycle."""
    state = tokens.status()
    if not state.get("has_token"):
        return f"waiting for `{AUTH_COMMAND}`: no amoCRM token is stored yet"
    if state.get("revoked_reason"):
        return f"waiting for `{AUTH_COMMAND}`: amoCRM refused the stored token ({state['revoked_reason']})"
    return None


def record_skipped(store: Store, job: str, why: str) -> None:
    """A run that did not start because ``why`` (what `status` then shows for ``job``)."""
    run_id = runs.start(store, job, dry_run=False)
    runs.finish(store, run_id, status="skipped", counts={}, errors=[why])


def run_job(ctx: JobContext, job: Union[Job, str]) -> JobResult:
    """Run one job once, record it, and log exactly one summary line. A ConfigError (a name that
    does not exist in amoCRM or 1C) is recorded, then raised: no later run can succeed either.
    A name is looked up among the product's jobs (``amo1c_sync.jobs.JOBS``)."""
    if isinstance(job, str):
        from amo1c_sync.jobs import job_named

        job = job_named(job)
    name, func = job.name, job.run
    result = JobResult(job=name)
    started = time.monotonic()
    result.run_id = runs.start(ctx.run_store, name, dry_run=ctx.dry_run)
    planned_before = len(ctx.planned)
    error: str | None = None
    config_error: ConfigError | None = None
    try:
        func(ctx, result)
        if ctx.stopping() and result.status == "ok":
            result.status = "interrupted"
    except ConfigError as exc:  # a configured name the system does not know: a person must act
        result.status, error, config_error = "failed", str(exc), exc
    except FatalError as exc:
        result.status, error = "failed", str(exc)
    except RetriableError as exc:
        result.status, error = "failed", f"will retry next cycle: {exc}"
    except Exception as exc:  # a job must never take the daemon down
        result.status, error = "failed", f"{type(exc).__name__}: {exc}"
        log.exception("job.crashed", job=name)
    if error:
        result.errors.append(error)
    duration = time.monotonic() - started
    result.planned = ctx.planned[planned_before:]
    runs.finish(ctx.run_store, result.run_id, status=result.status, counts=result.counts, errors=result.errors)
    summary = dict(job=name, status=result.status, duration_s=round(duration, 3),
                   dry_run=ctx.dry_run, **{f"n_{k}": v for k, v in sorted(result.counts.items())})
    if result.errors:
        summary["errors"] = result.errors[:5]
        summary["n_errors"] = len(result.errors)
    (log.info if result.status in ("ok", "interrupted") else log.warning)("job.finished", **summary)
    if config_error is not None:
        raise config_error
    return result
