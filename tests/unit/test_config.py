import warnings
from pathlib import Path

import pytest

from amo1c_sync.config import load_settings
from amo1c_sync.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text, mode=0o600):
    p = tmp_path / "sync.ini"
    p.write_text(text, encoding="utf-8")
    p.chmod(mode)
    return p


def test_given_the_shipped_example_when_loaded_then_it_is_valid_and_matches_the_defaults():
    s = load_settings(ROOT / "sync.ini")
    assert s.sync.payments_interval == 60
    assert s.sync.registration_interval == 15
    assert s.sync.directory_interval == 3600
    assert s.sync.hot_window == 3 * 86400
    assert s.fields.flag == "Зарегистрировать в 1С"
    assert s.amocrm.rate_limit == 7


@pytest.mark.parametrize(("text", "expected"), [
    ("[sync]\npayments_interval = 5x\n",
     'sync.ini [sync] payments_interval: "5x" is not a duration; use 30s, 5m or 1h'),
    ("[sync]\npaymnets_interval = 5m\n", "[sync] paymnets_interval: unknown key; valid keys are"),
    ("[amocrn]\nbase_url = x\n", "[amocrn]: unknown section"),
    ("[sync]\ntimezone = Mars/Olympus\n", '[sync] timezone: "Mars/Olympus" is not an IANA time zone'),
    ("[sync]\nslot_step_minutes = 7\n", "[sync] slot_step_minutes: 7 must divide 60"),
    ("[amocrm]\nrate_limit = fast\n", '[amocrm] rate_limit: "fast" is not a number'),
    ("[http]\nenabled = maybe\n", '[http] enabled: "maybe" is not a yes/no value'),
    ("[logging]\nlevel = LOUD\n", '[logging] level: "LOUD" is not valid; use one of DEBUG'),
    ("[amocrm]\nbase_url = ftp:/nowhere\n", '[amocrm] base_url: "ftp:/nowhere" is not an http(s) URL'),
    ("no section header\n", "cannot parse"),
])
def test_given_a_bad_value_when_loaded_then_the_error_names_section_key_and_what_is_valid(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert expected in str(err.value)
    assert "sync.ini" in str(err.value)


def test_given_secrets_in_env_and_credentials_when_loaded_then_they_win_over_the_file(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "onec_password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("AMO1C_AMOCRM_CLIENT_SECRET", "from-env")
    s = load_settings(write(tmp_path, "[onec]\npassword = from-file\n[amocrm]\nclient_secret = file\n"))
    assert s.onec.password == "from-credential"
    assert s.amocrm.client_secret == "from-env"
    assert "from-env" not in repr(s)
    assert "from-credential" not in repr(s)


def test_given_a_world_readable_file_with_a_secret_when_loaded_then_a_warning_says_chmod(tmp_path):
    path = write(tmp_path, "[onec]\npassword = pw\n", mode=0o644)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_settings(path)
    assert any("chmod 600" in str(w.message) for w in caught)


def test_given_a_bad_1c_name_when_loaded_then_the_error_names_the_section_and_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "[onec_names]\nbase_ref_mode = triple\n"))
    assert "[onec_names] base_ref_mode" in str(err.value)
    assert "composite, single" in str(err.value)


def test_given_the_shipped_example_when_compared_with_the_settings_then_every_key_is_documented():
    import configparser
    from dataclasses import fields

    from amo1c_sync.config import _SECTIONS

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(ROOT / "sync.ini", encoding="utf-8")
    for section, factory in _SECTIONS.items():
        expected = {f.name for f in fields(factory())
                    if "moved_to" not in f.metadata and not f.metadata.get("internal")}
        assert set(parser.options(section)) == expected, section


def test_given_an_empty_credential_file_when_loaded_then_the_file_value_stays(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "onec_password").write_text("")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    s = load_settings(write(tmp_path, "[onec]\npassword = from-file\n"))
    assert s.onec.password == "from-file"
