"""The request path (amo1c_sync.transport) and the three resolution tables, row by row, over a
fake adapter mounted on the Session: no socket."""

from __future__ import annotations

import io
import json
from contextlib import contextmanager

import pytest
import requests
import urllib3
from requests.adapters import BaseAdapter

from amo1c_sync.amocrm import responses as amo
from amo1c_sync.domain.retry import RequestRetry
from amo1c_sync.errors import FatalError, ItemError, RetriableError
from amo1c_sync.onec import responses as onec
from amo1c_sync.transport import Action, BearerAuth, Cooldown, Exchange, Resolution, Transport, was_sent

BASE = "http://fake.test"


class FakeAdapter(BaseAdapter):
    """Answers each request with the next scripted outcome: a status (with an optional JSON body)
    or an exception instance. Records every request that reached it."""

    def __init__(self, *outcomes):
        super().__init__()
        self.outcomes = list(outcomes)
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.sent.append(request)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        status, body = outcome if isinstance(outcome, tuple) else (outcome, {"ok": True})
        resp = requests.Response()
        resp.status_code, resp.request, resp.url = status, request, request.url
        resp.raw = io.BytesIO(json.dumps(body).encode() if body is not None else b"")
        resp.headers["Content-Type"] = "application/json"
        return resp

    def close(self):
        pass


def refused() -> requests.ConnectionError:
    reason = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", reason))  # type: ignore[arg-type]


class Limiter:
    def __init__(self):
        self.slots = 0

    @contextmanager
    def slot(self):
        self.slots += 1
        yield


def transport(adapter, table=amo.API, *, retries=3, **kwargs) -> tuple[Transport, list[float]]:
    session = requests.Session()
    session.mount(BASE, adapter)
    sleeps: list[float] = []
    t = Transport(system="amocrm", label="amoCRM", base_url=BASE, table=table, session=session,
                  policy=RequestRetry(retries=retries, backoff_base=0.5, backoff_max=1.5, jitter=False),
                  sleep=sleeps.append, **kwargs)
    return t, sleeps


def odata_body(code, message="bad"):
    return {"odata.error": {"code": code, "message": {"lang": "ru", "value": message}}}


def answer(status, body=None, method="GET", url=BASE + "/x") -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.raw = io.BytesIO(json.dumps(body).encode() if body is not None else b"")
    resp.request = requests.Request(method, url).prepare()
    return resp


# ---------------------------------------------------------------------------- the tables
AMO_ROWS = {200: Action.OK, 201: Action.OK, 202: Action.OK, 204: Action.IGNORE, 400: Action.FAIL,
            401: Action.REFRESH, 402: Action.COOLDOWN, 403: Action.COOLDOWN, 404: Action.FAIL,
            405: Action.FAIL, 408: Action.RETRY, 409: Action.RETRY, 429: Action.RETRY,
            500: Action.RETRY, 502: Action.RETRY, 503: Action.RETRY, 504: Action.RETRY}


def test_given_the_amocrm_api_table_when_read_then_each_row_has_its_action_and_only_429_503_are_unacted():
    assert {s: row.action for s, row in amo.RESPONSE_ACTIONS.items()} == AMO_ROWS
    assert [s for s, row in amo.RESPONSE_ACTIONS.items() if not row.acted] == [429, 503]
    assert all(row.hint for row in amo.RESPONSE_ACTIONS.values() if row.action is Action.COOLDOWN)


@pytest.mark.parametrize(("status", "action"), [(207, Action.OK), (418, Action.FAIL), (451, Action.FAIL),
                                                (501, Action.RETRY), (599, Action.RETRY)])
def test_given_an_unlisted_amocrm_status_when_resolved_then_its_class_decides(status, action):
    assert amo.API.for_status(status).action is action


def test_given_any_requests_exception_when_the_amocrm_api_resolves_it_then_it_is_retried():
    for exc in (requests.ReadTimeout(), requests.ConnectTimeout(), refused(), requests.ConnectionError()):
        assert amo.API.for_exception(exc).action is Action.RETRY


@pytest.mark.parametrize(("status", "action"), [(200, Action.OK), (400, Action.FAIL), (401, Action.FAIL),
                                                (403, Action.FAIL), (429, Action.RETRY), (503, Action.RETRY),
                                                (500, Action.FATAL), (502, Action.FATAL), (504, Action.FATAL),
                                                (201, Action.FATAL)])
