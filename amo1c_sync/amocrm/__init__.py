"""amoCRM side: the gateway (the one place that talks to amoCRM), tokens, rate limiting."""

from __future__ import annotations

import threading

from amo1c_sync.amocrm.auth import TokenManager
from amo1c_sync.amocrm.fields import FieldMap
from amo1c_sync.amocrm.gateway import AmoCRM, BatchResult
from amo1c_sync.amocrm.ratelimit import RateLimiter

__all__ = ["AmoCRM", "BatchResult", "FieldMap", "RateLimiter", "TokenManager", "from_settings",
           "shared_rate_limiter", "token_manager_from_settings", "field_names"]

_LIMITERS: dict[tuple[str, float], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_rate_limiter(base_url: str, rate: float = 7.0) -> RateLimiter:
    """One limiter per amoCRM account and rate in this process, shared by every job."""
    key = (base_url.rstrip("/"), float(rate))
    with _LIMITERS_LOCK:
        if key not in _LIMITERS:
            _LIMITERS[key] = RateLimiter(rate=rate, per=1.0, prefill=True)
        return _LIMITERS[key]


def token_manager_from_settings(settings, store) -> TokenManager:
    a = settings.amocrm
    return TokenManager(store, base_url=a.base_url, client_id=a.client_id,
                        client_secret=a.client_secret, redirect_uri=a.redirect_uri,
                        long_lived_token=a.long_lived_token,
                        connect_timeout=a.connect_timeout, token_timeout=a.token_timeout)


def from_settings(settings, store) -> AmoCRM:
    """The gateway built from ``settings.amocrm`` (base_url, client_id, client_secret,
    redirect_uri, long_lived_token, rate_limit, connect_timeout, read_timeout)."""
    a = settings.amocrm
    retry = getattr(settings, "retry", None)
    kwargs = {"retry": retry.policy().request} if retry is not None else {}
    return AmoCRM(a.base_url, token_manager=token_manager_from_settings(settings, store),
                  rate_limiter=shared_rate_limiter(a.base_url, a.rate_limit),
                  connect_timeout=a.connect_timeout, read_timeout=a.read_timeout, **kwargs)


def field_names(settings) -> list[str]:
    """The lead field names configured in ``settings.fields`` (empty ones are optional/off)."""
    f = settings.fields
    names = vars(f).values() if hasattr(f, "__dict__") else f
    return [n for n in names if isinstance(n, str) and n]
