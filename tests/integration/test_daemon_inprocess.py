"""The daemon in this process with a fake job: scheduling, nudge, stop between items, reload,
metrics, sd_notify messages."""

from __future__ import annotations

import socket
import threading
import pytest

from amo1c_sync import config, metrics
from amo1c_sync.daemon import Daemon
from amo1c_sync.sdnotify import Notifier
from tests.support import wait_until

from tests.support import fake_jobs as _fake_jobs
from tests.support.daemon import item_pids, last_run, runs, write_ini


@pytest.fixture
def fake_jobs():
    """The daemon is given the fake job instead of the product's (see fake_jobs.jobs)."""
    return _fake_jobs


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.05)
    messages: list[str] = []

    def drain():
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return messages

    yield path, drain
    sock.close()


def _latest_if(store, status: str, *, after_id: int = 0) -> dict | None:
    """The latest run as `status` shows it, once it is in ``status`` and newer than ``after_id``."""
    run = last_run(store)
    return run if run and run["status"] == status and run["id"] > after_id else None


def _start(daemon: Daemon) -> threading.Thread:
    t = threading.Thread(target=daemon.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    return t


def test_given_a_store_when_the_daemon_runs_then_jobs_run_on_their_interval_and_stop_cleanly(
        store, tmp_path, fake_jobs, notify_socket, monkeypatch):
    path, drain = notify_socket
    monkeypatch.setenv("FAKE_JOB_ITEMS", "2")
    ini = write_ini(tmp_path / "sync.ini", store.url, interval="1s")
    settings = config.load_settings(ini)
    daemon = Daemon(settings, store, config_path=str(ini), notifier=Notifier(path), tick=0.1,
                    jobs=fake_jobs.jobs())
    t = _start(daemon)
    try:
        wait_until(lambda: _latest_if(store, "ok", after_id=1), timeout=15, message="two ok runs of the fake job")
        assert daemon.role == "leader"
        assert last_run(store)["counts"] == {"items": 2}
        msgs = "\n".join(drain())
        assert "READY=1" in msgs
        assert "STATUS=leader; registration ok" in msgs
        before = metrics.REGISTRY.get_sample_value("amo1c_job_runs_total", {"job": "registration", "status": "ok"})
        assert before
        assert before >= 2
    finally:
        daemon.request_stop()
        t.join(20)
    assert not t.is_alive()
    assert daemon.role == "stopped"
    assert last_run(store)["status"] in ("ok", "interrupted")
    assert last_run(store)["finished_at"]
    assert "STOPPING=1" in "\n".join(drain())


def test_given_a_long_interval_when_nudged_then_the_job_runs_now(store, tmp_path, fake_jobs):
    ini = write_ini(tmp_path / "sync.ini", store.url, interval="1h")
    daemon = Daemon(config.load_settings(ini), store, tick=0.1, jobs=fake_jobs.jobs())
    t = _start(daemon)
    try:
        wait_until(lambda: _latest_if(store, "ok"), timeout=10, message="the first run at start")
        first = last_run(store)["id"]
        assert daemon.nudge("registration") is True
        wait_until(lambda: _latest_if(store, "ok", after_id=first), timeout=10, message="the nudged run")
        assert len(runs(store)) == 2
        with pytest.raises(KeyError):
            daemon.nudge("nonsense")
    finally:
        daemon.request_stop()
        t.join(20)


def test_given_a_job_mid_run_when_stopped_then_it_stops_between_items_and_is_recorded_interrupted(
        store, tmp_path, fake_jobs, monkeypatch):
    monkeypatch.setenv("FAKE_JOB_ITEMS", "1000")
    monkeypatch.setenv("FAKE_JOB_ITEM_SECONDS", "0.02")
    ini = write_ini(tmp_path / "sync.ini", store.url, interval="1s")
    daemon = Daemon(config.load_settings(ini), store, tick=0.1, jobs=fake_jobs.jobs())
    t = _start(daemon)
    wait_until(lambda: len(item_pids(store)) >= 3, timeout=10, message="a few items done")
    daemon.request_stop()
    t.join(20)
    assert not t.is_alive()
    assert len(runs(store)) == 1
    run = last_run(store)
    assert run["status"] == "interrupted"
    assert run["finished_at"] is not None
    assert 3 <= run["counts"]["items"] < 1000
    assert run["counts"]["items"] == len(item_pids(store))  # every item done was committed and counted


def test_given_a_bad_new_sync_ini_when_reloaded_then_it_is_refused_and_the_old_one_kept(
        store, tmp_path, fake_jobs):
    ini = write_ini(tmp_path / "sync.ini", store.url, interval="1h")
    daemon = Daemon(config.load_settings(ini), store, config_path=str(ini), tick=0.1, jobs=fake_jobs.jobs())
    t = _start(daemon)
    try:
        wait_until(lambda: daemon.is_leader, timeout=10, message="leadership")
        ini.write_text(ini.read_text().replace("registration_interval = 1h", "registration_interval = soon"),
                       encoding="utf-8")
        assert daemon.reload() is False
        assert daemon.settings.sync.registration_interval == 3600
        write_ini(ini, store.url, interval="2s")
        assert daemon.reload() is True
        assert daemon.settings.sync.registration_interval == 2
        job = daemon._scheduler.get_job("registration")
        assert job.trigger.interval.total_seconds() == 2
    finally:
        daemon.request_stop()
        t.join(20)


def _break_lock(store, daemon):
    if store.dialect == "postgresql":
        import psycopg

        from amo1c_sync.leader import libpq_url

        with psycopg.connect(libpq_url(store.url), autocommit=True) as conn:
            n = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE application_name LIKE 'amo1c-sync leader%%' AND datname = current_database()"
                             ).fetchone()[0]
        assert n == 1
    else:
        daemon.lock.path.unlink()


