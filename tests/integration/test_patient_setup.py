"""F8 set-up over HTTP: `setup amocrm` creates the contact field «Клиент 1С» ([sync]
contact_client_field) an account lacks, `check` says whether it exists, and `check` / `setup 1c`
check the clients' contact-information names against what 1C publishes."""

from __future__ import annotations

import pytest

from amo1c_sync.commands.check import run_checks
from amo1c_sync.commands.setup import setup_amocrm, setup_onec
from amo1c_sync.config import load_settings
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.amocrm_emulator.contacts import PREDEFINED_CONTACT_FIELDS
from amo1c_sync.sandbox.onec_emulator import OneCEmulator
from tests.support.e2e import TOKEN


@pytest.fixture
def new_account():
    """An account with the integration's lead fields but only amoCRM's own contact fields."""
    with AmoCRMEmulator(rate_limit=1000, long_lived_token=TOKEN, contact_fields=PREDEFINED_CONTACT_FIELDS) as amo, \
            OneCEmulator() as onec:
        yield amo, onec


def settings_for(amo, onec, tmp_path, **sync):
    return load_settings(None, overrides={
        "amocrm": {"base_url": amo.url, "long_lived_token": TOKEN, "rate_limit": "1000"},
        "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
        "store": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "sync": sync,
    })


def contact_fields(amo) -> dict[str, str]:
    return {f["name"]: f["type"] for f in amo.contacts.fields_by_id.values()}


def test_given_an_account_without_the_contact_field_when_setup_amocrm_runs_then_it_is_created_once(
        new_account, tmp_path):
    amo, onec = new_account
    settings = settings_for(amo, onec, tmp_path)
    dry: list[str] = []
    assert setup_amocrm(settings, dry_run=True, out=dry.append) == 0
    assert "would create  «Клиент 1С» (text)  [sync] contact_client_field (a contact field)" in dry
    assert "Клиент 1С" not in contact_fields(amo)

    lines: list[str] = []
    assert setup_amocrm(settings, dry_run=False, out=lines.append) == 0
    assert contact_fields(amo)["Клиент 1С"] == "text"
    assert any(x.startswith("created       «Клиент 1С» (text, id ") for x in lines), lines
    again: list[str] = []
    assert setup_amocrm(settings, dry_run=False, out=again.append) == 0
    assert again[-1] == "amoCRM: every lead and contact field the integration needs exists; nothing to do"
    assert list(contact_fields(amo)).count("Клиент 1С") == 1


def test_given_the_contact_field_off_when_setup_amocrm_runs_then_no_contact_field_is_made(new_account, tmp_path):
    amo, onec = new_account
    assert setup_amocrm(settings_for(amo, onec, tmp_path, contact_client_field=""), dry_run=False,
                        out=lambda _line: None) == 0
    assert "Клиент 1С" not in contact_fields(amo)


def test_given_a_contact_field_of_the_wrong_type_when_setup_amocrm_runs_then_reported_and_left(
        new_account, tmp_path):
    amo, onec = new_account
    amo.contacts.add_field("Клиент 1С", "numeric")
    lines: list[str] = []
    assert setup_amocrm(settings_for(amo, onec, tmp_path), dry_run=False, out=lines.append) == 1
    assert any(x.startswith("WRONG TYPE    «Клиент 1С» is a numeric contact field") for x in lines), lines
    assert list(contact_fields(amo)).count("Клиент 1С") == 1


def test_given_the_contact_field_missing_then_created_when_checked_then_fail_then_ok(new_account, tmp_path):
    amo, onec = new_account
    settings = settings_for(amo, onec, tmp_path)
    before: list[str] = []
    assert not run_checks(settings, out=before.append)
    assert ("FAIL amoCRM has no contact field «Клиент 1С» ([sync] contact_client_field); contact fields: "
            "Телефон, Email. `amo1c-sync setup amocrm` creates it") in before
    setup_amocrm(settings, dry_run=False, out=lambda _line: None)
    after: list[str] = []
    assert run_checks(settings, out=after.append), after
    assert any(x.startswith("OK   amoCRM contact field «Клиент 1С» (text, id ") for x in after), after


def test_given_a_wrong_contact_information_column_when_checked_then_the_key_and_the_columns_are_named(
        new_account, tmp_path):
    amo, onec = new_account
    settings = load_settings(None, overrides={
        "amocrm": {"base_url": amo.url, "long_lived_token": TOKEN, "rate_limit": "1000"},
        "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
        "store": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "onec_names": {"client_contact_phone": "НомерТел"},
    })
    lines: list[str] = []
    assert not run_checks(settings, out=lines.append)
    [bad] = [x for x in lines if "НомерТел»" in x]
    assert bad.startswith("FAIL 1C names: [onec_names] client_contact_phone: Catalog_Клиенты_КонтактнаяИнформация "
                          "has no attribute «НомерТел»")
    assert "НомерТелефона" in bad
    assert "Представление" in bad
    setup: list[str] = []
    assert setup_onec(settings, create_defaults=False, out=setup.append) == 1
    assert any(x.startswith("MISSING       Catalog_Клиенты_КонтактнаяИнформация — clients' contact information")
               and "«НомерТел»" in x for x in setup), setup
