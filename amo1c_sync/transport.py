"""The one request path per external system: one ``Transport`` for amoCRM, one for 1C.

What happens to one request (``Transport.request``):

1. the 403 cooldown of this transport is checked (FatalError while it lasts);
2. the rate limiter (an injected collaborator) hands out a slot; the session's auth
   (``requests.auth.AuthBase``: Bearer for amoCRM, UTF-8 Basic for 1C) signs the request; it goes
   out with a (connect, read) timeout;
3. ``on_response(system, method, path, status, seconds)`` is told (status ``"error"`` when no
   answer came);
4. the answer or the exception is looked up in the system's resolution table (``amocrm/responses.py``,
   ``onec/responses.py``) and its action is carried out: OK / IGNORE return the response; FAIL
   returns it too (or raises ItemError with the table's ``origin:code``); REFRESH refreshes once
   through the auth hook and sends again; COOLDOWN starts the cooldown and raises FatalError;
   FATAL raises FatalError; RETRY waits (tenacity, the numbers of ``domain.retry.RequestRetry``)
   and sends again, up to ``retries`` more times, then raises RetriableError.

The "was it sent" rule: a non-idempotent request (a POST unless told otherwise) is retried only
when its bytes surely never reached the server (connection refused, connect timeout) or the table
says the server refused it unprocessed; otherwise the failure surfaces at once as RetriableError
and the caller's lookup-before-create makes its rerun safe.
"""

from __future__ import annotations

import enum
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import requests
import structlog
import urllib3
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random_exponential,
)

from amo1c_sync.domain.retry import RequestRetry
from amo1c_sync.errors import FatalError, ItemError, RetriableError

log = structlog.get_logger(__name__)


class Action(enum.Enum):
    """What the transport does about an answer or an exception."""

    OK = "ok"                  # use the body
    IGNORE = "ignore"          # an answer without content (204): nothing there, not an error
    RETRY = "retry"            # passing fault: back off and send again
    REFRESH = "refresh"        # 401: refresh the credentials once, then send again
    FAIL = "fail"              # this request's item is bad: the caller records it and goes on
    FATAL = "fatal"            # stop work against this system until a person acts
    COOLDOWN = "cooldown"      # like FATAL, and no request at all for the cooldown's length

    # the names main used before the tables were unified (same members)
    EMPTY = "ignore"
    REFRESH_AUTH = "refresh"
    FAIL_ITEM = "fail"
    STOP = "cooldown"


@dataclass(frozen=True)
class Resolution:
    """One row of a table. ``why`` is safe to show; ``hint`` is the FatalError's "what to do";
    ``acted`` False: the server surely did not act on the request (so a POST may be sent again)."""

    action: Action
    why: str
    hint: str | None = None
    acted: bool = True


@dataclass(frozen=True)
class ResolutionTable:
    """Status code and exception type -> Resolution, for one system (Airbyte CDK's
    ``default_error_mapping`` is the model).

    ``statuses`` first, then ``default(status)`` for the rest; ``exceptions`` in order, the first
    ``isinstance`` match wins. ``code_of(response)`` is the ``origin:code`` of an ItemError
    (``http:400``, ``1c:14``); ``refine`` may change a row after reading the answer (1C refusing
    to post a document answers 500 with its own code: FAIL, not RETRY); ``message`` formats the
    text of an error from the request and the answer."""

    origin: str
    statuses: Mapping[int, Resolution]
    default: Callable[[int], Resolution]
    exceptions: Sequence[tuple[type[BaseException], Resolution]] = ()
    code_of: Callable[[requests.Response], str] = lambda resp: f"http:{resp.status_code}"
    refine: Callable[[Resolution, str, requests.Response], Resolution] | None = None
    message: Callable[["Exchange"], str] | None = None

    def for_status(self, status: int) -> Resolution:
        return self.statuses.get(status) or self.default(status)

    def for_response(self, what: str, resp: requests.Response) -> Resolution:
        row = self.for_status(resp.status_code)
        return self.refine(row, what, resp) if self.refine is not None else row

    def for_exception(self, exc: BaseException) -> Resolution:
        for kind, row in self.exceptions:
            if isinstance(exc, kind):
                return row
        return Resolution(Action.RETRY, f"request failed ({type(exc).__name__})")


