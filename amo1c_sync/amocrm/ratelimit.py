"""A client-side sliding-window rate limiter shared by every job in the process."""

from __future__ import annotations

import collections
import math
import threading
import time


class RateLimiter:
    """Never more than ``rate`` requests in any sliding window of ``per`` seconds.

    Thread-safe. ``acquire()`` blocks until a request may be sent. A fractional rate (e.g. 0.5/s)
    becomes "1 request per 2 s". ``margin`` widens the window a little so that network jitter on
    loopback or a LAN cannot make the server see more than ``rate`` arrivals in its own window.
    """

    def __init__(self, rate: float = 7, per: float = 1.0, *, margin: float = 0.05,
                 clock=time.monotonic, sleep=time.sleep):
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        self.rate = rate
        self.per = per
        self._n = max(1, math.floor(rate))
        self._window = per * self._n / rate + margin
        self._sent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> float:
        """Wait for a free slot and take it; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self._window:
                    self._sent.popleft()
                if len(self._sent) < self._n:
                    self._sent.append(now)
                    return waited
                delay = self._sent[0] + self._window - now
            delay = max(delay, 0.001)
            self._sleep(delay)
            waited += delay

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        return None
