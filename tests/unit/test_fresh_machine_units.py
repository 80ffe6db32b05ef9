"""Rough edges a new user hit on a fresh machine (issue 18), the parts that need no socket:
help texts, config resolution and required values, log routing, status and trace wording."""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import pytest

from amo1c_sync import config, logs
from amo1c_sync.cli import build_parser
from amo1c_sync.commands.status import render as render_status
from amo1c_sync.commands.trace import render as render_trace
from amo1c_sync.config import load_settings
from amo1c_sync.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str, name: str = "sync.ini") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    p.chmod(0o600)
    return p


# --- 12: --help --------------------------------------------------------------------------------

def _walk(parser: argparse.ArgumentParser, path: str = "amo1c-sync"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, f"{path} {name}")


def test_given_every_subcommand_when_help_is_asked_then_it_has_a_description_and_every_option_a_help():
    seen = 0
    for path, parser in _walk(build_parser()):
        seen += 1
        if path != "amo1c-sync":
            assert parser.description, path
            assert "\n" not in parser.description.strip(), path
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{path}: {action.option_strings or action.dest} has no help"
    assert seen >= 14


# --- 3: the service's store from a shell -------------------------------------------------------

def test_given_the_services_config_and_no_state_directory_when_loaded_then_the_store_is_the_services(
        tmp_path, monkeypatch):
    etc, state = tmp_path / "etc" / "amo1c-sync", tmp_path / "var" / "lib" / "amo1c-sync"
    etc.mkdir(parents=True)
    monkeypatch.setattr(config, "SERVICE_CONFIG_DIR", etc)
    monkeypatch.setattr(config, "SERVICE_STATE_DIR", state)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.chdir(tmp_path)
    service = load_settings(_write(etc, "[store]\nurl =\n"))
    assert service.store.resolved_url() == f"sqlite:///{state / 'amo1c-sync.db'}"
    elsewhere = load_settings(_write(tmp_path, "[store]\nurl =\n"))
    assert elsewhere.store.resolved_url() == f"sqlite:///{tmp_path / 'amo1c-sync.db'}"
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "unit"))
    assert service.store.resolved_url() == f"sqlite:///{tmp_path / 'unit' / 'amo1c-sync.db'}"


# --- 4: the HTTP secret only where HTTP is served ----------------------------------------------

def test_given_http_enabled_and_the_secret_in_a_credential_elsewhere_when_loaded_then_only_serving_needs_it(tmp_path):
    s = load_settings(_write(tmp_path, "[http]\nenabled = yes\n"))
    assert s.http.enabled
    assert s.http.secret is None
    with pytest.raises(ConfigError) as err:
        config.require_http_secret(s)
    assert "[http] secret: required when [http] enabled = yes" in str(err.value)


# --- 7: every empty required value -------------------------------------------------------------

def test_given_the_unedited_example_when_checked_then_each_required_value_is_named_with_what_to_put():
    problems = config.missing_required(load_settings(ROOT / "sync.ini"))
    keys = [p.split(":")[0] for p in problems]
    assert keys == ["[amocrm] base_url", "[amocrm] client_id", "[amocrm] client_secret",
                    "[amocrm] redirect_uri", "[onec] base_url", "[onec] username"]
    assert all("put " in p for p in problems), problems


def test_given_a_long_lived_token_when_checked_then_the_oauth_keys_are_not_required(tmp_path):
    s = load_settings(_write(tmp_path, "[amocrm]\nbase_url = https://clinic.amocrm.ru\nlong_lived_token = t0ken\n"
                                       "[onec]\nbase_url = http://1c/clinic/odata/standard.odata\n"
                                       "username = Интеграция\n"))
    assert config.missing_required(s) == []


# --- 9: library loggers --------------------------------------------------------------------------

def test_given_apscheduler_warns_when_logging_is_json_then_its_line_is_json_and_masked():
    buf = io.StringIO()
    logs.configure("INFO", "json", stream=buf)
    logs.register_secret("lib-secret-9876")
    logging.getLogger("apscheduler.scheduler").warning(
        "Execution of job %s skipped: maximum number of running instances reached (%d)", "payments", 1)
    logging.getLogger("urllib3.connectionpool").warning("retrying with lib-secret-9876")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert lines[0]["logger"] == "apscheduler.scheduler"
    assert lines[0]["level"] == "warning"
    assert "maximum number of running instances reached" in lines[0]["event"]
    assert lines[1]["event"] == "retrying with ***"
    logs.configure("INFO", "json", stream=buf)  # configuring again keeps one handler
    assert sum(getattr(h, "_amo1c", False) for h in logging.getLogger().handlers) == 1


# --- 13: status wording ------------------------------------------------------------------------

def _status(**jobs):
    return {"store": "sqlite", "store_at": "/var/lib/amo1c-sync/amo1c-sync.db", "config": "sync.ini",
            "generated_at": "2021-12-22T09:05:00+00:00", "role": "not running", "leader": None,
            "standby": [], "jobs": jobs, "pending": [], "failed": [], "skipped_documents": [],
            "skipped_documents_total": 0, "tokens": [], "amocrm_auth": "oauth"}


def test_given_jobs_that_never_ran_or_changed_nothing_when_status_renders_then_it_says_so_plainly():
    ran = {"status": "ok", "started_at": "2021-12-22T09:00:00+00:00", "duration_s": 0.4,
           "counts": {"doctors": 0, "grid_times": 0}, "error": None}
    text = render_status(_status(
        directory={"last_run": ran, "last_success_at": "2021-12-22T09:00:01+00:00", "stale": False},
        payments={"last_run": None, "last_success_at": None, "stale": True}))
    assert "STALE" not in text
    assert "never ran" in text
    assert "no changes" in text
    assert "doctors=0" not in text
    assert "leader:  not running" in text
    assert "none running" not in text
    assert "/var/lib/amo1c-sync/amo1c-sync.db" in text


# --- 14: money in trace as the lead holds it ---------------------------------------------------

def test_given_a_pushed_total_when_trace_renders_then_money_reads_as_on_the_lead():
    tr = {"lead_id": 7, "registration": None, "documents": [
              {"ref": "r", "number": "0001", "date": "2021-12-22", "amount": "150.00", "posted": True,
               "deletion_mark": False, "skip_reason": None}],
          "payment_total": {"status": "ok", "pushed_total": "150.00", "pushed_at": "x", "error": None,
                            "attempts": 0, "next_attempt_at": None, "updated_at": None},
          "journal": [{"at": "2021-12-22T09:10:00+00:00", "direction": "-> amoCRM", "action": "lead.total_pushed",
                       "ref": None, "message": "«Сумма1С» — -> 150.00, budget 150",
                       "detail": {"old_total": None, "new_total": "150.00", "price": 150}}]}
    text = render_trace(tr, sum_name="Сумма1С")
    assert "150.00" not in text
    assert "— ->" not in text
    assert "«Сумма1С» empty -> 150, budget 150" in text
    assert "pushed 150 at" in text
