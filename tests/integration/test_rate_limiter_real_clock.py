"""The rate limiter on the real clock, with threads: what amoCRM would count. (The logic itself is
tested on an injected clock in tests/unit/test_amocrm_units.py.)"""

from __future__ import annotations

import threading
import time

from amo1c_sync.amocrm.ratelimit import RateLimiter


def _max_in_window(times, window=1.0):
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_given_threads_sharing_a_limiter_when_busy_then_the_real_clock_sees_at_most_the_rate():
    rl = RateLimiter(20)
    sent, lock = [], threading.Lock()

    def work():
        for _ in range(10):
            rl.acquire()
            with lock:
                sent.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sent) == 40
    assert _max_in_window(sent) <= 20
