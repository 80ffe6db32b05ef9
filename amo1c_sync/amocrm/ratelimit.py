"""A client-side sliding-window rate limiter shared by every job in the process.

amoCRM documents "not more than 7 requests per second" and nothing about how it counts them
(docs/api-facts.md, "Rate limit"); the strictest count the wording admits is the one the emulator
applies: at most 7 *arrivals* in any sliding second. A request arrives somewhere between the
moment it is sent and the moment its answer is back; when it arrived is what the limit is about.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: how late after being sent a request may still arrive (connect, TLS handshake, the request's
#: bytes on a slow link); the rest of a slow request is amoCRM working on it, after its arrival
MAX_TRANSIT = 0.5


class RateLimiter:
    """Never more than ``rate`` requests in any sliding window of ``per`` seconds, as the server
    counts them: by arrival.

    Use ``with limiter.slot(): send()``. A slot counts from its request's latest possible
    arrival: its completion when the answer came back within ``max_transit`` of sending (it
    cannot have arrived later than that), else ``max_transit`` after sending (a slow request is
    slow at the server, after it arrived). Request i then starts ``per`` seconds after request
    i-rate arrived, at the latest, so the server never counts more than ``rate`` in a window —
    without holding a slot for a whole ``per`` after a slow answer. ``acquire()`` takes a slot
    stamped now (for callers that cannot wrap the request). ``prefill`` starts with every slot
    just used: a restarted process cannot add its first requests to the previous one's last
    second. ``margin`` only covers the server's timer resolution.

    Thread-safe. A fractional rate (e.g. 0.5/s) becomes "1 request per 2 s".
    """

    def __init__(self, rate: float = 7, per: float = 1.0, *, margin: float = 0.02,
                 max_transit: float = MAX_TRANSIT, prefill: bool = False, clock=time.monotonic,
                 sleep=time.sleep):
        if rate <= 0 or per <= 0 or max_transit < 0:
            raise ValueError("rate and per must be positive, max_transit not negative")
        self.rate = rate
        self.per = per
        self.max_transit = max_transit
        self._n = max(1, math.floor(rate))
        self._window = per * self._n / rate + margin
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        now = clock()
        # each slot is [sent, completed or None while in flight]
        self._slots: list[list[float | None]] = [[now, now] for _ in range(self._n)] if prefill else []

    def _free_at(self, slot: list) -> float:
        """When the slot may be taken again: ``per`` (+ margin) after its latest possible arrival."""
        sent, done = slot
        arrival = sent + self.max_transit if done is None else min(done, sent + self.max_transit)
        return arrival + self._window

    def _take(self) -> tuple[list | None, float]:
        """A free slot, or None and how long to wait. Call with the condition held."""
        now = self._clock()
        self._slots = [s for s in self._slots if self._free_at(s) > now]
        if len(self._slots) < self._n:
            slot: list[float | None] = [now, None]
            self._slots.append(slot)
            return slot, 0.0
        delay = min(self._free_at(s) for s in self._slots) - now
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

    def _release(self, slot: list) -> None:
        with self._cond:
            slot[1] = self._clock()

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
