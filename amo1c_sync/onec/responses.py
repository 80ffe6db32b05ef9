"""The 1C OData resolution table: what the transport does about each answer of the standard
OData interface and each failure to get one. See docs/request-path.md."""

from __future__ import annotations

import json

import requests

from amo1c_sync.textutil import looks_like_markup, plain_text
from amo1c_sync.transport import Action, Exchange, Resolution, ResolutionTable

__all__ = ["ODATA", "ODATA_ACTIONS", "BASE_URL_HINT", "odata_error"]

BASE_URL_HINT = ("check that [onec] base_url points at the 1C publication and that the standard OData "
                 "interface is published there")
LOGIN_HINT = "fix [onec] username/password or the user's rights in 1C"

R = Resolution

# status -> row; ``why`` of a FATAL row is added to 1C's own words in the message
ODATA_ACTIONS: dict[int, Resolution] = {
    401: R(Action.FATAL, "check the 1C user name and password and its rights", hint=LOGIN_HINT),
    403: R(Action.FATAL, "check the 1C user name and password and its rights", hint=LOGIN_HINT),
    408: R(Action.RETRY, "request timeout"),
    429: R(Action.RETRY, "too many requests"),
}


def _odata_default(status: int) -> Resolution:
    if 200 <= status < 300:
        return R(Action.OK, "ok")
    if status >= 500:
        return R(Action.RETRY, f"server error {status}")
    return R(Action.FAIL, f"client error {status}")


# exceptions, first match wins; ``why`` is the message's template
_EXCEPTIONS: tuple[tuple[type[BaseException], Resolution], ...] = (
    (requests.exceptions.ConnectTimeout,
     R(Action.RETRY, "1C did not accept a connection in {connect} s: {what}")),
    (requests.exceptions.ReadTimeout, R(Action.RETRY, "1C did not answer in {read} s: {what}")),
    (requests.exceptions.ConnectionError, R(Action.RETRY, "1C {connection} the connection: {what}")),
    (requests.RequestException, R(Action.RETRY, "1C request failed ({exc}): {what}")),
)


def odata_error(resp: requests.Response) -> tuple[str | None, str]:
    """(1C's error code, message) from an ``odata.error`` body; for any other body (a web server's
    HTML page, plain text) its readable text, short and on one line, with a hint when it is a page."""
    try:
        body = json.loads(resp.content.decode("utf-8"))
        err = body.get("odata.error") or body.get("error")
        msg = err.get("message")
        text = msg.get("value") if isinstance(msg, dict) else msg
        return (str(err.get("code")) if err.get("code") is not None else None), str(text)
    except Exception:  # noqa: BLE001 - any other body is shown as text
        return None, _not_odata(resp)


def _not_odata(resp: requests.Response) -> str:
    """A body that is not 1C's JSON, as a short line: the page's text without tags."""
    raw = resp.content.decode("utf-8", "replace")
    text = plain_text(raw, 200) or resp.reason or f"HTTP {resp.status_code}"
    if not looks_like_markup(raw):
        return text
    if 400 <= resp.status_code < 500 and resp.status_code not in (401, 403, 408, 429):
        # a page where the OData service should be: a login page, a wrong path
        return f"a web page, not 1C's answer: «{text}»; {BASE_URL_HINT}"
    return f"a web page, not 1C's answer: «{text}»"


def _code_of(resp: requests.Response) -> str:
    code, _ = odata_error(resp)
    return f"1c:{code}" if code is not None else f"http:{resp.status_code}"


def _refine(row: Resolution, what: str, resp: requests.Response) -> Resolution:
    """1C refusing to (un)post a document answers 500 with its own error code: retrying will not
    help, so the document fails."""
    if (resp.status_code == 500 and row.action is Action.RETRY
            and what.split("?")[0].endswith(("/Post", "/Unpost")) and odata_error(resp)[0] is not None):
        return R(Action.FAIL, "1C refused to (un)post the document")
    return row


def _message(ex: Exchange) -> str:
    if ex.error is not None:
        return ex.resolution.why.format(
            what=ex.what, connect=ex.timeouts[0], read=ex.timeouts[1], exc=type(ex.error).__name__,
            connection="dropped" if ex.sent else "refused")
    assert ex.response is not None
    status = ex.response.status_code
    if 200 <= status < 300:   # a 2xx that the gateway's check found wanting: its words
        return ex.resolution.why
    detail = f"1C answered {status} to {ex.what}: {odata_error(ex.response)[1]}"
    return f"{detail} ({ex.resolution.why})" if ex.action is Action.FATAL else detail


ODATA = ResolutionTable(origin="1c", statuses=ODATA_ACTIONS, default=_odata_default,
                        exceptions=_EXCEPTIONS, code_of=_code_of, refine=_refine, message=_message)
