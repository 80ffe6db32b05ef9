"""The amoCRM resolution tables: what the transport does about each answer of the API
(``API``) and of the OAuth token endpoint (``TOKEN``). See docs/request-path.md."""

from __future__ import annotations

import requests

from amo1c_sync.transport import Action, Resolution, ResolutionTable

__all__ = ["API", "TOKEN", "Action", "RESPONSE_ACTIONS", "TOKEN_ACTIONS", "classify"]

BLOCK_HINT = ("wait for the block to end; make sure nothing else uses this integration's token "
              "and [amocrm] rate_limit <= 7")

R = Resolution

# status -> row. Anything not listed falls back to its class (``_api_default``).
RESPONSE_ACTIONS: dict[int, Resolution] = {
    200: R(Action.OK, "ok"),
    201: R(Action.OK, "created"),
    202: R(Action.OK, "accepted"),
    204: R(Action.IGNORE, "no content"),
    400: R(Action.FAIL, "request rejected by validation"),
    401: R(Action.REFRESH, "access token expired or invalid"),
    402: R(Action.COOLDOWN, "the amoCRM account is not paid (402)",
           hint="pay the amoCRM account; amoCRM work resumes after the cooldown"),
    403: R(Action.COOLDOWN, "amoCRM blocked the integration or the IP (403), usually after too "
                            "many requests", hint=BLOCK_HINT),
    404: R(Action.FAIL, "not found"),
    405: R(Action.FAIL, "method not allowed"),
    408: R(Action.RETRY, "request timeout"),
    409: R(Action.RETRY, "conflict"),
    # 429 and 503 refuse a request before acting on it (as at the token endpoint), so a POST
    # may be sent again; after any other answer it may have been carried out
    429: R(Action.RETRY, "rate limit exceeded (429)", acted=False),
    500: R(Action.RETRY, "amoCRM internal error"),
    502: R(Action.RETRY, "bad gateway"),
    503: R(Action.RETRY, "service unavailable", acted=False),
    504: R(Action.RETRY, "gateway timeout"),
}


def _api_default(status: int) -> Resolution:
    if 200 <= status < 300:
        return R(Action.OK, "ok")
    if 500 <= status < 600:
        return R(Action.RETRY, f"server error {status}")
    return R(Action.FAIL, f"client error {status}")


# requests' exceptions: timeouts and dropped or refused connections are passing faults
_EXCEPTIONS = ((requests.RequestException, R(Action.RETRY, "no answer")),)

API = ResolutionTable(origin="http", statuses=RESPONSE_ACTIONS, default=_api_default,
                      exceptions=_EXCEPTIONS)


def classify(status: int) -> tuple[Action, str]:
    """(action, why) of an API answer with this status."""
    row = API.for_status(status)
    return row.action, row.why


# The token endpoint. A refresh token is single-use and the answer holds the only copy of the new
# one, so nothing here is retried by the transport; the rows tell TokenManager what became of the
# grant: OK the pair is in the body; RETRY amoCRM surely did not act on it (send it again later);
# FAIL it refused the grant; FATAL the answer is lost and the grant may be spent (never resend).
TOKEN_ACTIONS: dict[int, Resolution] = {
    200: R(Action.OK, "token pair issued"),
    400: R(Action.FAIL, "grant refused"),
    401: R(Action.FAIL, "grant refused"),
    403: R(Action.FAIL, "grant refused"),
    429: R(Action.RETRY, "rate limit exceeded (429), not acted on", acted=False),
    503: R(Action.RETRY, "service unavailable (503), not acted on", acted=False),
}


def _token_default(status: int) -> Resolution:
    return R(Action.FATAL, f"amoCRM token endpoint answered {status}")


TOKEN = ResolutionTable(origin="http", statuses=TOKEN_ACTIONS, default=_token_default,
                        exceptions=((requests.RequestException, R(Action.FATAL, "no answer")),))
