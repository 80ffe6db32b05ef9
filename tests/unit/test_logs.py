import io
import json

import structlog

from amo1c_sync import logs


def _capture(fmt="json"):
    buf = io.StringIO()
    logs.configure("DEBUG", fmt, stream=buf)
    return buf, structlog.get_logger("t")


def test_given_a_registered_token_when_logged_anywhere_then_it_is_masked():
    logs.register_secret("s3cr3t-refresh-token-value")
    buf, log = _capture()
    log.info("refreshing", detail="got s3cr3t-refresh-token-value back", nested={"x": ["s3cr3t-refresh-token-value"]})
    out = buf.getvalue()
    assert "s3cr3t-refresh-token-value" not in out
    event = json.loads(out.splitlines()[-1])
    assert event["detail"] == "got *** back"
    assert event["nested"] == {"x": ["***"]}


def test_given_secret_named_keys_when_logged_then_values_are_masked():
    buf, log = _capture()
    log.info("auth", password="hunter2x", access_token="abc.def.ghi", user="admin")
    event = json.loads(buf.getvalue().splitlines()[-1])
    assert event["password"] == "***"
    assert event["access_token"] == "***"
    assert event["user"] == "admin"


def test_given_an_exception_with_a_secret_when_logged_then_the_traceback_is_masked():
    logs.register_secret("pw-in-exception-1234")
    buf, log = _capture("console")
    try:
        raise RuntimeError("login failed for pw-in-exception-1234")
    except RuntimeError:
        log.exception("boom")
    out = buf.getvalue()
    assert "boom" in out
    assert "RuntimeError" in out
    assert "pw-in-exception-1234" not in out


def test_given_a_bearer_header_when_logged_then_it_is_masked():
    buf, log = _capture()
    log.info("req", header="Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload")
    assert "eyJhbGci" not in buf.getvalue()


def _connect_with(dsn):
    raise ConnectionError("server closed the connection")


def test_given_a_secret_in_a_local_variable_when_a_crash_is_logged_as_json_then_no_local_is_rendered():
    buf, log = _capture("json")
    try:
        _connect_with("postgresql://amo:unregistered-pw-5531@db.clinic/amo")
    except ConnectionError:
        log.exception("crash")
    out = buf.getvalue()
    event = json.loads(out.splitlines()[-1])
    assert event["exception"][0]["exc_type"] == "ConnectionError"
    assert all("locals" not in frame for frame in event["exception"][0]["frames"])
    assert "unregistered-pw-5531" not in out


def test_given_a_store_url_with_a_password_when_the_store_is_made_then_the_password_is_masked():
    from amo1c_sync.store import Store

    store = Store("postgresql+psycopg://amo:store-pw-8812@127.0.0.1:1/amo")
    buf, log = _capture()
    log.error("store.unreachable", url=store.url)
    store.dispose()
    assert "store-pw-8812" not in buf.getvalue()
