"""`amo1c-sync run` (a real subprocess, the product's jobs, both emulators, a store file) before
the administrator has run `auth --code`: the amoCRM jobs are skipped, not failed every cycle; the
journal and `status` say what to do; the jobs resume by themselves once a token is stored."""

from __future__ import annotations

import json

import requests

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator
from amo1c_sync.store import Store, sqlite_url_for
from tests.support import wait_until
from tests.support.daemon import (
    cli,
    kill_quietly,
    last_run,
    runs,
    start_daemon,
    stop,
    write_ini,
)
from tests.support.e2e import seed_lead, zayavki

AMOCRM_JOBS = ("directory", "registration", "payments", "lifecycle")


def _ini(tmp_path, store_url, amo, onec):
    ini = write_ini(tmp_path / "sync.ini", store_url, interval="1s", extra=(
        f"[amocrm]\nbase_url = {amo.url}\nclient_id = {amo.client_id}\nclient_secret = {amo.client_secret}\n"
        f"redirect_uri = {amo.redirect_uri}\nrate_limit = 1000\n"
        f"[onec]\nbase_url = {onec.url}\nusername = {onec.username}\npassword = {onec.password}\n"))
    ini.chmod(0o600)
    return ini


def _events(log_path, name: str) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines()
            if line.startswith("{") and f'"{name}"' in line]


def _skipped_all(store) -> bool:
    return all((last_run(store, job) or {}).get("status") == "skipped" for job in AMOCRM_JOBS)


def test_given_no_amocrm_token_when_the_daemon_runs_then_amocrm_jobs_wait_saying_what_to_do_and_resume_once_authorised(
        tmp_path):
    with AmoCRMEmulator() as amo, OneCEmulator() as onec:
        url = sqlite_url_for(tmp_path / "state.db")
        ini = _ini(tmp_path, url, amo, onec)
        lead_id = seed_lead(amo)
        log_path = tmp_path / "daemon.log"
        proc = start_daemon(ini, log_path, fake=False)
        store = Store(url)
        try:
            wait_until(lambda: _skipped_all(store), timeout=60, message=lambda: log_path.read_text()[-3000:])
            for job in AMOCRM_JOBS:
                assert last_run(store, job)["error"].startswith("waiting for `amo1c-sync auth --code CODE`")
            text = cli(ini, "status").stdout
            assert "skipped" in text
            assert "waiting for `amo1c-sync auth --code CODE`" in text
            (said,) = _events(log_path, "daemon.amocrm_not_authorised")
            assert "amo1c-sync auth --code" in said["action"]
            assert said["skipped"] == list(AMOCRM_JOBS)
            assert proc.poll() is None

            code = requests.post(amo.url + "/_sandbox/oauth/code", timeout=5).json()["code"]
            auth = cli(ini, "auth", "--code", code)
            assert auth.returncode == 0, auth.stderr
            wait_until(lambda: zayavki(onec, lead_id), timeout=60, message="the «Заявка» after the token")
            wait_until(lambda: all((last_run(store, job) or {}).get("status") in ("ok", "partial")
                                   for job in AMOCRM_JOBS), timeout=60, message="every amoCRM job running again")
            assert len(_events(log_path, "daemon.amocrm_authorised")) == 1
            # many cycles passed while it waited: one record per job, none failed, one log line
            for job in AMOCRM_JOBS:
                statuses = [r.status for r in runs(store, job)]
                assert statuses.count("skipped") == 1, (job, statuses)
                assert "failed" not in statuses, (job, statuses)
            assert len(_events(log_path, "daemon.amocrm_not_authorised")) == 1
            assert stop(proc) == 0
        finally:
            kill_quietly(proc)
            store.dispose()
