"""`amo1c-sync run` as a real subprocess (job registry swapped for a fake job): SIGTERM mid-item,
one leader per store (PostgreSQL advisory lock / SQLite lock file), takeover after SIGKILL,
`status --json`."""

from __future__ import annotations

import json
import signal
import socket

import pytest

from amo1c_sync.store import Store, runs as job_runs, sqlite_url_for
from tests.support import wait_until
from tests.support.pg import temporary_database

from tests.support.daemon import (cli, item_pids, kill_quietly, last_journal_id, last_run, runs, start_daemon, stop,
                                  write_ini)


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    got: list[str] = []

    def received() -> str:
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except BlockingIOError:
                return "\n".join(got)

    yield path, received
    sock.close()


def test_given_a_running_daemon_when_sigterm_mid_item_then_it_exits_0_and_the_run_is_recorded(
        tmp_path, notify_socket):
    path, received = notify_socket
    url = sqlite_url_for(tmp_path / "state.db")
    ini = write_ini(tmp_path / "sync.ini", url, interval="1s")
    proc = start_daemon(ini, tmp_path / "daemon.log",
                        env={"FAKE_JOB_ITEMS": "100000", "FAKE_JOB_ITEM_SECONDS": "0.05",
                             "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    store = Store(url)
    try:
        wait_until(lambda: len(item_pids(store)) >= 3, timeout=30, message="items being processed")
        assert len(runs(store)) == 1
        assert last_run(store)["status"] == "running"
        wait_until(lambda: "WATCHDOG=1" in received(), timeout=5, message="a watchdog ping")
        assert "READY=1" in received()
        assert f"MAINPID={proc.pid}" in received()
        assert stop(proc, signal.SIGTERM, timeout=20) == 0
        assert len(runs(store)) == 1
        run = last_run(store)
        assert run["status"] == "interrupted"
        assert run["finished_at"] is not None
        assert run["counts"]["items"] == len(item_pids(store))  # nothing done was lost
        # and the `status` command says the same
        shown = json.loads(cli(ini, "status", "--json").stdout)["jobs"]["registration"]["last_run"]
        assert (shown["id"], shown["status"], shown["counts"]) == (run["id"], "interrupted", run["counts"])
        assert shown["finished_at"] is not None
        log = (tmp_path / "daemon.log").read_text()
        assert '"daemon.stopped"' in log
        assert "STOPPING=1" in received()
    finally:
        kill_quietly(proc)
        store.dispose()


def test_given_a_running_daemon_when_sighup_with_a_bad_file_then_it_is_refused_and_work_goes_on(tmp_path):
    url = sqlite_url_for(tmp_path / "state.db")
    ini = write_ini(tmp_path / "sync.ini", url, interval="1s")
    log_path = tmp_path / "daemon.log"
    proc = start_daemon(ini, log_path, env={"FAKE_JOB_ITEMS": "1"})
    store = Store(url)
    try:
        wait_until(lambda: len(runs(store)) >= 1, timeout=30, message="a first run")
        ini.write_text(ini.read_text().replace("registration_interval = 1s", "registration_interval = often"))
        proc.send_signal(signal.SIGHUP)
        line = wait_until(lambda: next((json.loads(x) for x in log_path.read_text().splitlines()
                                        if '"config.reload_refused"' in x), None), timeout=10,
                          message="the refusal in the log")
        assert "registration_interval" in line["error"]
        assert "often" in line["error"]
        n = len(runs(store))
        wait_until(lambda: len(runs(store)) >= n + 2, timeout=10, message="runs going on at 1 s")
        write_ini(ini, url, interval="2s")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: '"config.reloaded"' in log_path.read_text(), timeout=10, message="the reload")
        assert proc.poll() is None
        assert stop(proc) == 0
    finally:
        kill_quietly(proc)
        store.dispose()


def _leader_standby(procs, store, after: int = 0):
    """(leader, standby) once items come from exactly one of ``procs``."""
    pids = set(item_pids(store, after))
    if len(pids) != 1:
        return None
    (pid,) = pids
    leader = next(p for p in procs if p.pid == pid)
    return leader, next(p for p in procs if p is not leader)


def _status_text_of_a_settled_run(ini, url, store, leader, leader_log) -> str:
    """`status` text once the leader's latest run is finished and no other can start: the leader
    is reloaded to an hourly interval, then the state is polled through the readers `status` uses.
    (At 1 s a loaded machine runs the job back to back, so the latest run is nearly always in hand
    and the text at any one instant says "running".)"""
    write_ini(ini, url, interval="1h")
    leader.send_signal(signal.SIGHUP)
    wait_until(lambda: '"config.reloaded"' in leader_log.read_text(), timeout=15, message="the reload")

    def settled():
        before = job_runs.latest(store, "registration")[0]
        if before is None or before.status == "running":
            return None
        text = cli(ini, "status")
        assert text.returncode == 0, text.stderr
        after = job_runs.latest(store, "registration")[0]
        return (before, text.stdout) if after.id == before.id else None

    last, text = wait_until(settled, timeout=30, message="a finished run that stays the latest")
    assert last.status == "ok"
    assert last.counts == {"items": 2}
    write_ini(ini, url, interval="1s")
    return text


def _two_instances_one_leader(tmp_path, url):
    ini = write_ini(tmp_path / "sync.ini", url, interval="1s")
    env = {"FAKE_JOB_ITEMS": "2", "FAKE_JOB_ITEM_SECONDS": "0.01"}
    a = start_daemon(ini, tmp_path / "a.log", env=env)
    b = start_daemon(ini, tmp_path / "b.log", env=env)
    store = Store(url)
    try:
        leader, standby = wait_until(lambda: _leader_standby([a, b], store), timeout=30,
                                     message="items from exactly one instance")
        wait_until(lambda: "daemon.standby" in (tmp_path / ("a.log" if standby is a else "b.log")).read_text(),
                   timeout=15, message="the standby saying so in its log")
        # several more cycles: still only the leader works
        mark = last_journal_id(store)
        wait_until(lambda: len(item_pids(store, mark)) >= 4, timeout=20, message="more cycles")
        assert set(item_pids(store, mark)) == {leader.pid}

        st = cli(ini, "status", "--json")
        assert st.returncode == 0, st.stderr
        data = json.loads(st.stdout)
        assert data["leader"]["pid"] == leader.pid
        assert [s["pid"] for s in data["standby"]] == [standby.pid]
        for key in ("jobs", "pending", "failed", "skipped_documents", "tokens", "counts"):
            assert key in data
        last = data["jobs"]["registration"]["last_run"]
        assert {"started_at", "finished_at", "duration_s", "status", "counts", "error"} <= set(last)
        text = _status_text_of_a_settled_run(ini, url, store, leader, tmp_path / ("a.log" if leader is a else "b.log"))
        assert f"pid {leader.pid}" in text
        assert "standby: " in text
        assert "registration  ok" in text
        assert "items=2" in text

        # SIGKILL the leader: the standby takes over within about one interval (+ its retry period)
        leader.send_signal(signal.SIGKILL)
        leader.wait(10)
        mark = last_journal_id(store)
        wait_until(lambda: standby.pid in item_pids(store, mark), timeout=15,
                   message="the standby taking over")
        assert set(item_pids(store, mark)) == {standby.pid}
        st = json.loads(cli(ini, "status", "--json").stdout)
        assert st["leader"]["pid"] == standby.pid
        assert st["standby"] == []
        assert stop(standby, signal.SIGTERM) == 0
        # no run left 'running': the dead leader's last one (if it died mid-run) was closed by the new
        # leader, the new leader's own by its clean stop
        assert all(r.status != "running" for r in runs(store))
        assert last_run(store)["status"] in ("ok", "interrupted")
    finally:
        kill_quietly(a, b)
        store.dispose()


def test_given_two_instances_on_one_sqlite_file_then_one_leads_and_the_other_takes_over(tmp_path):
    _two_instances_one_leader(tmp_path, sqlite_url_for(tmp_path / "state.db"))
    assert (tmp_path / "state.db.lock").exists()


@pytest.mark.postgres
def test_given_two_instances_on_one_postgresql_then_one_leads_and_the_other_takes_over(tmp_path, pg_url):
    with temporary_database() as url:
        _two_instances_one_leader(tmp_path, url)


def test_given_a_running_leader_when_once_is_run_by_hand_then_it_refuses_and_says_why(tmp_path, sqlite_url):
    from amo1c_sync.leader import leader_lock_for
    from amo1c_sync.store import Store

    ini = write_ini(tmp_path / "sync.ini", sqlite_url)
    store = Store(sqlite_url)
    store.upgrade()
    lock = leader_lock_for(store)
    assert lock.try_acquire()
    try:
        r = cli(ini, "once", "registration")
    finally:
        lock.release()
    assert r.returncode == 1
    assert "the daemon is running as the leader" in r.stderr