@dataclass
class Exchange:
    """One attempt: the request, the answer (or the exception) and the row that resolved it."""

    system: str
    method: str
    what: str                         # "METHOD /path" as shown in messages (no secret)
    resolution: Resolution
    response: requests.Response | None = None
    error: BaseException | None = None
    timeouts: tuple[float, float] = (5.0, 30.0)
    body: Any = None                  # what a ``check`` parsed from the answer, if it did

    @property
    def sent(self) -> bool:
        """False when the server surely never acted on the request."""
        if self.error is not None:
            return was_sent(self.error) and self.resolution.acted
        return self.resolution.acted

    @property
    def action(self) -> Action:
        return self.resolution.action


def was_sent(exc: BaseException) -> bool:
    """False when the request surely never reached the server: the connection was refused or
    never made (connect timeout); True for everything else (read timeout, a dropped connection)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return True
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (ConnectionRefusedError, urllib3.exceptions.NewConnectionError,
                          urllib3.exceptions.ConnectTimeoutError)):
            return False
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        todo.extend([getattr(e, "reason", None), e.__cause__, e.__context__])
    return True


class Cooldown:
    """The deadline before which a transport sends nothing (after a 403 block); one per transport
    unless shared on purpose."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._until = 0.0
        self._lock = threading.Lock()

    def start(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - self._clock())


ResponseHook = Callable[[str, str, str, str, float], None]
Checker = Callable[[Exchange], "Resolution | None"]


class BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>`` with the token read from ``token()`` at each send, so a
    refreshed token is used by the next request."""

    def __init__(self, token: Callable[[], str]):
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token()}"
        return r

    @staticmethod
    def token_of(resp: requests.Response | None) -> str | None:
        """The token the request of ``resp`` carried."""
        header = resp.request.headers.get("Authorization", "") if resp is not None and resp.request else ""
        text = header.decode("latin-1") if isinstance(header, bytes) else str(header or "")
        return text[len("Bearer "):] if text.startswith("Bearer ") else None

    def __repr__(self) -> str:  # never show the token
        return "<Bearer auth>"


@dataclass
class Transport:
    """The request path of one system (see the module docstring).

    ``refresh(exchange)`` is the auth hook for REFRESH (called at most once per request; a second
    401 is FatalError with ``refresh_hint``). ``rate_limiter`` needs a ``slot()`` context manager.
    """

    system: str
    label: str                                  # "amoCRM", "1C": the name in messages
    base_url: str
    table: ResolutionTable
    session: requests.Session = field(default_factory=requests.Session)
    policy: RequestRetry = field(default_factory=RequestRetry)
    timeouts: tuple[float, float] = (5.0, 30.0)
    rate_limiter: Any = None
    refresh: Callable[[Exchange], None] | None = None
    refresh_hint: str | None = None
    cooldown_seconds: float = 900.0
    cooldown: Cooldown = field(default_factory=Cooldown)
    on_response: ResponseHook | None = None
    describe: Callable[[str, str], str] | None = None
    sleep: Callable[[float], None] = time.sleep      # between tries (tests pass a recorder)
    _local: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    @contextmanager
    def fail_fast(self) -> Iterator[None]:
        """This thread's requests get no inline retry while inside: a passing fault raises
        RetriableError at once, so a caller with other work can put the item aside and retry it
        later instead of every item waiting out one item's backoff. A 401's refresh still
        happens (it is not a retry)."""
        depth = getattr(self._local, "fast", 0)
        self._local.fast = depth + 1
        try:
            yield
        finally:
            self._local.fast = depth

    @property
    def failing_fast(self) -> bool:
        return getattr(self._local, "fast", 0) > 0

    def what(self, method: str, path: str) -> str:
        return self.describe(method, path) if self.describe else f"{method} {path}"

    # ------------------------------------------------------------------ one attempt
    def attempt(self, method: str, path: str, **kwargs: Any) -> Exchange:
        """Send once and resolve the outcome; raises only while the cooldown lasts."""
        self.check_cooldown()
        what = self.what(method, path)
        kwargs.setdefault("timeout", self.timeouts)
        started = time.monotonic()
        limiter = self.rate_limiter.slot() if self.rate_limiter is not None else nullcontext()
        try:
            with limiter:
                resp = self.session.request(method, self.base_url + path, **kwargs)
        except requests.RequestException as exc:
            self._observe(method, path, "error", started)
            return Exchange(self.system, method, what, self.table.for_exception(exc), error=exc,
                            timeouts=self.timeouts)
        self._observe(method, path, str(resp.status_code), started)
        return Exchange(self.system, method, what, self.table.for_response(what, resp), response=resp,
                        timeouts=self.timeouts)

    def _observe(self, method: str, path: str, status: str, started: float) -> None:
        if self.on_response is not None:
            try:
                self.on_response(self.system, method, path.split("?")[0], status,
                                 time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 - metrics never break a request
                log.debug("transport.hook_failed", system=self.system, error=type(exc).__name__)

    def check_cooldown(self) -> None:
        left = self.cooldown.remaining()
        if left > 0:
            raise FatalError(f"{self.label} blocked this integration; no requests for another "
                             f"{int(left)} s", system=self.system, action=self.cooldown_hint())

    def cooldown_hint(self) -> str | None:
        return next((row.hint for row in self.table.statuses.values()
                     if row.action is Action.COOLDOWN and row.hint), None)

    # ------------------------------------------------------------------ the request path
    def request(self, method: str, path: str, *, idempotent: bool | None = None, retry: bool = True,
                raise_fail: bool = False, check: Checker | None = None, **kwargs: Any) -> Exchange:
        """Send with the table's actions carried out (see the module docstring). Returns the
        exchange for OK, IGNORE and FAIL (unless ``raise_fail``). ``check(exchange)`` may give
        an answer another row (a 200 whose body is not JSON: RETRY)."""
        if idempotent is None:
            idempotent = method.upper() != "POST"
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, _Again) and (idempotent or not e.sent)),
            stop=stop_after_attempt((self.policy.retries if retry and not self.failing_fast else 0) + 1),
            wait=(wait_random_exponential(multiplier=self.policy.backoff_base, max=self.policy.backoff_max)
                  if self.policy.jitter else
                  wait_exponential(multiplier=self.policy.backoff_base, max=self.policy.backoff_max)),
            before_sleep=self._log_retry, sleep=self.sleep, reraise=True)
        try:
            exchange = retrying(self._resolved, method, path, kwargs, check)
        except _Again as again:
            raise RetriableError(again.message) from None
        if exchange.action is Action.FAIL and raise_fail:
            raise self.item_error(exchange)
        return exchange

    def _resolved(self, method: str, path: str, kwargs: dict[str, Any], check: Checker | None) -> Exchange:
        refreshed = False
        while True:
            try:
                ex = self.attempt(method, path, **kwargs)
                if check is not None and ex.response is not None:
                    ex.resolution = check(ex) or ex.resolution
                if ex.action is Action.REFRESH and self.refresh is not None:
                    if refreshed:
                        raise FatalError(f"{self.label} answers 401 even to freshly refreshed "
                                         f"credentials", system=self.system, action=self.refresh_hint)
                    refreshed = True
                    log.info(f"{self.system}.unauthorized", request=ex.what)
                    self.refresh(ex)
                    continue
            except RetriableError as exc:   # the credentials could not be had: nothing was sent
                raise _Again(str(exc), sent=False) from None
            if ex.action is Action.RETRY:
                raise _Again(self.message(ex), sent=ex.sent)
            if ex.action is Action.COOLDOWN:
                self.cooldown.start(self.cooldown_seconds)
                log.error(f"{self.system}.blocked", request=ex.what, cooldown_s=self.cooldown_seconds,
                          reason=ex.resolution.why)
                raise FatalError(f"{self.message(ex)}; {self.label} work is paused for "
                                 f"{int(self.cooldown_seconds)} s", system=self.system,
                                 action=ex.resolution.hint)
            if ex.action in (Action.FATAL, Action.REFRESH):
                raise FatalError(self.message(ex), system=self.system, action=ex.resolution.hint)
            return ex

    def message(self, ex: Exchange) -> str:
        if self.table.message is not None:
            return self.table.message(ex)
        if ex.error is not None:
            return f"{self.label} {ex.what}: {type(ex.error).__name__}"
        return f"{self.label} {ex.what}: {ex.resolution.why}"

    def item_error(self, ex: Exchange) -> ItemError:
        assert ex.response is not None
        return ItemError(self.message(ex), item=ex.what, code=self.table.code_of(ex.response))

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(f"{self.system}.retry", attempt=state.attempt_number, error=str(exc),
                    sleep_s=round(state.next_action.sleep, 2) if state.next_action else None)

    def close(self) -> None:
        self.session.close()


class _Again(Exception):
    """Internal: a RETRY outcome; ``sent`` False when the server surely did not act on it."""

    def __init__(self, message: str, *, sent: bool):
        super().__init__(message)
        self.message = message
        self.sent = sent
