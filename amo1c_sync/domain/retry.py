"""The retry policy: every number that says how often and how long amo1c-sync tries again.

Two levels, one object, so that "where is the retry policy" has one answer:

* ``RequestRetry`` — one HTTP request that met a passing fault (timeout, dropped connection, 429,
  5xx): how many more tries, and the capped exponential backoff with jitter between them. The
  transports (``amo1c_sync.transport``) are its only users; *which* faults are passing is each
  system's error table (``amocrm/responses.py``, ``onec/responses.py``), not this module.
* ``ItemRetry`` — a lead or document whose processing failed: how long it waits before the next
  try and after how many tries it is given up on. The jobs use it.

The numbers come from the ``[retry]`` section of sync.ini (``config.RetrySettings.policy()``).
Pure: no I/O, no clock; the random source for jitter is injectable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable


def _exponential(attempts: int, base: float, maximum: float) -> float:
    """base, 2·base, 4·base … ≤ maximum for ``attempts`` = 1, 2, 3 …; 0 for none."""
    if attempts <= 0:
        return 0.0
    return float(min(maximum, base * (2 ** min(attempts - 1, 60))))


def backoff_seconds(attempts: int, base: float, maximum: float) -> float:
    """Delay after ``attempts`` failures in a row (1 = the first): base, 2·base, 4·base … ≤ maximum.

    Kept for the callers that pass the numbers themselves; ``ItemRetry.delay`` is the same rule."""
    return _exponential(attempts, base, maximum)


@dataclass(frozen=True)
class RequestRetry:
    """One request: ``retries`` more tries after the first, waiting ``backoff_base`` · 2^(n-1)
    seconds (at most ``backoff_max``) before try n+1; with ``jitter`` the wait is drawn uniformly
    from 0 to that ("full jitter", so that many clients hit by one outage do not return together)."""

    retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must not be negative (got {self.retries})")
        if self.backoff_base <= 0 or self.backoff_max <= 0:
            raise ValueError("backoff_base and backoff_max must be greater than 0")

    @property
    def attempts(self) -> int:
        """Tries in all, the first included."""
        return self.retries + 1

    def delay(self, failed_attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after ``failed_attempts`` failed tries (1 = after the first)."""
        cap = _exponential(failed_attempts, self.backoff_base, self.backoff_max)
        return cap * rand() if self.jitter else cap


@dataclass(frozen=True)
class ItemRetry:
    """A failed lead or document: retried after ``backoff_base``, doubling up to ``backoff_max``;
    given up on after ``max_attempts`` tries (0 = never: it stays visible in `status`)."""

    backoff_base: float = 60.0
    backoff_max: float = 3600.0
    max_attempts: int = 0

    def __post_init__(self) -> None:
        if self.max_attempts < 0:
            raise ValueError(f"max_attempts must not be negative (got {self.max_attempts})")
        if self.backoff_base <= 0 or self.backoff_max <= 0:
            raise ValueError("backoff_base and backoff_max must be greater than 0")

    def delay(self, attempts: int) -> float:
        """Seconds until the next try of an item that has failed ``attempts`` times in a row."""
        return _exponential(attempts, self.backoff_base, self.backoff_max)

    def gives_up(self, attempts: int) -> bool:
        """True when an item that has been tried ``attempts`` times gets no further try."""
        return bool(self.max_attempts) and attempts >= self.max_attempts


@dataclass(frozen=True)
class RetryPolicy:
    """The whole policy: ``request`` for the transports, ``item`` for the jobs."""

    request: RequestRetry = field(default_factory=RequestRetry)
    item: ItemRetry = field(default_factory=ItemRetry)