def test_given_the_token_endpoint_table_when_a_status_is_resolved_then_a_lost_answer_is_fatal(status, action):
    assert amo.TOKEN.for_status(status).action is action
    assert amo.TOKEN.for_status(status).acted is (status not in (429, 503))


def test_given_a_token_request_that_failed_when_resolved_then_it_is_fatal_unless_it_never_left():
    table = amo.TOKEN
    assert table.for_exception(requests.ReadTimeout()).action is Action.FATAL
    ex = Exchange("amocrm-token", "POST", "POST /oauth2/access_token",
                  table.for_exception(refused()), error=refused())
    assert ex.sent is False


@pytest.mark.parametrize(("status", "action"), [(200, Action.OK), (201, Action.OK), (204, Action.OK),
                                                (400, Action.FAIL), (404, Action.FAIL), (406, Action.FAIL),
                                                (401, Action.FATAL), (403, Action.FATAL), (408, Action.RETRY),
                                                (429, Action.RETRY), (500, Action.RETRY), (502, Action.RETRY),
                                                (503, Action.RETRY)])
def test_given_the_1c_table_when_a_status_is_resolved_then_each_row_has_its_action(status, action):
    assert onec.ODATA.for_status(status).action is action


def test_given_a_1c_refusal_when_coded_then_the_code_carries_its_origin():
    assert onec.ODATA.code_of(answer(400, odata_body(14))) == "1c:14"
    assert onec.ODATA.code_of(answer(404, None)) == "http:404"
    assert amo.API.code_of(answer(400, {})) == "http:400"


def test_given_a_500_to_a_post_with_1cs_own_code_when_resolved_then_the_document_fails():
    what = "POST /base/odata/standard.odata/Document_Заявка(guid'x')/Post?PostingModeOperational=false"
    assert onec.ODATA.for_response(what, answer(500, odata_body(7))).action is Action.FAIL
    assert onec.ODATA.for_response(what, answer(500, {"x": 1})).action is Action.RETRY
    assert onec.ODATA.for_response("GET /Catalog_Клиенты", answer(500, odata_body(7))).action is Action.RETRY


@pytest.mark.parametrize(("exc", "text"), [
    (requests.ConnectTimeout(), "1C did not accept a connection in 5 s: GET /x"),
    (requests.ReadTimeout(), "1C did not answer in 60 s: GET /x"),
    (refused(), "1C refused the connection: GET /x"),
    (requests.ConnectionError(), "1C dropped the connection: GET /x"),
    (requests.exceptions.InvalidURL(), "1C request failed (InvalidURL): GET /x")])
def test_given_a_1c_request_that_failed_when_resolved_then_it_is_retried_with_a_message_saying_how(exc, text):
    row = onec.ODATA.for_exception(exc)
    assert row.action is Action.RETRY
    ex = Exchange("1c", "GET", "GET /x", row, error=exc, timeouts=(5, 60))
    assert onec.ODATA.message(ex) == text


def test_given_a_1c_login_refused_when_the_message_is_made_then_it_quotes_1c_and_says_what_to_check():
    ex = Exchange("1c", "GET", "GET /x", onec.ODATA.for_status(401), response=answer(401, odata_body(1, "нет")))
    assert onec.ODATA.message(ex) == ("1C answered 401 to GET /x: нет "
                                      "(check the 1C user name and password and its rights)")


# ---------------------------------------------------------------------------- was it sent
def test_given_each_kind_of_failure_when_asked_whether_it_was_sent_then_only_a_refusal_or_connect_timeout_was_not():
    assert was_sent(requests.ConnectTimeout()) is False
    assert was_sent(refused()) is False
    assert was_sent(requests.ConnectionError(ConnectionRefusedError())) is False
    assert was_sent(requests.ReadTimeout()) is True
    assert was_sent(requests.ConnectionError("Connection aborted.")) is True


# ---------------------------------------------------------------------------- the transport
def test_given_two_503s_when_getting_then_it_retries_with_the_policys_backoff_and_succeeds():
    adapter = FakeAdapter(503, 503, 200)
    t, sleeps = transport(adapter)
    assert t.request("GET", "/api/v4/account").action is Action.OK
    assert len(adapter.sent) == 3
    assert sleeps == [t.policy.delay(1), t.policy.delay(2)] == [0.5, 1.0]


def test_given_a_server_that_stays_down_when_getting_then_retries_plus_one_tries_and_retriable_error():
    adapter = FakeAdapter(503)
    t, sleeps = transport(adapter, retries=3)
    with pytest.raises(RetriableError, match="service unavailable"):
        t.request("GET", "/api/v4/account")
    assert len(adapter.sent) == 4
    assert sleeps == [0.5, 1.0, 1.5]


