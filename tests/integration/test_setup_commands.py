"""`amo1c-sync setup amocrm` and `setup 1c` through the real CLI against the emulators of a new
clinic's systems (no integration fields in amoCRM, no default items in 1C)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator

TOKEN = "setup-long-lived-token-0123456789"


@pytest.fixture
def fresh():
    with AmoCRMEmulator(rate_limit=1000, lead_fields=(), long_lived_token=TOKEN) as amo, \
            OneCEmulator(seed_defaults=False) as onec:
        yield amo, onec


def _ini(tmp_path: Path, amo, onec, extra: str = "") -> Path:
    p = tmp_path / "sync.ini"
    p.write_text(f"[amocrm]\nbase_url = {amo.url}\nlong_lived_token = {TOKEN}\nrate_limit = 1000\n"
                 f"[onec]\nbase_url = {onec.url}/odata/standard.odata\nusername = {onec.username}\n"
                 f"password = {onec.password}\n[store]\nurl = sqlite:///{tmp_path / 'state.db'}\n" + extra,
                 encoding="utf-8")
    p.chmod(0o600)
    return p


def _setup(ini: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMO1C_")}
    return subprocess.run([sys.executable, "-m", "amo1c_sync", "--config", str(ini), "setup", *args],
                          capture_output=True, text=True, timeout=120, cwd=str(ini.parent), env=env)


def test_given_a_new_account_when_setup_amocrm_dry_runs_then_it_lists_the_fields_and_creates_none(fresh, tmp_path):
    amo, onec = fresh
    r = _setup(_ini(tmp_path, amo, onec), "amocrm", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("would create") == 7
    assert "«Врач» (select)" in r.stdout
    assert amo.fields() == []
    assert not (tmp_path / "state.db").exists()


def test_given_a_new_account_when_setup_amocrm_runs_then_each_field_exists_with_its_type_and_a_rerun_does_nothing(
        fresh, tmp_path):
    amo, onec = fresh
    ini = _ini(tmp_path, amo, onec)
    r = _setup(ini, "amocrm")
    assert r.returncode == 0, r.stderr
    types = {f["name"]: f["type"] for f in amo.fields()}
    assert types == {"Дата записи к врачу": "date", "Врач": "select", "Время записи": "select",
                     "ФИО клиента": "text", "Сумма1С": "numeric", "Зарегистрировать в 1С": "checkbox",
                     "Заявка 1С": "text"}
    doctors = next(f for f in amo.fields() if f["name"] == "Врач")
    assert sorted(e["value"] for e in doctors["enums"]) == ["Ефимова Е.В.", "Ишаева М.И.", "Петрова А.С."]
    again = _setup(ini, "amocrm")
    assert again.returncode == 0
    assert "nothing to do" in again.stdout
    assert "created" not in again.stdout
    assert len(amo.fields()) == 7


def test_given_a_field_of_the_wrong_type_when_setup_amocrm_runs_then_it_is_reported_and_left_as_it_is(fresh, tmp_path):
    amo, onec = fresh
    fid = amo.add_field("Сумма1С", "text")
    r = _setup(_ini(tmp_path, amo, onec), "amocrm")
    assert r.returncode == 1
    assert "WRONG TYPE    «Сумма1С» is a text field" in r.stdout
    assert "needs a numeric field" in r.stdout
    same = [f for f in amo.fields() if f["name"] == "Сумма1С"]
    assert len(same) == 1
    assert same[0]["id"] == fid
    assert same[0]["type"] == "text"


def test_given_a_base_without_defaults_when_setup_1c_runs_then_it_lists_and_creates_nothing_until_asked(
        fresh, tmp_path):
    amo, onec = fresh
    ini = _ini(tmp_path, amo, onec)
    r = _setup(ini, "1c")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.count("published     ") == 9  # with the clients' contact information
    assert "MISSING       client «Клиент из AmoCRM»" in r.stdout
    assert "--create-defaults" in r.stdout
    assert onec.clients() == []
    assert onec.rows(onec.names.nomenclature) == []
    made = _setup(ini, "1c", "--create-defaults")
    assert made.returncode == 0, made.stdout
    assert [c["name"] for c in onec.clients()] == ["Клиент из AmoCRM"]
    assert [r["Description"] for r in onec.rows(onec.names.nomenclature)] == ["Номенклатура AmoCRM"]
    again = _setup(ini, "1c", "--create-defaults")
    assert "created" not in again.stdout
    assert len(onec.clients()) == 1


def test_given_an_object_not_published_when_setup_1c_runs_then_it_says_what_to_enable(fresh, tmp_path):
    amo, onec = fresh
    ini = _ini(tmp_path, amo, onec, "[onec_names]\nschedules = Document_ГрафикиВрачей\n")
    r = _setup(ini, "1c")
    assert r.returncode == 1
    line = next(line for line in r.stdout.splitlines() if "Document_ГрафикиВрачей" in line)
    assert line.startswith("MISSING")
    assert "not published" in line
    assert "standard OData" in line


def test_given_an_attribute_named_otherwise_when_setup_1c_runs_then_the_existing_ones_are_listed(fresh, tmp_path):
    amo, onec = fresh
    ini = _ini(tmp_path, amo, onec, "[onec_names]\nzayavka_lead = НомерАмо\n")
    r = _setup(ini, "1c")
    line = next(line for line in r.stdout.splitlines() if "НомерАмо" in line)
    assert line.startswith("MISSING")
    assert "[onec_names]" in line
    assert "НомерAmoCRM" in line


def test_given_1c_unreachable_when_setup_1c_runs_then_one_line_and_no_traceback(fresh, tmp_path):
    amo, _onec = fresh
    ini = tmp_path / "sync.ini"
    ini.write_text("[onec]\nbase_url = http://127.0.0.1:9/odata/standard.odata\nusername = x\n"
                   "connect_timeout = 1s\n", encoding="utf-8")
    r = _setup(ini, "1c")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "amo1c-sync setup 1c:" in r.stderr
