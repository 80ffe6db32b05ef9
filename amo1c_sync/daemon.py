"""`amo1c-sync run`: every job on its interval, one leader per store, signals, sd_notify.

Threads:
* the main loop (the caller of ``Daemon.run()``): leader lock (win / keep / lose), heartbeat row,
  WATCHDOG=1, SIGHUP reloads; signal handlers only set flags and wake it;
* APScheduler's ``BackgroundScheduler`` (memory job store, rebuilt at each start) and its thread
  pool: one job per flow, ``max_instances=1``, ``coalesce=True``. The scheduler is paused while
  this process is a standby and resumed (every job due at once) when it wins the lock.

Each leadership term gets its own stop event and ``JobContext``: losing the lock or SIGTERM sets
it, and jobs stop between items (``ctx.stopping()``, which also confirms the lock, with a time
limit). ``run_job`` records every run (JobRun) and this module adds the Prometheus metrics and the
systemd STATUS line.

Every store operation has a time limit (``[store] timeout``), so a store that stops answering
makes operations fail instead of hanging; the heartbeat notices it (a log line every
``STORE_NOTE_EVERY`` seconds while it lasts) and, once the store answers again, the jobs that
failed meanwhile run at once instead of after their backoff. A stop waits for a token refresh in
flight: its answer holds the only copy of the new refresh token.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Sequence

from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from amo1c_sync import config, logs, metrics
from amo1c_sync.config import Settings
from amo1c_sync.domain.retry import backoff_seconds
from amo1c_sync.errors import ConfigError, FatalError
from amo1c_sync.amocrm.auth import REAUTH_ACTION, wait_for_refreshes
from amo1c_sync.jobs import JOBS, Job, JobContext, run_job
from amo1c_sync.jobs.base import amocrm_not_authorised, record_skipped
from amo1c_sync.leader import LeaderLock, leader_lock_for
from amo1c_sync.logs import get_logger
from amo1c_sync.sdnotify import Notifier, watchdog_interval
from amo1c_sync.store.instances import HEARTBEAT_EVERY, clear_heartbeat, clear_other_leaders, write_heartbeat
from amo1c_sync.store import Store
from amo1c_sync.store import runs
from amo1c_sync.store.models import utcnow

if TYPE_CHECKING:
    from amo1c_sync.web.server import WebServer

log = get_logger("amo1c_sync.daemon")

JOB_RUN_RETENTION_DAYS = 30
STORE_NOTE_EVERY = 30.0   # seconds between log lines while the store does not answer


class DaemonContext(JobContext):
    """A JobContext whose gateways are instrumented for /metrics when first built, and which stops
    its job between items once the leader lock cannot be confirmed."""

    _build_lock = threading.Lock()
    lock: LeaderLock | None = None

    def stopping(self) -> bool:
        if self.stop.is_set():
            return True
        if self.lock is not None and not self.lock.still_held():
            self.stop.set()
            return True
        return False

    def fence(self) -> None:
        """Raise LeadershipLost unless this process still holds the leader lock (before a write)."""
        if self.lock is not None:
            self.lock.fence()

    @cached_property
    def amocrm(self):
        with self._build_lock:
            gw = JobContext.amocrm.func(self)
        if not metrics.instrument_gateway(gw, "amocrm"):
            log.debug("metrics.no_session", system="amocrm")
        return gw

    @cached_property
    def onec(self):
        with self._build_lock:
            gw = JobContext.onec.func(self)
        if not metrics.instrument_gateway(gw, "1c"):
            log.debug("metrics.no_session", system="1c")
        return gw


class Daemon:
    """The scheduler, the leader lock and the main loop.

    ``run()`` blocks until ``request_stop()`` (or SIGTERM/SIGINT when ``install_signals``) and
    returns the exit code. ``nudge(job)`` runs a job now (the web endpoint calls it).
    ``role`` is one of starting, standby, leader, stopping, stopped. ``jobs``: the jobs it
    schedules (the product's ``JOBS`` unless given).
    """

    def __init__(self, settings: Settings, store: Store, *, config_path: str | None = None,
                 lock: LeaderLock | None = None, notifier: Notifier | None = None,
                 jobs: Sequence[Job] = JOBS, standby_retry: float = 2.0,
                 heartbeat_every: float = HEARTBEAT_EVERY, tick: float = 1.0,
                 stop_timeout: float = 75.0,
                 context_factory: Callable[..., JobContext] | None = None):
        self.settings = settings
        self.store = store
        self.config_path = config_path
        self.lock = lock or leader_lock_for(store, lease=settings.store.lock_lease)
        self.notifier = notifier or Notifier()
        self._jobs = {job.name: job for job in jobs}
        self.jobs = list(self._jobs)
        self.standby_retry = standby_retry
        self.heartbeat_every = heartbeat_every
        self.tick = tick
        self.stop_timeout = stop_timeout
        self.context_factory = context_factory or DaemonContext
        self.role = "starting"
        self.leader_since: datetime | None = None
        self.last_results: dict[str, dict[str, Any]] = {}
        self.unfinished: list[str] = []   # jobs still running when run() gave up waiting
        self.exit_code = 0   # 2 when a configured name turned out not to exist
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload_requested = False
        self._lost = threading.Event()
        self._term_stop = threading.Event()
        self._ctx: JobContext | None = None
        self._running: dict[str, float] = {}
        self._again: set[str] = set()
        self._cond = threading.Condition()
        self._unavailable: set[str] = set()
        self._failures: dict[str, int] = {}
        self._next_prune = 0.0
        self._scheduler: BackgroundScheduler | None = None
        self.web: WebServer | None = None
        self._ready_sent = False
        self._store_down_since: float | None = None
        self._store_next_note = 0.0
        self.started = threading.Event()   # set once the main loop made its first lock attempt
        self._tokens: Any = None            # TokenManager for the per-cycle token check
        self._no_token: str | None = None   # why the amoCRM jobs are skipped, while they are
        self._skip_recorded: set[str] = set()

    # --- public -------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.role == "leader"

    def request_stop(self) -> None:
        self._stop.set()
        self._term_stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def nudge(self, job_name: str) -> bool:
        """Run ``job_name`` as soon as possible (right after the current run if one is in hand).
        False when this process is not the leader (the leader will run it on its interval)."""
        if job_name not in self.jobs:
            raise KeyError(f"unknown job {job_name!r}; jobs are: {', '.join(self.jobs)}")
        if not self.is_leader or self._stop.is_set() or self._scheduler is None:
            return False
        with self._cond:
            if job_name in self._running:
                self._again.add(job_name)
                return True
        try:
            self._scheduler.modify_job(job_name, next_run_time=datetime.now(timezone.utc))
        except Exception:  # noqa: BLE001 - scheduler shutting down
            return False
        return True

    def snapshot(self) -> dict[str, Any]:
        """This process's view, for the web endpoint and tests."""
        with self._cond:
            running = sorted(self._running)
        return {"role": self.role, "leader_since": self.leader_since.isoformat() if self.leader_since else None,
                "lock": self.lock.description, "running": running, "last": dict(self.last_results)}

    def run(self, *, install_signals: bool = True) -> int:
        if install_signals and threading.current_thread() is threading.main_thread():
            self._install_signals()
        self._start_scheduler()
        self._start_web()
        log.info("daemon.starting", jobs=self.jobs, lock=self.lock.description,
                 intervals={j: self._interval(j) for j in self.jobs}, store=self.store.dialect)
        try:
            self._loop()
        finally:
            self._shutdown()
        return self.exit_code

    # --- optional HTTP endpoint ----------------------------------------------------------------
    def _start_web(self) -> None:
        if not self.settings.http.enabled:
            return
        from amo1c_sync import onec
        from amo1c_sync.services.slots import SlotFinder
        from amo1c_sync.web import serve_settings

        gateway = onec.from_settings(self.settings)
        metrics.instrument_gateway(gateway, "1c")
        finder = SlotFinder.from_settings(self.settings, gateway)
        try:
            self.web = serve_settings(self.settings, slot_finder=finder, store=self.store, nudge=self.nudge)
        except OSError as exc:
            if self._scheduler is not None:
                self._scheduler.shutdown(wait=False)
            raise FatalError(f"[http] cannot listen on {self.settings.http.host}:{self.settings.http.port}: "
                             f"{exc.strerror or exc}", system="http") from None

    # --- scheduler ------------------------------------------------------------------------------
    def _interval(self, job: str) -> float:
        return float(self._jobs[job].interval(self.settings))

    def _start_scheduler(self) -> None:
        sched = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(max_workers=max(len(self.jobs), 1) + 1)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=timezone.utc,
        )
        sched.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)
        sched.start(paused=True)
        for name in self.jobs:
            interval = self._interval(name)
            sched.add_job(self._run_scheduled, IntervalTrigger(seconds=interval), args=[name], id=name,
                          name=name, replace_existing=True,
                          misfire_grace_time=int(max(60, interval * 2)))
        self._scheduler = sched

    def _on_max_instances(self, event) -> None:
        # a nudge or a due run while the job is still in hand: run once more right after it
        with self._cond:
            if event.job_id in self._running:
                self._again.add(event.job_id)

    def _new_context(self) -> JobContext:
        ctx = self.context_factory(self.settings, self.store, stop=self._term_stop)
        if isinstance(ctx, DaemonContext):
            ctx.lock = self.lock
        return ctx

    def _run_scheduled(self, name: str) -> None:
        if self._stop.is_set() or self._term_stop.is_set() or not self.is_leader:
            return
        if not self.lock.still_held():
            self._lost.set()
            self._wake.set()
            return
        ctx = self._ctx
        if ctx is None or self._amocrm_blocked(name):
            return
        with self._cond:
            self._running[name] = time.monotonic()
        try:
            self._run_loop(ctx, name)
        finally:
            with self._cond:
                self._running.pop(name, None)
                self._cond.notify_all()

    def _amocrm_blocked(self, name: str) -> bool:
        """True while no usable amoCRM token is stored and ``name`` needs amoCRM: the cycle is
        skipped instead of failing, once per job recorded as a run (what `status` shows)."""
        if not self._jobs[name].needs_amocrm:
            return False
        why = self._check_token(running=name)
        if why is None:
            return False
        with self._cond:
            first_for_job = name not in self._skip_recorded
            self._skip_recorded.add(name)
        if first_for_job:
            try:
                record_skipped(self.store, name, why)
            except Exception:  # noqa: BLE001 - recorded at the next cycle
                with self._cond:
                    self._skip_recorded.discard(name)
            self.last_results[name] = {"status": "skipped", "error": why,
                                       "at": utcnow().isoformat(timespec="seconds")}
            self.notifier.status(self._status_line())
        return True

    def _check_token(self, running: str | None = None) -> str | None:
        """Why amoCRM cannot be used now (None: it can). Checked every cycle, so the jobs resume
        by themselves once `auth --code` stores a token; each change is said once in the log."""
        try:
            if self._tokens is None:
                from amo1c_sync.amocrm import token_manager_from_settings

                self._tokens = token_manager_from_settings(self.settings, self.store)
            why = amocrm_not_authorised(self._tokens)
        except Exception:  # noqa: BLE001 - store trouble: the run itself meets it and records it
            return None
        with self._cond:
            was, self._no_token = self._no_token, why
            waiting = sorted(self._skip_recorded - {running}) if why is None else []
            if why is None:
                self._skip_recorded.clear()
        if why is None and was is not None:
            log.info("daemon.amocrm_authorised", resumed=waiting,
                     note="an amoCRM token is stored; the amoCRM jobs run again")
            self._run_now(waiting)
        elif why is not None and was is None:
            log.warning("daemon.amocrm_not_authorised", reason=why, action=REAUTH_ACTION,
                        skipped=[j for j in self.jobs if self._jobs[j].needs_amocrm],
                        note="the amoCRM jobs are skipped until then and resume by themselves")
        return why

    def _run_loop(self, ctx: JobContext, name: str) -> None:
        while True:
            self._run_once(ctx, name)
            with self._cond:
                again = name in self._again
                self._again.discard(name)
            if not again or ctx.stopping() or not self.lock.still_held():
                break

    def _run_once(self, ctx: JobContext, name: str) -> None:
        started = time.monotonic()
        try:
            result = run_job(ctx, self._jobs[name])
        except ConfigError as exc:
            # an unknown name stops the daemon with the names that do exist (exit 2;
            # the unit does not restart on it), instead of failing every cycle
            log.error("daemon.config_invalid", job=name, error=str(exc))
            self.exit_code = 2
            self.request_stop()
            return
        except Exception as exc:  # noqa: BLE001 - job module missing, or the run record failed
            metrics.JOB_RUNS.labels(job=name, status="failed").inc()
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if name not in self._unavailable:
                self._unavailable.add(name)
                log.error("job.run_failed", job=name, error=why)
            self._close_job_runs(name, f"the run could not be recorded: {why}")
            self.last_results[name] = {"status": "failed", "error": why,
                                       "at": utcnow().isoformat(timespec="seconds")}
            self._after_run(name, "failed")
            return
        self._unavailable.discard(name)
        duration = time.monotonic() - started
        metrics.observe_job(result, duration)
        self.last_results[name] = {"status": result.status, "duration_s": round(duration, 3),
                                   "counts": dict(result.counts), "n_errors": len(result.errors),
                                   "at": utcnow().isoformat(timespec="seconds")}
        self._after_run(name, result.status)
        self.notifier.status(self._status_line())

    def _after_run(self, name: str, status: str) -> None:
        """A whole run failing (system down, revoked token, 403 block) is retried with exponential
        backoff instead of every interval: interval x 2^(n-1), at most [retry] item_backoff_max
        (never less than the interval). Any other outcome resets it."""
        if status != "failed":
            self._failures.pop(name, None)
            return
        n = self._failures.get(name, 0) + 1
        self._failures[name] = n
        if n < 2 or self._scheduler is None:
            return
        interval = self._interval(name)
        delay = backoff_seconds(n, interval, max(interval, self.settings.retry.policy().item.backoff_max))
        if delay > interval:
            try:
                self._scheduler.modify_job(name, next_run_time=datetime.now(timezone.utc) + timedelta(seconds=delay))
            except Exception:  # noqa: BLE001 - scheduler shutting down
                return
            log.info("job.backoff", job=name, failures_in_a_row=n, next_run_in_s=round(delay, 1))

    def _status_line(self) -> str:
        parts = [self.role]
        for name in self.jobs:
            r = self.last_results.get(name)
            if not r:
                continue
            counts = " ".join(f"{k}={v}" for k, v in sorted(r.get("counts", {}).items()) if v)
            text = f"{name} {r['status']}"
            if "duration_s" in r:
                text += f" {r['duration_s']:.1f}s"
            if counts:
                text += f" {counts}"
            parts.append(text)
        if self._no_token:
            parts.append(self._no_token)
        return "; ".join(parts)

    # --- leadership ---------------------------------------------------------------------------
    def _promote(self) -> None:
        self.role = "leader"
        self.leader_since = utcnow()
        metrics.set_leader(True)
        self._lost.clear()
        self._term_stop = threading.Event()
        if self._stop.is_set():
            self._term_stop.set()
        self._ctx = self._new_context()
        self._close_orphan_runs("the process running it stopped before it finished (killed or crashed)")
        try:
            clear_heartbeat(self.store, older_than=86400)
            clear_other_leaders(self.store)
        except Exception:  # noqa: BLE001
            pass
        self._heartbeat()
        log.info("leader.acquired", lock=self.lock.description)
        assert self._scheduler is not None
        self._scheduler.resume()
        now = datetime.now(timezone.utc)
        for name in self.jobs:
            self._scheduler.modify_job(name, next_run_time=now)
        self.notifier.status(self._status_line())

    def _demote(self, reason: str) -> None:
        log.warning("leader.lost", lock=self.lock.description, reason=reason,
                    note="jobs stop after the item in hand; retrying the lock")
        self.role = "standby"
        self.leader_since = None
        metrics.set_leader(False)
        self._term_stop.set()
        if self._scheduler is not None:
            self._scheduler.pause()
        self.lock.release()
        self._heartbeat()
        self.notifier.status("standby: leader lock lost, retrying")

    def _close_job_runs(self, name: str, why: str) -> None:
        """run_job raised after creating its JobRun (e.g. the store failed while recording the
        end): only this thread runs ``name``, so its 'running' rows are this run's."""
        for attempt in range(3):
            try:
                runs.close_running(self.store, why, job=name, status="failed")
                return
            except Exception:  # noqa: BLE001
                time.sleep(0.2 * (attempt + 1))

    def _close_orphan_runs(self, why: str) -> None:
        """JobRun rows left 'running' by a leader that died. Only the leader runs jobs, so when we
        have just won the lock (nothing of ours is running yet) every such row is an orphan."""
        try:
            runs.close_running(self.store, why)
        except Exception as exc:  # noqa: BLE001
            log.warning("daemon.orphan_runs_not_closed", error=f"{type(exc).__name__}: {exc}")

    def _prune(self) -> None:
        """Keep job_runs bounded (one row per run: ~6,000 a day at the default intervals).
        The journal is kept: `trace` reads it."""
        try:
            n = runs.prune(self.store, older_than_days=JOB_RUN_RETENTION_DAYS)
            if n:
                log.info("daemon.pruned", job_runs=n, older_than_days=JOB_RUN_RETENTION_DAYS)
        except Exception as exc:  # noqa: BLE001
            log.warning("daemon.prune_failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

    def _heartbeat(self) -> None:
        try:
            write_heartbeat(self.store, self.role if self.role in ("leader", "standby") else "standby",
                            since=self.leader_since)
        except Exception as exc:  # noqa: BLE001 - the store may be briefly unreachable
            self._store_failed(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return
        self._store_answered()

    def _store_failed(self, why: str) -> None:
        now = time.monotonic()
        if self._store_down_since is None:
            self._store_down_since, self._store_next_note = now, now
        if now >= self._store_next_note:
            self._store_next_note = now + STORE_NOTE_EVERY
            log.error("store.unavailable", store=self.store.dialect, error=why,
                      down_for_s=round(now - self._store_down_since, 1),
                      note="store operations fail within [store] timeout and are retried; "
                           "the jobs resume by themselves when the store answers again")

    def _store_answered(self) -> None:
        if self._store_down_since is None:
            return
        down = time.monotonic() - self._store_down_since
        self._store_down_since = None
        failed = sorted(self._failures)
        self._failures.clear()
        log.info("store.available_again", store=self.store.dialect, down_for_s=round(down, 1),
                 resumed=failed)
        self._run_now(failed)   # not after the backoff their failures earned meanwhile

    def _run_now(self, names: Sequence[str]) -> None:
        if not self.is_leader or self._scheduler is None:
            return
        for name in names:
            try:
                self._scheduler.modify_job(name, next_run_time=datetime.now(timezone.utc))
            except Exception:  # noqa: BLE001 - scheduler shutting down
                return

    # --- main loop ------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        def on_stop(signum, _frame):
            log.info("daemon.signal", signal=signal.Signals(signum).name, action="stop after the item in hand")
            self.request_stop()

        def on_hup(_signum, _frame):
            self.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def _loop(self) -> None:
        wd = watchdog_interval()
        next_try = 0.0
        next_beat = 0.0
        next_wd = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            if self.is_leader:
                if self._lost.is_set() or not self.lock.still_held():
                    self._demote("the lock is no longer held (connection to the store lost?)")
                    next_try = now + self.standby_retry
            elif now >= next_try:
                if self.lock.try_acquire():
                    self._promote()
                    next_beat = now + self.heartbeat_every
                else:
                    if self.role != "standby":
                        self.role = "standby"
                        metrics.set_leader(False)
                        log.info("daemon.standby", lock=self.lock.description,
                                 note=f"another instance is the leader; retrying every {self.standby_retry:g} s")
                        self._heartbeat()
                        next_beat = now + self.heartbeat_every
                        self.notifier.status(f"standby: waiting for {self.lock.description}")
                next_try = now + self.standby_retry
            if self.is_leader and now >= self._next_prune:
                self._next_prune = now + 3600
                self._prune()
            if now >= next_beat:
                self._heartbeat()
                next_beat = now + self.heartbeat_every
                if self.is_leader and self._no_token:
                    self._check_token()   # the skipped jobs may all be hourly: resume them at once
            if not self._ready_sent:
                self._ready_sent = True
                self.notifier.ready(status=self._status_line() if self.is_leader
                                    else f"standby: waiting for {self.lock.description}")
                self.started.set()
                log.info("daemon.ready", role=self.role)
            if wd and now >= next_wd:
                self.notifier.watchdog()
                next_wd = now + wd
            wait = self.tick
            if not self.is_leader:
                wait = max(0.05, min(wait, next_try - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()

    def reload(self) -> bool:
        """Re-read sync.ini; a bad file is refused (logged) and the settings in force are kept."""
        try:
            new = config.load(self.config_path)
        except ConfigError as exc:
            log.error("config.reload_refused", error=str(exc), kept=self.settings.source)
            return False
        except Exception as exc:  # noqa: BLE001
            log.error("config.reload_refused", error=f"{type(exc).__name__}: {exc}", kept=self.settings.source)
            return False
        for secret in new.secrets():
            logs.register_secret(secret)
        if new.store.resolved_url() != self.settings.store.resolved_url():
            log.warning("config.reload_partial", note="[store] url changed: takes effect after a restart")
        self.settings = new
        self._tokens = None
        if self.is_leader:
            self._ctx = self._new_context()
        if self._scheduler is not None:
            for name in self.jobs:
                interval = self._interval(name)
                self._scheduler.reschedule_job(name, trigger=IntervalTrigger(seconds=interval))
        log.info("config.reloaded", source=new.source, intervals={j: self._interval(j) for j in self.jobs})
        return True

    def _shutdown(self) -> None:
        self.role = "stopping"
        self.notifier.stopping(status="stopping: finishing the item in hand")
        log.info("daemon.stopping")
        self._stop.set()
        self._term_stop.set()
        if self._scheduler is not None:
            try:
                self._scheduler.shutdown(wait=False)
            except Exception:  # noqa: BLE001
                pass
        deadline = time.monotonic() + self.stop_timeout
        with self._cond:
            while self._running and time.monotonic() < deadline:
                self._cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            self.unfinished = sorted(self._running)
        if not wait_for_refreshes(self.settings.amocrm.token_timeout
                                  + self.settings.amocrm.connect_timeout + 5):
            log.error("daemon.refresh_unfinished", note="an amoCRM token refresh is still waiting "
                      "for its answer; exiting anyway")
        if self.unfinished:
            log.error("daemon.jobs_unfinished", jobs=self.unfinished,
                      note=f"still running after {self.stop_timeout:g} s; exiting anyway")
            self._close_orphan_runs("stopped: the daemon exited before the job finished")
        metrics.set_leader(False)
        if self.web is not None:
            try:
                self.web.close()
            except Exception:  # noqa: BLE001
                pass
        if not self.unfinished:
            self.lock.release()
        try:
            clear_heartbeat(self.store)
        except Exception:  # noqa: BLE001
            pass
        self.role = "stopped"
        log.info("daemon.stopped")