def test_given_fail_fast_when_a_503_comes_then_it_raises_at_once_with_no_sleep():
    adapter = FakeAdapter(503, 200)
    t, sleeps = transport(adapter)
    with t.fail_fast(), pytest.raises(RetriableError, match="service unavailable"):
        t.request("GET", "/api/v4/account")
    assert (len(adapter.sent), sleeps) == (1, [])
    assert t.request("GET", "/api/v4/account").action is Action.OK   # outside: retried as before


def test_given_fail_fast_in_one_thread_when_another_thread_requests_then_the_other_still_retries():
    import threading

    adapter = FakeAdapter(503, 503, 200)
    t, sleeps = transport(adapter)
    out = []
    with t.fail_fast():
        other = threading.Thread(target=lambda: out.append(t.request("GET", "/api/v4/account").action))
        other.start()
        other.join(timeout=10)
    assert out == [Action.OK]
    assert sleeps == [0.5, 1.0]


def test_given_fail_fast_when_a_401_comes_then_the_refresh_still_happens():
    adapter = FakeAdapter(401, 200)
    refreshed = []
    t, _ = transport(adapter, refresh=refreshed.append)
    with t.fail_fast():
        assert t.request("GET", "/api/v4/account").action is Action.OK
    assert len(refreshed) == 1


def test_given_a_post_whose_answer_was_lost_when_sent_then_it_is_not_sent_again():
    adapter = FakeAdapter(requests.ReadTimeout(), 200)
    t, _ = transport(adapter)
    with pytest.raises(RetriableError):
        t.request("POST", "/api/v4/leads/notes", json=[{}])
    assert len(adapter.sent) == 1


def test_given_a_post_that_5xx_when_sent_then_it_is_not_sent_again():
    adapter = FakeAdapter(500, 200)
    t, _ = transport(adapter)
    with pytest.raises(RetriableError):
        t.request("POST", "/api/v4/leads/notes", json=[{}])
    assert len(adapter.sent) == 1


@pytest.mark.parametrize("first", [refused(), requests.ConnectTimeout(), 429, 503])
def test_given_a_post_that_surely_never_got_acted_on_when_sent_then_it_is_retried(first):
    adapter = FakeAdapter(first, 201)
    t, _ = transport(adapter)
    assert t.request("POST", "/api/v4/leads/notes", json=[{}]).action is Action.OK
    assert len(adapter.sent) == 2


def test_given_an_idempotent_post_when_its_answer_is_lost_then_it_is_retried():
    adapter = FakeAdapter(requests.ReadTimeout(), 200)
    t, _ = transport(adapter, table=onec.ODATA)
    assert t.request("POST", "/Document(guid'x')/Post", idempotent=True).action is Action.OK
    assert len(adapter.sent) == 2


def test_given_no_retry_when_a_get_fails_then_it_is_tried_once():
    adapter = FakeAdapter(503, 200)
    t, _ = transport(adapter)
    with pytest.raises(RetriableError):
        t.request("GET", "/api/v4/account", retry=False)
    assert len(adapter.sent) == 1


def test_given_a_401_when_requesting_then_the_auth_hook_refreshes_once_and_the_new_token_is_sent():
    tokens = iter(["old", "new"])
    current = {"token": next(tokens)}
    refreshed: list[str | None] = []

    def refresh(ex: Exchange) -> None:
        refreshed.append(BearerAuth.token_of(ex.response))
        current["token"] = next(tokens)

    adapter = FakeAdapter(401, 200)
    t, _ = transport(adapter, refresh=refresh)
    t.session.auth = BearerAuth(lambda: current["token"])
    assert t.request("GET", "/api/v4/account").action is Action.OK
    assert refreshed == ["old"]
    assert [r.headers["Authorization"] for r in adapter.sent] == ["Bearer old", "Bearer new"]
    assert "new" not in repr(t.session.auth)


def test_given_401_even_after_a_refresh_when_requesting_then_fatal_error_with_the_refresh_hint():
    adapter = FakeAdapter(401)
    t, _ = transport(adapter, refresh=lambda ex: None, refresh_hint="re-authorise")
    with pytest.raises(FatalError) as exc:
        t.request("GET", "/api/v4/account")
    assert exc.value.action == "re-authorise"
    assert len(adapter.sent) == 2


