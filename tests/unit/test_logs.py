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
    assert event["password"] == "***" and event["access_token"] == "***" and event["user"] == "admin"


def test_given_an_exception_with_a_secret_when_logged_then_the_traceback_is_masked():
    logs.register_secret("pw-in-exception-1234")
    buf, log = _capture("console")
    try:
        raise RuntimeError("login failed for pw-in-exception-1234")
    except RuntimeError:
        log.exception("boom")
    out = buf.getvalue()
    assert "boom" in out and "RuntimeError" in out
    assert "pw-in-exception-1234" not in out


def test_given_a_bearer_header_when_logged_then_it_is_masked():
    buf, log = _capture()
    log.info("req", header="Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload")
    assert "eyJhbGci" not in buf.getvalue()
