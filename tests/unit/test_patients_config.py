"""[sync] phone_region: the country of a phone typed without its code."""

from __future__ import annotations

import pytest

from amo1c_sync.config import load_settings
from amo1c_sync.errors import ConfigError


def write(tmp_path, text: str):
    p = tmp_path / "sync.ini"
    p.write_text(text, encoding="utf-8")
    p.chmod(0o600)
    return p


def test_given_no_phone_region_when_loaded_then_russia(tmp_path):
    assert load_settings(write(tmp_path, "[sync]\n")).sync.phone_region == "RU"
    assert load_settings(write(tmp_path, "[sync]\nphone_region = KZ\n")).sync.phone_region == "KZ"


@pytest.mark.parametrize("value", ["Russia", "ru", "+7", "XX"])
def test_given_a_phone_region_that_is_no_region_code_when_loaded_then_error_names_key_and_valid_form(
        tmp_path, value):
    path = write(tmp_path, f"[sync]\nphone_region = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value) == (f'{path} [sync] phone_region: "{value}" is not a region code; use two '
                              "capital letters, e.g. RU, KZ or BY")
