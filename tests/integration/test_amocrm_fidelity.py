"""amoCRM as it really answers, each behaviour with its source, over HTTP against the emulator."""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests

from amo1c_sync.amocrm import AmoCRM, gateway
from amo1c_sync.amocrm.auth import TokenManager
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator


@pytest.fixture
def emu():
    with AmoCRMEmulator(rate_limit=1000) as e:
        yield e


@pytest.fixture
def http(emu):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {emu.issue_long_lived_token()}"
    yield s
    s.close()


def jwt_part(token: str, i: int) -> dict:
    part = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_given_a_code_exchange_when_tokens_are_issued_then_the_access_token_is_a_jwt_with_amocrms_claims(emu):
    # the claims of a real amoCRM access token (yosytone/roistat_task, src/config.php)
    code = emu.new_auth_code()
    before = int(time.time())
    pair = requests.post(f"{emu.url}/oauth2/access_token", json={**code, "grant_type": "authorization_code"},
                         timeout=5).json()

    token = pair["access_token"]
    assert token.count(".") == 2
    assert jwt_part(token, 0) == {"typ": "JWT", "alg": "RS256", "jti": jwt_part(token, 1)["jti"]}
    claims = jwt_part(token, 1)
    assert {"aud", "jti", "iat", "nbf", "exp", "sub", "account_id", "base_domain", "scopes",
            "api_domain"} <= set(claims)
    assert claims["aud"] == emu.client_id
    assert claims["account_id"] == emu.account_id
    assert before <= claims["iat"]
    assert claims["exp"] == claims["iat"] + pair["expires_in"]
    assert pair["refresh_token"].startswith("def502")
    assert pair["refresh_token"].count(".") == 0
    r = requests.get(f"{emu.url}/api/v4/account", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert r.status_code == 200


def test_given_limit_above_250_when_listing_then_the_page_holds_250_and_is_not_refused(emu, http):
    # "limit … (Максимум – 250)": https://www.amocrm.ru/developers/content/crm_platform/leads-api;
    # a larger limit is capped (amocrm/amocrm-api-php#210, the maintainer's answer)
    for i in range(260):
        emu.create_lead(f"Сделка {i}")

    r = http.get(f"{emu.url}/api/v4/leads", params={"limit": 500}, timeout=5)

    assert r.status_code == 200
    assert len(r.json()["_embedded"]["leads"]) == 250
    assert "next" in r.json()["_links"]


def test_given_the_account_when_read_then_the_time_zone_is_only_in_embedded_datetime_settings(emu, http):
    # https://developers.kommo.com/reference/account-parameters ("with" = datetime_settings);
    # keys as in amocrm/amocrm-api-php src/AmoCRM/Models/AccountSettings/DateTimeSettings.php
    plain = http.get(f"{emu.url}/api/v4/account", timeout=5).json()
    full = http.get(f"{emu.url}/api/v4/account", params={"with": "datetime_settings"}, timeout=5).json()

    assert "timezone" not in plain
    assert "_embedded" not in plain
    settings = full["_embedded"]["datetime_settings"]
    assert settings["timezone"] == "Europe/Moscow"
    assert settings["timezone_offset"] == "+03:00"
    assert {"date_pattern", "short_date_pattern", "short_time_pattern", "time_format"} <= set(settings)


def test_given_an_account_in_another_zone_when_the_gateway_asks_then_it_reads_datetime_settings():
    with AmoCRMEmulator(rate_limit=1000, timezone="Asia/Yekaterinburg") as emu:
        tokens = TokenManager(None, base_url=emu.url, long_lived_token=emu.issue_long_lived_token())
        api = AmoCRM(emu.url, token_manager=tokens)
        assert api.account_timezone() == "Asia/Yekaterinburg"
        assert "GET /api/v4/account" in emu.requests()["counts"]
        [entry] = emu.requests()["log"]
        assert "with=datetime_settings" in entry["target"]
    assert gateway.account_timezone({"timezone": "Europe/Moscow"}) is None  # not the invented key


def test_given_one_patch_of_many_leads_when_written_then_they_share_one_updated_at_second(emu, http):
    # a batch is one write: amoCRM stamps its leads with one unix second (updated_at is an int
    # unix timestamp: https://www.amocrm.ru/developers/content/crm_platform/leads-api)
    ids = [emu.create_lead(f"Сделка {i}") for i in range(30)]

    r = http.patch(f"{emu.url}/api/v4/leads", json=[{"id": i, "price": 5} for i in ids], timeout=5)

    stamps = {lead["updated_at"] for lead in r.json()["_embedded"]["leads"]}
    assert len(stamps) == 1
    assert abs(stamps.pop() - time.time()) <= 2
    assert {emu.lead(i)["updated_at"] for i in ids} == {r.json()["_embedded"]["leads"][0]["updated_at"]}