def test_given_a_403_when_requesting_then_the_transport_cools_down_and_sends_nothing_until_it_ends():
    now = {"t": 100.0}
    adapter = FakeAdapter(403, 200)
    t, _ = transport(adapter, cooldown=Cooldown(clock=lambda: now["t"]), cooldown_seconds=900)
    with pytest.raises(FatalError, match="403") as exc:
        t.request("GET", "/api/v4/account")
    assert exc.value.action == amo.BLOCK_HINT
    with pytest.raises(FatalError, match="another 900 s"):
        t.request("GET", "/api/v4/leads")
    assert len(adapter.sent) == 1
    other, _ = transport(FakeAdapter(200))
    assert other.request("GET", "/api/v4/account").action is Action.OK   # per transport
    now["t"] += 901
    assert t.request("GET", "/api/v4/leads").action is Action.OK


def test_given_a_refused_item_when_raise_fail_then_item_error_with_its_origin_code():
    t, _ = transport(FakeAdapter((400, odata_body(14, "Неверный фильтр"))), table=onec.ODATA)
    with pytest.raises(ItemError) as exc:
        t.request("GET", "/Catalog_X?$filter=bad", raise_fail=True)
    assert exc.value.code == "1c:14"
    assert "Неверный фильтр" in str(exc.value)
    t, _ = transport(FakeAdapter((400, {"title": "Bad"})))
    assert t.request("GET", "/api/v4/leads").action is Action.FAIL   # the caller reads the body


def test_given_a_hook_and_a_limiter_when_requests_go_out_then_each_try_takes_a_slot_and_is_reported():
    seen = []
    limiter = Limiter()
    adapter = FakeAdapter(requests.ReadTimeout(), 503, 200)
    t, _ = transport(adapter, rate_limiter=limiter, on_response=lambda *a: seen.append(a))
    t.request("GET", "/api/v4/leads?page=2")
    assert limiter.slots == 3
    assert [a[:4] for a in seen] == [("amocrm", "GET", "/api/v4/leads", "error"),
                                     ("amocrm", "GET", "/api/v4/leads", "503"),
                                     ("amocrm", "GET", "/api/v4/leads", "200")]
    assert all(a[4] >= 0 for a in seen)


def test_given_a_hook_that_raises_when_a_request_goes_out_then_the_request_still_succeeds():
    def broken(*a):
        raise RuntimeError("metrics down")

    t, _ = transport(FakeAdapter(200), on_response=broken)
    assert t.request("GET", "/api/v4/account").action is Action.OK


def test_given_credentials_that_cannot_be_had_when_requesting_then_it_is_retried_without_sending():
    calls = {"n": 0}

    def token():
        calls["n"] += 1
        if calls["n"] == 1:
            raise RetriableError("another process is refreshing")
        return "tok"

    adapter = FakeAdapter(200)
    t, _ = transport(adapter)
    t.session.auth = BearerAuth(token)
    assert t.request("POST", "/api/v4/leads/notes", json=[{}]).action is Action.OK
    assert len(adapter.sent) == 1


def test_given_a_check_that_rejects_a_2xx_when_getting_then_it_is_retried():
    adapter = FakeAdapter(200)
    t, _ = transport(adapter, table=onec.ODATA, retries=1)
    not_json = Resolution(Action.RETRY, "1C answered 200 with a body that is not JSON")

    with pytest.raises(RetriableError, match="not JSON"):
        t.request("GET", "/Catalog_X", check=lambda ex: not_json)
    assert len(adapter.sent) == 2


# ---------------------------------------------------------------------------- where the numbers come from
def test_given_a_retry_section_when_the_gateways_are_built_then_their_transports_use_its_request_numbers(tmp_path):
    from amo1c_sync import amocrm
    from amo1c_sync import onec as onec_side
    from amo1c_sync.config import load_settings

    ini = tmp_path / "sync.ini"
    ini.write_text("[amocrm]\nbase_url = http://amo.test\nlong_lived_token = t\n"
                   "[onec]\nbase_url = http://1c.test/base\nusername = u\n"
                   "[retry]\nrequest_retries = 2\nrequest_backoff_base = 250ms\n"
                   "request_backoff_max = 4s\nrequest_jitter = no\n", encoding="utf-8")
    ini.chmod(0o600)
    settings = load_settings(ini)
    wanted = RequestRetry(retries=2, backoff_base=0.25, backoff_max=4, jitter=False)
    assert onec_side.from_settings(settings).transport.policy == wanted
    assert amocrm.from_settings(settings, store=None).transport.policy == wanted
