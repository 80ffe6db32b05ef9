"""How long a failed item (or a whole failed run) waits before it is tried again."""

from __future__ import annotations


def backoff_seconds(attempts: int, base: float, maximum: float) -> float:
    """Delay after ``attempts`` failures in a row (1 = the first): base, 2·base, 4·base … ≤ maximum."""
    if attempts <= 0:
        return 0.0
    return float(min(maximum, base * (2 ** min(attempts - 1, 60))))
