"""Defects a new user met on a fresh machine (issue 18), each through the real CLI in a clean
directory: no traceback for a missing store, read-only commands that create nothing and say which
config they use, `check` that names what is still empty, `slots` output, `db upgrade`'s answer,
`run` without a token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amo1c_sync.sandbox.onec_emulator import OneCEmulator

ROOT = Path(__file__).resolve().parents[2]


def _cli(cwd: Path, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY",
                                                             "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "amo1c_sync", *args], capture_output=True, text=True,
                          cwd=str(cwd), env=full, timeout=timeout)


def _ini(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sync.ini"
    p.write_text(text, encoding="utf-8")
    p.chmod(0o600)
    return p


@pytest.mark.parametrize("command", [("status",), ("trace", "12345"), ("auth", "--status"), ("check",)])
def test_given_no_config_and_no_store_when_a_read_only_command_runs_then_it_says_so_creates_nothing_and_no_traceback(
        tmp_path, command):
    r = _cli(tmp_path, *command)
    assert "Traceback" not in r.stdout + r.stderr
    assert "config: none found" in r.stderr or "config <defaults>" in r.stdout, r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == [], "a read-only command created files"
    assert r.returncode != 0


@pytest.mark.parametrize("command", [("status",), ("trace", "12345"), ("auth", "--status")])
def test_given_an_unmigrated_store_when_a_read_only_command_runs_then_one_line_says_what_to_do(tmp_path, command):
    import sqlite3

    sqlite3.connect(tmp_path / "empty.db").close()
    ini = _ini(tmp_path, f"[store]\nurl = sqlite:///{tmp_path / 'empty.db'}\n")
    r = _cli(tmp_path, "--config", str(ini), *command)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"config: {ini}" in r.stderr
    said = r.stdout + r.stderr
    assert "empty (never migrated)" in said
    assert "db upgrade" in said


def test_given_an_unreachable_postgresql_store_when_status_runs_then_one_line_and_no_traceback(tmp_path):
    ini = _ini(tmp_path, "[store]\nurl = postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2\n")
    r = _cli(tmp_path, "--config", str(ini), "status")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "cannot read the state store postgresql" in r.stderr
    assert "what to do:" in r.stderr


def test_given_a_new_store_when_db_upgrade_runs_then_it_names_the_store_and_the_revision(tmp_path):
    ini = _ini(tmp_path, f"[store]\nurl = sqlite:///{tmp_path / 'state.db'}\n")
    first = _cli(tmp_path, "--config", str(ini), "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert f"store {tmp_path / 'state.db'}: upgraded from empty to revision " in first.stdout
    assert "(the newest)" in first.stdout
    again = _cli(tmp_path, "--config", str(ini), "db", "upgrade")
    assert "already at revision" in again.stdout
    assert "nothing to do" in again.stdout


def test_given_http_enabled_with_the_secret_in_a_credential_when_status_and_check_run_from_a_shell_then_no_secret_is_needed(  # noqa: E501 - the name says it all
        tmp_path):
    ini = _ini(tmp_path, f"[store]\nurl = sqlite:///{tmp_path / 'state.db'}\n[http]\nenabled = yes\n")
    assert _cli(tmp_path, "--config", str(ini), "db", "upgrade").returncode == 0
    status = _cli(tmp_path, "--config", str(ini), "status")
    assert status.returncode == 0, status.stderr
    assert "secret" not in status.stderr, status.stderr
    check = _cli(tmp_path, "--config", str(ini), "check", timeout=120)
    assert "[http] secret: required" not in check.stdout + check.stderr
    assert "secret not visible here" in check.stdout
    run = _cli(tmp_path, "--config", str(ini), "run")
    assert run.returncode == 2
    assert "[http] secret: required when [http] enabled = yes" in run.stderr


def test_given_the_unedited_example_when_check_runs_then_each_empty_value_fails_with_what_to_put(tmp_path):
    ini = _ini(tmp_path, (ROOT / "sync.ini").read_text(encoding="utf-8"))
    r = _cli(tmp_path, "--config", str(ini), "check")
    assert r.returncode == 1
    fails = [line for line in r.stdout.splitlines() if line.startswith("FAIL")]
    for key in ("[amocrm] base_url", "[amocrm] client_id", "[amocrm] client_secret", "[amocrm] redirect_uri",
                "[onec] base_url", "[onec] username"):
        assert any(key in line and "put " in line for line in fails), (key, r.stdout)
    assert not r.stdout.startswith("OK   config"), r.stdout
    assert all(line.startswith(("OK", "FAIL", "     ")) for line in r.stdout.splitlines()), r.stdout
    assert "{" not in r.stdout + r.stderr  # no JSON log line between (or after) the OK/FAIL lines


@pytest.fixture
def onec():
    with OneCEmulator() as emu:
        yield emu


def _slots_ini(tmp_path: Path, onec_url: str, onec) -> Path:
    return _ini(tmp_path, f"[onec]\nbase_url = {onec_url}\nusername = {onec.username}\n"
                          f"password = {onec.password}\nread_timeout = 2s\n")


def test_given_a_doctor_who_does_not_work_when_slots_runs_then_no_doubled_period(tmp_path, onec):
    ini = _slots_ini(tmp_path, onec.url, onec)
    r = _cli(tmp_path, "--config", str(ini), "slots", "22.12.2021", "--doctor", "Петрова А.С.")
    assert r.returncode == 1
    assert "Ишаева М.И." in r.stderr
    assert "М.И.." not in r.stderr


def test_given_slots_json_when_1c_is_unreachable_then_stdout_has_the_error_once_with_the_host(tmp_path, onec):
    ini = _slots_ini(tmp_path, "http://127.0.0.1:9/clinic/odata/standard.odata", onec)
    r = _cli(tmp_path, "--config", str(ini), "slots", "22.12.2021", "--doctor", "Ефимова Е.В.", "--json")
    assert r.returncode == 1
    body = json.loads(r.stdout)
    assert body["code"] == "unreachable"
    assert "127.0.0.1:9" in body["error"]
    assert "1C: 1C" not in body["error"]
    assert body["error"].count("refused") == 1
    ok = _cli(tmp_path, "--config", str(_slots_ini(tmp_path, onec.url, onec)), "slots", "22.12.2021",
              "--doctor", "Ефимова Е.В.", "--json")
    assert json.loads(ok.stdout)["times"][:2] == ["8:15", "8:20"]


def test_given_no_amocrm_token_when_run_starts_then_the_journal_says_once_what_to_do_and_status_too(tmp_path, onec):
    from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator

    with AmoCRMEmulator() as amo:
        ini = _ini(tmp_path, f"[amocrm]\nbase_url = {amo.url}\nclient_id = {amo.client_id}\n"
                             f"client_secret = {amo.client_secret}\nredirect_uri = {amo.redirect_uri}\n"
                             f"[onec]\nbase_url = {onec.url}\nusername = {onec.username}\n"
                             f"password = {onec.password}\n[store]\nurl = sqlite:///{tmp_path / 'state.db'}\n"
                             "[sync]\nregistration_interval = 1s\npayments_interval = 1s\n"
                             "[logging]\nformat = json\n")
        log = tmp_path / "daemon.log"
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "amo1c_sync", "--config", str(ini), "run"],
                                    stdout=fh, stderr=subprocess.STDOUT, cwd=str(tmp_path), env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and '"job.finished"' not in log.read_text() and (
                    '"daemon.amocrm_not_authorised"' not in log.read_text()):
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
            text = log.read_text()
            said = [json.loads(line) for line in text.splitlines()
                    if line.startswith("{") and "daemon.amocrm_not_authorised" in line]
            assert len(said) == 1, text
            assert "amo1c-sync auth --code" in said[0]["action"], text
            assert proc.poll() is None  # it keeps running
            status = _cli(tmp_path, "--config", str(ini), "status")
            assert "run `amo1c-sync auth --code CODE`" in status.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
