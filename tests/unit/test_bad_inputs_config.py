"""Bad inputs, part 1: sync.ini values a person really types (issue 9's table; README, Troubleshooting).

Each test checks what the user sees: one clear, specific message that names the file, section and
key and says what would be valid. Where the behaviour is not built yet the test is kept and marked
xfail(strict=True) with the reason, so that it turns into a failure the day it starts passing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amo1c_sync.config import load_settings
from amo1c_sync.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, *, raw: bytes | None = None) -> Path:
    p = tmp_path / "sync.ini"
    if raw is not None:
        p.write_bytes(raw)
    else:
        p.write_text(text, encoding="utf-8")
    p.chmod(0o600)
    return p


@pytest.mark.parametrize(("text", "expected"), [
    # a comment on the same line is part of the value in an ini file
    ("[sync]\nregistration_interval = 15s  # every 15 s\n",
     '[sync] registration_interval: "15s  # every 15 s" is not a duration; use 30s, 5m or 1h'),
    # a Russian decimal comma
    ("[amocrm]\nrate_limit = 6,5\n", '[amocrm] rate_limit: "6,5" is not a number'),
    # a key left empty
    ("[sync]\npayments_interval =\n", '[sync] payments_interval: "" is not a duration'),
    # the same key twice (two people edited the file)
    ("[sync]\npayments_interval = 60s\npayments_interval = 30s\n",
     "option 'payments_interval' in section 'sync' already exists"),
    # a time zone typed in lower case
    ("[sync]\ntimezone = europe/moscow\n",
     '[sync] timezone: "europe/moscow" is not an IANA time zone; use e.g. Europe/Moscow'),
    ("[sync]\nmax_attempts = -1\n", "[sync] max_attempts: -1 must not be negative"),
    ("[sync]\nappointment_minutes = 15 минут\n", '[sync] appointment_minutes: "15 минут" is not a whole number'),
    ("[http]\nport = 0\n", "[http] port: 0 is not a TCP port (1-65535)"),
    # a 1C name that cannot be an OData name
    ("[onec_names]\ndoctors = 1Врачи\n", "[onec_names]: bad 1C names: doctors='1Врачи' is not a 1C name"),
    ("[onec_names]\nbase_ref_mode = Composite\n",
     '[onec_names] base_ref_mode: "Composite" is not valid; use one of composite, single'),
    ("[onec_names]\ndoctors_catalog = Catalog_Врачи\n", "[onec_names] doctors_catalog: unknown key; valid keys are"),
    ("[fields]\ndoctor_name = Врач\n", "[fields] doctor_name: unknown key; valid keys are date, doctor, time"),
    # a lease that one slow store operation would outlast
    ("[store]\ntimeout = 30s\nlock_lease = 15s\n",
     "[store] lock_lease: 15s must be at least [store] timeout + 5s (35s)"),
    ("[store]\ntimeout = 0\n", '[store] timeout: "0" must be greater than 0'),
    # a token wait that a stop (systemd: 90 s) could not sit out
    ("[amocrm]\ntoken_timeout = 5m\n", "[amocrm] token_timeout: 300s is too long; at most 70s"),
])
def test_given_a_malformed_value_when_loaded_then_one_message_names_the_key_and_what_is_valid(
        tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    message = str(err.value)
    assert expected in message
    assert str(tmp_path / "sync.ini") in message or "sync.ini" in message


def test_given_a_file_saved_in_windows_1251_when_loaded_then_the_message_says_save_it_as_utf8(tmp_path):
    path = write(tmp_path, "", raw="[fields]\ndate = Дата записи\n".encode("cp1251"))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "not UTF-8 text" in str(err.value)
    assert "save it as UTF-8" in str(err.value)


@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://clinic@db/amo", "backend 'mysql' is not supported; use sqlite:/// or postgresql+psycopg://"),
    ("база данных", "[store] url: not a database URL; use sqlite:///path/state.db"),
])
def test_given_a_wrong_store_url_when_the_store_opens_then_the_message_says_which_urls_work(tmp_path, url, expected):
    from amo1c_sync.store import Store

    settings = load_settings(write(tmp_path, f"[store]\nurl = {url}\n"))
    with pytest.raises(ConfigError) as err:
        Store(settings.store.resolved_url())
    assert expected in str(err.value)


# --- once routed to the foundation (they were strict xfails) -----------------------------------

def test_given_a_utf8_file_with_a_bom_when_loaded_then_it_loads(tmp_path):
    path = write(tmp_path, "", raw="\ufeff[sync]\npayments_interval = 30s\n".encode("utf-8"))
    assert load_settings(path).sync.payments_interval == 30


@pytest.mark.parametrize("key", ["registration_interval", "payments_interval", "hot_window", "retry_backoff_base"])
def test_given_a_zero_duration_when_loaded_then_the_message_says_it_must_be_greater_than_0(tmp_path, key):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f"[sync]\n{key} = 0s\n"))
    assert f"[sync] {key}" in str(err.value)
    assert "greater than 0" in str(err.value)


def test_given_a_rate_limit_above_amocrms_7_when_loaded_then_the_user_is_told(tmp_path):
    import warnings

    path = write(tmp_path, "[amocrm]\nrate_limit = 50\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = load_settings(path)  # a warning, not an error: a test server may allow more
    assert settings.amocrm.rate_limit == 50
    assert any("rate_limit" in str(w.message) and "7" in str(w.message) for w in caught)


@pytest.mark.parametrize("key", ["flag", "date", "doctor", "time"])
def test_given_a_required_field_name_left_empty_when_loaded_then_the_message_says_it_is_required(tmp_path, key):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f"[fields]\n{key} =\n"))
    assert f"[fields] {key}" in str(err.value)
