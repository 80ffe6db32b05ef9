"""Shared by the benchmarks run from the checkout: the time a run spends in each gateway method,
so that a benchmark can print where its wall time went (1C, amoCRM, the store and the rest)."""

from __future__ import annotations

import time


def timed(obj, name: str, phases: dict, key: str) -> None:
    """Wrap ``obj.name`` so that the time spent in it is added to ``phases[key]``."""
    original = getattr(obj, name)

    def wrapper(*a, **kw):
        t = time.monotonic()
        try:
            return original(*a, **kw)
        finally:
            phases[key] += time.monotonic() - t

    setattr(obj, name, wrapper)