def test_given_the_leader_lock_lost_then_jobs_stop_until_it_is_won_back(store, tmp_path, fake_jobs):
    ini = write_ini(tmp_path / "sync.ini", store.url, interval="1s")
    daemon = Daemon(config.load_settings(ini), store, tick=0.1, jobs=fake_jobs.jobs(), standby_retry=0.3)
    demotions: list[str] = []
    original = daemon._demote
    daemon._demote = lambda reason: (demotions.append(reason), original(reason))
    t = _start(daemon)
    try:
        wait_until(lambda: last_run(store), timeout=10, message="a first run")
        _break_lock(store, daemon)
        wait_until(lambda: demotions, timeout=10, message="the loss noticed")
        n = last_run(store)["id"]
        wait_until(lambda: daemon.is_leader and last_run(store)["id"] > n, timeout=10,
                   message="leadership won back and jobs running again")
    finally:
        daemon.request_stop()
        t.join(20)
    assert last_run(store)["status"] != "running"
    assert all(r.status != "running" for r in runs(store))


def test_given_a_job_failing_whole_runs_then_it_backs_off(store, tmp_path, monkeypatch, fake_jobs):
    ini = write_ini(tmp_path / "sync.ini", store.url, interval="1s")
    daemon = Daemon(config.load_settings(ini), store, tick=0.1, jobs=fake_jobs.jobs(fake_jobs.fail))
    t = _start(daemon)
    try:
        wait_until(lambda: daemon._failures.get("registration", 0) >= 2, timeout=10, message="two failures")
        from datetime import datetime, timezone

        job = daemon._scheduler.get_job("registration")
        assert (job.next_run_time - datetime.now(timezone.utc)).total_seconds() > 1.2
        shown = last_run(store)
        assert shown["status"] == "failed"
        assert "1C did not answer" in shown["error"]
        assert shown["last_success_at"] is None
    finally:
        daemon.request_stop()
        t.join(20)


def test_given_a_job_stuck_past_the_stop_timeout_then_run_returns_and_the_run_is_recorded_interrupted(
        store, tmp_path, fake_jobs, monkeypatch):
    monkeypatch.setenv("FAKE_JOB_STUCK_SECONDS", "2")
    ini = write_ini(tmp_path / "sync.ini", store.url, interval="1h")
    daemon = Daemon(config.load_settings(ini), store, tick=0.1, jobs=fake_jobs.jobs(fake_jobs.stuck),
                    stop_timeout=0.3)
    t = _start(daemon)
    wait_until(lambda: _latest_if(store, "running"), timeout=10, message="the stuck run")
    daemon.request_stop()
    t.join(5)
    assert not t.is_alive()
    assert daemon.unfinished == ["registration"]  # `run` then leaves with os._exit(0)
    assert len(runs(store)) == 1
    run = last_run(store)
    assert run["status"] == "interrupted"
    assert "exited before the job finished" in run["error"]
