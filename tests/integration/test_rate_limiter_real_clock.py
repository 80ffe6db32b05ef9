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


def test_given_slow_answers_and_threads_when_sending_through_the_gateway_then_the_emulator_never_counts_more_than_7_in_a_second(  # noqa: E501 - the name says it all
        sqlite_store):
    """amoCRM works 0.7 s on each request after it arrived: the slots count from arrival (at the
    latest ``max_transit`` after sending), and the emulator, the judge, still sees at most 7 in
    any second and answers no 429."""
    from amo1c_sync.amocrm.auth import TokenManager
    from amo1c_sync.amocrm.gateway import AmoCRM
    from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator

    with AmoCRMEmulator(rate_limit=7, long_lived_token="judge") as emu:
        api = AmoCRM(emu.url, token_manager=TokenManager(sqlite_store, base_url=emu.url,
                                                         long_lived_token="judge"),
                     rate_limiter=RateLimiter(7), max_retries=0)
        emu.add_fault(count=28, status=None, delay_ms=700, path_prefix="/api/v4/account", phase="after")
        emu.reset_requests()
        threads = [threading.Thread(target=lambda: [api.account() for _ in range(4)]) for _ in range(7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen = emu.requests()
    assert seen["counts"] == {"GET /api/v4/account": 28}
    assert seen["max_per_second"] <= 7
    assert "429" not in seen["by_status"]
