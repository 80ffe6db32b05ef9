"""Shared by the daemon tests: a minimal sync.ini, `amo1c-sync run` as a real subprocess (with a
stand-in job), and readers of what the daemon recorded."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from sqlalchemy import select

from amo1c_sync.sandbox.daemon import child_env, daemon_command, launch_daemon
from amo1c_sync.store.models import JobRun, JournalEntry

ROOT = Path(__file__).resolve().parents[2]

# `amo1c-sync run` given the fake job instead of the product's (the real jobs are not needed to
# test the scheduler, the leader lock and the signals). Everything else is the real CLI.
FAKE_ENTRY = ("-c",
              "import sys; from tests.support import fake_jobs;"
              "from amo1c_sync.cli import main; raise SystemExit(main(sys.argv[1:], jobs=fake_jobs.jobs()))")


def write_ini(path: Path, store_url: str, *, interval: str = "1s", extra: str = "") -> Path:
    path.write_text(
        "[store]\n"
        f"url = {store_url}\n"
        "[sync]\n"
        f"registration_interval = {interval}\n"
        f"payments_interval = {interval}\n"
        "directory_interval = 1h\n"
        "[logging]\nformat = json\nlevel = INFO\n" + extra,
        encoding="utf-8")
    return path


def _env(extra: dict | None) -> dict:
    """The child's environment, with the checkout importable (for ``tests.support.fake_jobs``)."""
    env = child_env(extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def start_daemon(ini: Path, log_path: Path, *, fake: bool = True, env: dict | None = None,
                 args: tuple[str, ...] = ("run",)) -> subprocess.Popen:
    return launch_daemon(ini, log_path, *args, env=_env(env), log_format=None,
                         entry=FAKE_ENTRY if fake else ("-m", "amo1c_sync"))


def cli(ini: Path, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(daemon_command(ini, *args), capture_output=True, text=True, env=_env(env),
                          timeout=timeout, cwd=str(ini.parent))


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout)


def kill_quietly(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def _tolerant(default):
    """Before the daemon has migrated the store there is nothing yet: ``default``, not an error."""
    import functools

    from sqlalchemy.exc import DBAPIError

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except DBAPIError as exc:
                if "no such table" in str(exc) or "does not exist" in str(exc):
                    return default
                raise
        return wrapper
    return decorate


@_tolerant(None)
def last_run(store, job: str = "registration") -> dict | None:
    """The latest run of ``job`` as `status` shows it, read with the readers `status` uses
    (store/runs.py): id, status, counts, started_at, finished_at, duration_s, error, and
    last_success_at."""
    from amo1c_sync.status import _iso
    from amo1c_sync.store import runs as job_runs

    run, success_at = job_runs.latest(store, job)
    shown = job_runs.as_dict(run, _iso)
    return None if shown is None else {**shown, "last_success_at": _iso(success_at)}


@_tolerant([])
def runs(store, job: str | None = None) -> list[JobRun]:
    """Every run, oldest first: only to count runs (what a run says is read with ``last_run``)."""
    with store.session() as s:
        q = select(JobRun).order_by(JobRun.id)
        if job:
            q = q.where(JobRun.job == job)
        return list(s.scalars(q))


@_tolerant([])
def item_pids(store, after_id: int = 0) -> list[int]:
    with store.session() as s:
        return [e.detail["pid"] for e in s.scalars(select(JournalEntry).where(
            JournalEntry.action == "fake.item", JournalEntry.id > after_id).order_by(JournalEntry.id))]


@_tolerant(0)
def last_journal_id(store) -> int:
    with store.session() as s:
        ids = list(s.scalars(select(JournalEntry.id).order_by(JournalEntry.id.desc()).limit(1)))
    return ids[0] if ids else 0
