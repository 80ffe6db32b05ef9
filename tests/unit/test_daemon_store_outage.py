"""The daemon's heartbeat as the store's probe: while the store does not answer it says so (once,
then every STORE_NOTE_EVERY seconds), and when it answers again the jobs that failed meanwhile
run at once instead of after the backoff their failures earned."""

from __future__ import annotations

from types import SimpleNamespace

from structlog.testing import capture_logs

import amo1c_sync.daemon as daemon_mod
from amo1c_sync import config
from amo1c_sync.daemon import Daemon
from amo1c_sync.jobs import JOBS
from amo1c_sync.leader import AlwaysLeader


class _Scheduler:
    def __init__(self):
        self.moved: list[str] = []

    def modify_job(self, name, **kwargs):
        self.moved.append(name)


def test_given_the_store_away_when_it_answers_again_then_the_failed_jobs_run_at_once(monkeypatch):
    answers = iter([OSError("PostgreSQL did not answer within 12 s"), OSError("again"), None])

    def heartbeat(*_args, **_kwargs):
        failure = next(answers)
        if failure:
            raise failure
    monkeypatch.setattr(daemon_mod, "write_heartbeat", heartbeat)
    daemon = Daemon(config.load_settings(None), SimpleNamespace(dialect="postgresql"),
                    lock=AlwaysLeader(), jobs=[j for j in JOBS if j.name in ("payments", "registration")])
    daemon.role, daemon._scheduler = "leader", _Scheduler()
    daemon._failures.update({"payments": 4})

    with capture_logs() as logs:
        daemon._heartbeat()
        daemon._heartbeat()
        daemon._heartbeat()

    events = [e["event"] for e in logs]
    assert events == ["store.unavailable", "store.available_again"]   # the second failure: no repeat yet
    assert "did not answer" in logs[0]["error"]
    assert logs[1]["resumed"] == ["payments"]
    assert daemon._scheduler.moved == ["payments"]
    assert daemon._failures == {}
