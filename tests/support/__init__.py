"""The test rig, shared by tests/ and benchmarks/ and not shipped in the wheel: polling with a
deadline, quick gateways, PostgreSQL scratch databases, daemon subprocesses, the fault drill."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02,
               message: str | Callable[[], str] = "condition",
               ignoring: tuple[type[BaseException], ...] = ()) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds.

    An AssertionError, or one of ``ignoring`` (say, a browser element replaced while it was read),
    counts as "not yet". ``message`` may be a function: it is then called only on failure, so that
    describing the state cannot itself fail before the wait starts."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except (AssertionError, *ignoring) as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {_describe(message, ignoring)}"
                                 + (f": {type(last_exc).__name__}: {last_exc}" if last_exc else ""))
        time.sleep(interval)


def _describe(message: str | Callable[[], str], ignoring: tuple[type[BaseException], ...]) -> str:
    if not callable(message):
        return message
    try:
        return message()
    except (AssertionError, *ignoring) as exc:
        return f"(the state could not be read: {type(exc).__name__})"


def quick_amocrm(url: str, store, *, token: str, max_retries: int = 0):
    """An amoCRM gateway for a test against the emulator: a long-lived token, a limiter that never
    waits, retries (if any) with a backoff too short to notice."""
    from amo1c_sync.amocrm import AmoCRM, RateLimiter, TokenManager

    return AmoCRM(url, token_manager=TokenManager(store, base_url=url, long_lived_token=token),
                  rate_limiter=RateLimiter(1000), max_retries=max_retries, backoff_base=0.001,
                  backoff_max=0.01)


def quick_onec(url: str, username: str, password: str, *, max_retries: int = 0):
    """A 1C gateway for a test against the emulator, with a backoff too short to notice."""
    from amo1c_sync.onec import OneC

    return OneC(url, username, password, max_retries=max_retries, backoff_base=0.001, backoff_max=0.01)
