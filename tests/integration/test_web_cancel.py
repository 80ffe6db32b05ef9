"""POST /cancel: the widget's «Отменить запись в 1С» nudges the registration job; GET /fields names
the checkbox (HTTP on loopback)."""

from __future__ import annotations

import requests

from amo1c_sync.config import load_settings
from amo1c_sync.web import create_app, serve

SECRET = "widget-secret-9f2c!1234"


def _settings(**fields):
    return load_settings(overrides={"amocrm": {"base_url": "https://clinic.amocrm.ru/"},
                                    "http": {"secret": SECRET}, "fields": fields})


def test_given_a_cancel_flag_when_post_cancel_then_202_and_the_registration_job_is_nudged():
    calls = []
    app = create_app(_settings(cancel_flag="Отменить запись в 1С"), slot_finder=None, nudge=calls.append)
    with serve(app) as srv:
        r = requests.post(srv.url + "/cancel?lead_id=7", headers={"X-Amo1c-Secret": SECRET}, timeout=10)
        fields = requests.get(srv.url + "/fields", timeout=10).json()
    assert r.status_code == 202
    assert r.json()["lead_id"] == 7
    assert r.json()["nudged"] is True
    assert calls == ["registration"]
    assert fields["cancel_flag"] == "Отменить запись в 1С"


def test_given_no_cancel_flag_configured_when_post_cancel_then_400_naming_the_key():
    app = create_app(_settings(), slot_finder=None, nudge=lambda job: True)
    with serve(app) as srv:
        r = requests.post(srv.url + "/cancel?lead_id=7", headers={"X-Amo1c-Secret": SECRET}, timeout=10)
        bad = requests.post(srv.url + "/cancel?lead_id=x", headers={"X-Amo1c-Secret": SECRET}, timeout=10)
        no_secret = requests.post(srv.url + "/cancel?lead_id=7", timeout=10)
    assert r.status_code == 400
    assert r.json()["error"] == "cancel_off"
    assert "[fields] cancel_flag" in r.json()["message"]
    assert bad.status_code == 400
    assert bad.json()["error"] == "bad_lead_id"
    assert no_secret.status_code == 401
