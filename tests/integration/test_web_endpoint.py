"""The daemon's HTTP endpoint for the widget (issue 8): served by waitress on loopback, driven over
real HTTP. The slot finder is a small fake here; tests/browser runs it over the 1C emulator."""

from __future__ import annotations

import io
import json
from datetime import date, time

import pytest
import requests
import structlog

from amo1c_sync import logs
from amo1c_sync.config import load_settings
from amo1c_sync.domain.slots import UnknownDoctor
from amo1c_sync.errors import ConfigError, RetriableError
from amo1c_sync.web import create_app, serve

SECRET = "widget-secret-9f2c!1234"
AMO_ORIGIN = "https://clinic.amocrm.ru"


class FakeSlots:
    def __init__(self):
        self.calls = []
        self.explode = None

    def doctors(self, day: date) -> list[str]:
        self.calls.append(("doctors", day))
        if self.explode:
            raise self.explode
        return ["Ефимова Е.В.", "Ишаева М.И."] if day == date(2021, 12, 22) else []

    def free_times(self, day: date, doctor: str) -> list[time]:
        self.calls.append(("free_times", day, doctor))
        if self.explode:
            raise self.explode
        if doctor not in ("Ефимова Е.В.", "Ишаева М.И."):
            return UnknownDoctor(doctor=doctor, day=day, working=("Ефимова Е.В.", "Ишаева М.И."))
        return [time(8, 15), time(8, 20), time(9, 5), time(12, 45)]


def make_settings(**http):
    values = {"secret": SECRET, **http}
    return load_settings(overrides={"amocrm": {"base_url": AMO_ORIGIN + "/"}, "http": values})


@pytest.fixture
def slots():
    return FakeSlots()


@pytest.fixture
def nudges():
    return []


@pytest.fixture
def server(slots, nudges):
    app = create_app(make_settings(), slot_finder=slots, nudge=nudges.append)
    srv = serve(app, "127.0.0.1", 0)
    yield srv
    srv.close()


def get(server, path, *, secret=SECRET, origin=None, **kw):
    headers = kw.pop("headers", {})
    if secret is not None:
        headers["X-Amo1c-Secret"] = secret
    if origin:
        headers["Origin"] = origin
    return requests.get(server.url + path, headers=headers, timeout=10, **kw)


# ---------------------------------------------------------------- slots


@pytest.mark.parametrize("value", ["2021-12-22", "22.12.2021"])
def test_given_a_date_in_either_format_when_get_slots_then_the_doctors_of_that_day(server, value):
    r = get(server, f"/slots?date={value}")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"date": "2021-12-22", "doctors": ["Ефимова Е.В.", "Ишаева М.И."]}


def test_given_a_doctor_when_get_slots_then_free_times_as_the_card_shows_them(server):
    r = get(server, "/slots", params={"date": "22.12.2021", "doctor": "Ефимова Е.В."})
    assert r.status_code == 200
    body = r.json()
    assert body["doctor"] == "Ефимова Е.В."
    assert body["times"][:2] == ["8:15", "8:20"]
    assert "9:05" in body["times"]


@pytest.mark.parametrize("value", ["", "32.12.2021", "2021-13-01", "завтра", "22/12/2021"])
def test_given_a_bad_date_when_get_slots_then_400_with_a_clear_message(server, slots, value):
    r = get(server, "/slots", params={"date": value})
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "bad_date"
    assert "ДД.ММ.ГГГГ" in body["message"]
    assert "YYYY-MM-DD" in body["message"]
    assert slots.calls == []


def test_given_an_unknown_doctor_when_get_slots_then_400_with_the_finders_message(server):
    r = get(server, "/slots", params={"date": "22.12.2021", "doctor": "Иванов И.И."})
    assert r.status_code == 400
    assert r.json()["error"] == "unknown_doctor"
    assert "Иванов И.И." in r.json()["message"]


def test_given_an_internal_error_when_get_slots_then_500_generic_without_a_stack_trace(server, slots):
    log = io.StringIO()
    logs.configure("INFO", "json", stream=log)
    try:
        slots.explode = ZeroDivisionError("/srv/internal/path.py secret detail")
        r = get(server, "/slots?date=22.12.2021")
    finally:
        structlog.reset_defaults()
    assert r.status_code == 500
    assert set(r.json()) == {"error", "message"}
    assert "Traceback" not in r.text
    assert "ZeroDivisionError" not in r.text
    assert "secret detail" not in r.text
    assert "http.internal_error" in log.getvalue()  # logged for the administrator, with the cause
    assert "ZeroDivisionError" in log.getvalue()


