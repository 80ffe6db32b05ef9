"""The 1C side: the OData gateway (gateway.OneC), its query builder (query) and names (names.OneCNames)."""

from __future__ import annotations

from amo1c_sync.onec.gateway import CatalogItem, OneC, ScheduleLine, Service, Zayavka
from amo1c_sync.onec.names import OneCNames

__all__ = ["OneC", "OneCNames", "CatalogItem", "ScheduleLine", "Service", "Zayavka", "from_settings"]


def from_settings(settings) -> OneC:
    """Build the gateway from Settings: ``settings.onec`` (base_url, username, password,
    connect_timeout, read_timeout, optional max_retries/backoff_max/page_size),
    ``settings.onec_names`` (an OneCNames, or any object with the same attribute names) and, if
    present, ``settings.sync.timezone`` (the 1C base's local zone, default Europe/Moscow)."""
    s = settings.onec
    names = getattr(settings, "onec_names", None)
    if names is not None and not isinstance(names, OneCNames):
        names = OneCNames(**{f: getattr(names, f) for f in OneCNames.field_names() if hasattr(names, f)})
    kwargs = {}
    tz = getattr(getattr(settings, "sync", None), "timezone", None)
    if tz:
        kwargs["timezone"] = str(tz)
    retry = getattr(settings, "retry", None)
    if retry is not None:
        kwargs.update(max_retries=retry.request_retries, backoff_base=retry.request_backoff_base,
                      backoff_max=retry.request_backoff_max)
    for opt in ("max_retries", "backoff_max", "page_size"):
        value = getattr(s, opt, None)
        if value is not None:
            kwargs[opt] = value
    return OneC(s.base_url, s.username or "", s.password or "", names=names,
                connect_timeout=getattr(s, "connect_timeout", 5), read_timeout=getattr(s, "read_timeout", 60),
                **kwargs)
