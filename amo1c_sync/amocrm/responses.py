"""The ONE table that maps an amoCRM response to what the client does about it."""

from __future__ import annotations

import enum


class Action(enum.Enum):
    OK = "ok"                  # use the body
    EMPTY = "empty"            # 204: nothing there (end of a list, unknown entity)
    RETRY = "retry"            # passing fault: back off (capped exponential, jitter) and retry
    REFRESH_AUTH = "refresh"   # 401: refresh the access token once, then retry
    FAIL_ITEM = "fail_item"    # this request's items are bad (400 validation, 404): record, go on
    STOP = "stop"              # 403 block / 402 unpaid account: stop amoCRM work, alert a person


# status -> (action, why). Anything not listed falls back to its class below.
RESPONSE_ACTIONS: dict[int, tuple[Action, str]] = {
    200: (Action.OK, "ok"),
    201: (Action.OK, "created"),
    202: (Action.OK, "accepted"),
    204: (Action.EMPTY, "no content"),
    400: (Action.FAIL_ITEM, "request rejected by validation"),
    401: (Action.REFRESH_AUTH, "access token expired or invalid"),
    402: (Action.STOP, "the amoCRM account is not paid (402)"),
    403: (Action.STOP, "amoCRM blocked the integration or the IP (403), usually after too many requests"),
    404: (Action.FAIL_ITEM, "not found"),
    405: (Action.FAIL_ITEM, "method not allowed"),
    408: (Action.RETRY, "request timeout"),
    409: (Action.RETRY, "conflict"),
    429: (Action.RETRY, "rate limit exceeded (429)"),
    500: (Action.RETRY, "amoCRM internal error"),
    502: (Action.RETRY, "bad gateway"),
    503: (Action.RETRY, "service unavailable"),
    504: (Action.RETRY, "gateway timeout"),
}

# requests' exceptions (connection refused/reset/dropped, timeouts) -> RETRY; see gateway.
TRANSPORT_ERROR_ACTION = Action.RETRY


def classify(status: int) -> tuple[Action, str]:
    if status in RESPONSE_ACTIONS:
        return RESPONSE_ACTIONS[status]
    if 200 <= status < 300:
        return Action.OK, "ok"
    if 500 <= status < 600:
        return Action.RETRY, f"server error {status}"
    return Action.FAIL_ITEM, f"client error {status}"