def test_given_a_broken_log_stream_when_an_internal_error_then_still_a_json_500(server, slots):
    dead = io.StringIO()
    logs.configure("INFO", "json", stream=dead)
    dead.close()
    try:
        slots.explode = RuntimeError("boom")
        r = get(server, "/slots?date=22.12.2021")
    finally:
        structlog.reset_defaults()
    assert r.status_code == 500
    assert r.json()["error"] == "internal"


def test_given_1c_unreachable_when_get_slots_then_503_with_retry_after(server, slots):
    slots.explode = RetriableError("1C: timeout after 60 s")
    r = get(server, "/slots?date=22.12.2021")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "30"
    assert r.json()["error"] == "unavailable"


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x", SECRET[:-1]])
def test_given_no_or_a_wrong_secret_when_get_slots_then_401(server, slots, secret):
    r = get(server, "/slots?date=22.12.2021", secret=secret)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert "X-Amo1c-Secret" in r.json()["message"]
    assert slots.calls == []


def test_given_the_secret_in_the_query_string_when_get_slots_then_401(server):
    r = get(server, f"/slots?date=22.12.2021&secret={SECRET}", secret=None)
    assert r.status_code == 401


def test_given_no_secret_in_sync_ini_when_creating_the_app_then_config_error(slots):
    with pytest.raises(ConfigError, match="secret"):
        create_app(load_settings(), slot_finder=slots)


def test_given_a_secret_a_browser_cannot_send_when_creating_the_app_then_config_error(slots):
    with pytest.raises(ConfigError, match="ASCII"):
        create_app(make_settings(secret="секрет-клиники"), slot_finder=slots)


# ---------------------------------------------------------------- CORS


def test_given_the_amocrm_origin_when_get_slots_then_it_is_echoed(server):
    r = get(server, "/slots?date=22.12.2021", origin=AMO_ORIGIN)
    assert r.headers["Access-Control-Allow-Origin"] == AMO_ORIGIN
    assert "Origin" in r.headers["Vary"]


@pytest.mark.parametrize("origin", ["https://evil.example", "https://clinic.amocrm.ru.evil.example",
                                    "http://clinic.amocrm.ru", "null"])
def test_given_another_origin_when_get_slots_then_no_cors_header(server, origin):
    r = get(server, "/slots?date=22.12.2021", origin=origin)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_given_an_error_for_the_amocrm_origin_then_the_widget_can_read_it(server):
    r = get(server, "/slots?date=nope", origin=AMO_ORIGIN)
    assert r.status_code == 400
    assert r.headers["Access-Control-Allow-Origin"] == AMO_ORIGIN
    r = get(server, "/slots?date=22.12.2021", origin=AMO_ORIGIN, secret=None)
    assert r.status_code == 401
    assert r.headers["Access-Control-Allow-Origin"] == AMO_ORIGIN


