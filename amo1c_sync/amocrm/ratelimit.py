"""A client-side sliding-window rate limiter shared by every job in the process."""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import Iterator


class RateLimiter:
    """Never more than ``rate`` requests in any sliding window of ``per`` seconds, as the server
    counts them.

    Use ``with limiter.slot(): send()``. A slot counts from the moment it is taken until ``per``
    seconds after the request *completed*: request i then starts after request i-rate finished,
    so it reaches the server more than ``per`` seconds after that one did, whatever the network
    or the scheduler delayed in between. ``acquire()`` takes a slot stamped now (for callers that
    cannot wrap the request). ``prefill`` starts with every slot just used: a restarted process
    cannot add its first requests to the previous process's last second.

    Thread-safe. A fractional rate (e.g. 0.5/s) becomes "1 request per 2 s".
    """

    def __init__(self, rate: float = 7, per: float = 1.0, *, margin: float = 0.05,
                 prefill: bool = False, clock=time.monotonic, sleep=time.sleep):
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        self.rate = rate
        self.per = per
        self._n = max(1, math.floor(rate))
        self._window = per * self._n / rate + margin
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        now = clock()
        # each slot is [end]: None while its request is in flight, else when it completed
        self._slots: list[list[float | None]] = [[now] for _ in range(self._n)] if prefill else []

    def _take(self) -> tuple[list | None, float]:
        """A free slot, or None and how long to wait. Call with the condition held."""
        now = self._clock()
        self._slots = [s for s in self._slots if s[0] is None or s[0] > now - self._window]
        if len(self._slots) < self._n:
            slot: list[float | None] = [None]
            self._slots.append(slot)
            return slot, 0.0
        finished = [s[0] for s in self._slots if s[0] is not None]
        delay = (min(finished) + self._window - now) if finished else 0.05
        return None, max(delay, 0.001)

    def _wait_for_slot(self) -> tuple[list, float]:
        waited = 0.0
        while True:
            with self._cond:
                slot, delay = self._take()
                if slot is not None:
                    return slot, waited
            self._sleep(delay)
            waited += delay

    def _release(self, slot: list, at: float | None = None) -> None:
        with self._cond:
            slot[0] = self._clock() if at is None else at

    @contextmanager
    def slot(self) -> Iterator[float]:
        """Hold a slot around one request; yields the seconds waited for it."""
        slot, waited = self._wait_for_slot()
        try:
            yield waited
        finally:
            self._release(slot)

    def acquire(self) -> float:
        """Take a slot that counts from now; returns the seconds waited."""
        slot, waited = self._wait_for_slot()
        self._release(slot)
        return waited
