"""The 1C side: the OData gateway (gateway.OneC), its query builder (query) and names (names.OneCNames)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from amo1c_sync.domain.retry import RequestRetry
from amo1c_sync.onec.gateway import CatalogItem, OneC, ScheduleLine, Service, Zayavka
from amo1c_sync.onec.names import OneCNames

__all__ = ["OneC", "OneCNames", "CatalogItem", "ScheduleLine", "Service", "Zayavka", "from_settings"]


def from_settings(settings) -> OneC:
    """Build the gateway from Settings: ``settings.onec`` (base_url, username, password,
    connect_timeout, read_timeout, optional max_retries/backoff_max/page_size/scan_page_size),
    ``settings.onec_names`` (an OneCNames, or any object with the same attribute names) and, if
    present, ``settings.sync.timezone`` (the 1C base's local zone, default Europe/Moscow)."""
    s = settings.onec
    names = getattr(settings, "onec_names", None)
    if names is not None and not isinstance(names, OneCNames):
        names = OneCNames(**{f: getattr(names, f) for f in OneCNames.field_names() if hasattr(names, f)})
    kwargs: dict[str, Any] = {}
    tz = getattr(getattr(settings, "sync", None), "timezone", None)
    if tz:
        kwargs["timezone"] = str(tz)
    retry = getattr(settings, "retry", None)
    policy = retry.policy().request if retry is not None else RequestRetry(retries=4)
    overrides = {field: getattr(s, opt) for opt, field in (("max_retries", "retries"),
                                                            ("backoff_max", "backoff_max"))
                 if getattr(s, opt, None) is not None}   # an [onec] override of [retry]
    kwargs["retry"] = replace(policy, **overrides)
    if getattr(s, "page_size", None) is not None:
        kwargs["page_size"] = s.page_size
    if getattr(s, "scan_page_size", None) is not None:
        kwargs["scan_page_size"] = s.scan_page_size
    return OneC(s.base_url, s.username or "", s.password or "", names=names,
                connect_timeout=getattr(s, "connect_timeout", 5), read_timeout=getattr(s, "read_timeout", 60),
                **kwargs)