def test_given_a_preflight_from_amocrm_then_204_allowing_the_secret_header(server):
    r = requests.options(server.url + "/slots?date=22.12.2021", timeout=10, headers={
        "Origin": AMO_ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-amo1c-secret",
        "Access-Control-Request-Private-Network": "true"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == AMO_ORIGIN
    assert "X-Amo1c-Secret" in r.headers["Access-Control-Allow-Headers"]
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Private-Network"] == "true"


def test_given_a_preflight_from_another_origin_then_nothing_is_allowed(server):
    r = requests.options(server.url + "/register", timeout=10, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Access-Control-Allow-Headers" not in r.headers


def test_given_allowed_origin_in_sync_ini_then_it_replaces_the_amocrm_one(slots):
    app = create_app(make_settings(allowed_origin="https://proxy.clinic.example"), slot_finder=slots)
    with serve(app) as srv:
        ok = get(srv, "/slots?date=22.12.2021", origin="https://proxy.clinic.example")
        other = get(srv, "/slots?date=22.12.2021", origin=AMO_ORIGIN)
    assert ok.headers["Access-Control-Allow-Origin"] == "https://proxy.clinic.example"
    assert "Access-Control-Allow-Origin" not in other.headers


# ---------------------------------------------------------------- register


def test_given_a_lead_when_post_register_then_202_and_the_registration_job_is_nudged(server, nudges):
    r = requests.post(server.url + "/register?lead_id=30000001", headers={"X-Amo1c-Secret": SECRET},
                      timeout=10)
    assert r.status_code == 202
    assert r.json()["lead_id"] == 30000001
    assert r.json()["accepted"] is True
    assert nudges == ["registration"]


def test_given_any_lead_when_post_register_then_the_answer_does_not_claim_it_was_queued(server, nudges):
    """The endpoint does not read the lead: an unflagged lead must not hear «поставлена в очередь»."""
    r = requests.post(server.url + "/register?lead_id=30000001", headers={"X-Amo1c-Secret": SECRET},
                      timeout=10)
    message = r.json()["message"]
    assert "очередь" not in message
    assert "Queued" not in message
    assert "если на ней отмечено «Зарегистрировать в 1С»" in message


def test_given_the_lead_id_in_a_json_body_when_post_register_then_202(server, nudges):
    r = requests.post(server.url + "/register", json={"lead_id": 7}, headers={"X-Amo1c-Secret": SECRET},
                      timeout=10)
    assert r.status_code == 202
    assert nudges == ["registration"]


@pytest.mark.parametrize("query", ["", "?lead_id=", "?lead_id=abc", "?lead_id=-5", "?lead_id=0"])
def test_given_a_bad_lead_id_when_post_register_then_400_and_no_nudge(server, nudges, query):
    r = requests.post(server.url + "/register" + query, headers={"X-Amo1c-Secret": SECRET}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"] == "bad_lead_id"
    assert nudges == []


def test_given_no_secret_when_post_register_then_401_and_no_nudge(server, nudges):
    r = requests.post(server.url + "/register?lead_id=1", timeout=10)
    assert r.status_code == 401
    assert nudges == []


def test_given_get_on_register_then_405_json(server):
    r = get(server, "/register?lead_id=1")
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"


# ---------------------------------------------------------------- health and metrics


def test_given_no_secret_when_get_healthz_and_metrics_then_they_answer(server):
    h = get(server, "/healthz", secret=None)
    assert h.status_code == 200
    assert h.json() == {"ok": True}
    m = get(server, "/metrics", secret=None)
    assert m.status_code == 200
    assert m.headers["Content-Type"].startswith("text/plain")


def test_given_a_store_where_no_job_ran_when_get_healthz_then_503_names_every_job(slots, sqlite_store):
    app = create_app(make_settings(), slot_finder=slots, store=sqlite_store)
    with serve(app) as srv:
        r = get(srv, "/healthz", secret=None)
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "stale"
    assert set(body["stale"]) == {"directory", "registration", "payments", "lifecycle"}
    assert "Traceback" not in r.text


def test_given_every_job_succeeded_just_now_when_get_healthz_then_200(slots, sqlite_store):
    from datetime import datetime, timedelta, timezone

    from amo1c_sync.store.models import JobRun

    now = datetime.now(timezone.utc)
    with sqlite_store.session() as s:
        for job in ("directory", "registration", "payments", "lifecycle"):
            s.add(JobRun(job=job, started_at=now - timedelta(seconds=2), finished_at=now, status="ok"))
    app = create_app(make_settings(), slot_finder=slots, store=sqlite_store)
    with serve(app) as srv:
        r = get(srv, "/healthz", secret=None)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"
    assert "stale" not in r.json()


def test_given_an_unknown_path_then_404_json(server):
    r = get(server, "/nope")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


# ---------------------------------------------------------------- the server


def test_given_a_running_server_when_closed_then_the_port_is_released(slots):
    import socket

    srv = serve(create_app(make_settings(), slot_finder=slots))
    session = requests.Session()  # a keep-alive connection must not hold the server open
    assert session.get(srv.url + "/healthz", timeout=10).status_code == 200
    port = srv.port
    srv.close()
    assert not srv._thread.is_alive()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    session.close()


def test_given_json_answers_then_cyrillic_is_utf8_not_escaped(server):
    r = get(server, "/slots?date=22.12.2021")
    assert "Ефимова".encode("utf-8") in r.content
    assert json.loads(r.content.decode("utf-8"))["doctors"][0] == "Ефимова Е.В."


def test_given_a_follower_instance_when_post_register_then_202_saying_the_next_poll_picks_it_up(slots):
    calls = []

    def follower_nudge(job):
        calls.append(job)
        return False  # Daemon.nudge on an instance that is not the leader

    app = create_app(make_settings(), slot_finder=slots, nudge=follower_nudge)
    with serve(app) as srv:
        r = requests.post(srv.url + "/register?lead_id=5", headers={"X-Amo1c-Secret": SECRET}, timeout=10)
    assert r.status_code == 202
    assert r.json()["nudged"] is False
    assert "следующей проверке" in r.json()["message"]
    assert calls == ["registration"]


def test_given_configured_field_names_when_get_fields_without_a_secret_then_the_widget_gets_them(slots):
    settings = load_settings(overrides={"amocrm": {"base_url": AMO_ORIGIN + "/"},
                                        "http": {"secret": SECRET}, "fields": {"doctor": "Доктор"}})
    srv = serve(create_app(settings, slot_finder=slots), "127.0.0.1", 0)
    try:
        r = get(srv, "/fields", secret=None, origin=AMO_ORIGIN)
    finally:
        srv.close()
    assert r.status_code == 200
    body = r.json()
    assert body["doctor"] == "Доктор"
    assert body["date"] == "Дата записи к врачу"
    assert body["sum"] == "Сумма1С"
    assert r.headers["Access-Control-Allow-Origin"] == AMO_ORIGIN
