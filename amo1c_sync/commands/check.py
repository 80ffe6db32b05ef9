"""`amo1c-sync check`: config, store, amoCRM auth and fields, 1C reachability and names.
Each line is OK or the precise problem; exit 1 if anything FAILs."""

from __future__ import annotations

from typing import Callable

from amo1c_sync.commands.common import open_store, settings_from
from amo1c_sync.errors import Amo1cError, ItemError


def _why(exc: BaseException) -> str:
    if isinstance(exc, Amo1cError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def run_checks(settings, store=None, *, out: Callable[[str], None] = print) -> bool:
    ok = True

    def line(good: bool, what: str) -> None:
        nonlocal ok
        ok = ok and good
        out(("OK   " if good else "FAIL ") + what)

    line(True, f"config {settings.source}")
    if store is None:
        try:
            store = open_store(settings, upgrade=True)
        except Exception as exc:  # noqa: BLE001
            line(False, f"store: {_why(exc)}")
            return False
    line(True, f"store {store.dialect} (migrated)")

    # amoCRM: auth, then the configured lead field names
    try:
        from amo1c_sync import amocrm

        a = settings.amocrm
        # the jobs' gateway, with fewer retries: check should answer quickly
        gw = amocrm.AmoCRM(a.base_url, token_manager=amocrm.token_manager_from_settings(settings, store),
                           rate_limiter=amocrm.shared_rate_limiter(a.base_url, a.rate_limit),
                           connect_timeout=a.connect_timeout, read_timeout=a.read_timeout,
                           max_retries=1, backoff_max=2)
        account = gw.account()
        name = account.get("name") or account.get("subdomain") or account.get("id") or settings.amocrm.base_url
        mode = "long-lived token" if settings.amocrm.long_lived_token else "OAuth"
        line(True, f"amoCRM {settings.amocrm.base_url}: authorised ({mode}), account {name}")
        try:
            fm = gw.field_map(amocrm.field_names(settings))
            line(True, f"amoCRM lead fields: {len(amocrm.field_names(settings))} configured names found"
                       f" ({len(fm.names)} fields in the account)")
        except Exception as exc:  # noqa: BLE001
            line(False, f"amoCRM lead fields: {_why(exc)}")
    except Exception as exc:  # noqa: BLE001
        line(False, f"amoCRM {settings.amocrm.base_url}: {_why(exc)}")

    # 1C: reachable with these credentials, then the configured object names
    try:
        from amo1c_sync import onec

        o = settings.onec
        base = onec.from_settings(settings)
        gw1c = onec.OneC(o.base_url, o.username, o.password or "", names=base.names,
                         connect_timeout=o.connect_timeout, read_timeout=o.read_timeout,
                         max_retries=1, backoff_max=2)
        base.close()
        try:
            took = gw1c.ping()
        except ItemError as exc:
            # 1C answered, but not to the configured doctors' catalog (a wrong name, or a wrong
            # base_url): check_names says which names are wrong and which exist
            ping_error: ItemError | None = exc
        else:
            ping_error = None
            line(True, f"1C {settings.onec.base_url}: reachable as {settings.onec.username or '(no user)'}"
                       f" ({took * 1000:.0f} ms)")
        try:
            problems = gw1c.check_names()
        except Exception as exc:  # noqa: BLE001
            problems = [_why(exc)]
        if ping_error is not None and not problems:
            problems = [_why(ping_error)]
        if problems:
            for p in problems:
                line(False, f"1C names: {p}")
        else:
            line(True, "1C names: catalogs, documents, attributes and default items present")
    except Exception as exc:  # noqa: BLE001
        line(False, f"1C {settings.onec.base_url}: {_why(exc)}")
    return ok


def main(args) -> int:
    settings = settings_from(args)
    return 0 if run_checks(settings) else 1
