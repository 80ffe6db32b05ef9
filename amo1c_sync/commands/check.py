"""`amo1c-sync check`: config, store, amoCRM auth and fields, 1C reachability and names.
Each line is OK or the precise problem; exit 1 if anything FAILs. Read-only: it never creates a
store (without one, an in-memory store stands in, so the token check says there is none yet)."""

from __future__ import annotations

from typing import Callable

from amo1c_sync import config
from amo1c_sync.commands.common import StoreMissing, open_existing_store, settings_from, store_location
from amo1c_sync.errors import Amo1cError, FatalError, ItemError
from amo1c_sync.store import Store


def _why(exc: BaseException) -> str:
    if isinstance(exc, FatalError) and exc.action:
        return f"{exc}; what to do: {exc.action}"
    if isinstance(exc, Amo1cError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class _Report:
    def __init__(self, out: Callable[[str], None]):
        self.out, self.ok = out, True

    def line(self, good: bool, what: str) -> None:
        self.ok = self.ok and good
        self.out(("OK   " if good else "FAIL ") + what)


def run_checks(settings, store=None, *, out: Callable[[str], None] = print) -> bool:
    r = _Report(out)
    missing = config.missing_required(settings)
    r.line(not missing, f"config {settings.source}" + (": values missing (below)" if missing else ""))
    for problem in missing:
        r.line(False, f"config {problem}")
    if settings.http.enabled:
        r.out(f"     http: enabled on {settings.http.host}:{settings.http.port}; secret "
              + ("set" if settings.http.secret else "not visible here (the service reads the "
                 "http_secret credential; `run` refuses to start without one)"))
    if store is None:
        store = _store_for_check(settings, r)
    unfilled = {p.split("]")[0].lstrip("[") for p in missing}
    for system, check in (("amocrm", _check_amocrm), ("onec", _check_onec)):
        if system in unfilled:
            r.line(False, f"{'amoCRM' if system == 'amocrm' else '1C'}: not checked until "
                          f"[{system}] is filled in")
        else:
            check(settings, store, r)
    return r.ok


def _store_for_check(settings, r: _Report) -> Store:
    """The store, or an in-memory stand-in when there is none (nothing is created on disk)."""
    try:
        store = open_existing_store(settings)
    except FatalError as exc:
        if isinstance(exc, StoreMissing):  # before the first start: not a fault
            r.line(True, f"store: {exc}; the daemon creates it when it starts")
        else:
            r.line(False, f"store: {_why(exc)}")
        store = Store("sqlite://")
        store.upgrade()
        return store
    r.line(True, f"store {store_location(store)} (migrated)")
    return store


def _check_amocrm(settings, store, r: _Report) -> None:
    from amo1c_sync import amocrm

    a = settings.amocrm
    try:
        # the jobs' gateway, with fewer retries: check should answer quickly
        gw = amocrm.AmoCRM(a.base_url, token_manager=amocrm.token_manager_from_settings(settings, store),
                           rate_limiter=amocrm.shared_rate_limiter(a.base_url, a.rate_limit),
                           connect_timeout=a.connect_timeout, read_timeout=a.read_timeout,
                           max_retries=1, backoff_max=2)
        account = gw.account()
    except Exception as exc:  # noqa: BLE001
        r.line(False, f"amoCRM {a.base_url}: {_why(exc)}")
        return
    name = account.get("name") or account.get("subdomain") or account.get("id") or a.base_url
    mode = "long-lived token" if a.long_lived_token else "OAuth"
    r.line(True, f"amoCRM {a.base_url}: authorised ({mode}), account {name}")
    try:
        fm = gw.field_map(amocrm.field_names(settings))
        r.line(True, f"amoCRM lead fields: {len(amocrm.field_names(settings))} configured names found"
                     f" ({len(fm.names)} fields in the account)")
    except Exception as exc:  # noqa: BLE001
        r.line(False, f"amoCRM lead fields: {_why(exc)} (`amo1c-sync setup amocrm` creates the "
                      "missing ones)")
    _check_contact_field(settings, gw, r)
    _check_stages(settings, gw, r)


def _check_contact_field(settings, gw, r: _Report) -> None:
    """The contact field that keeps the 1C client key ([sync] contact_client_field), when it is on."""
    from amo1c_sync.commands.setup import plan_contact_field

    name = (settings.sync.contact_client_field or "").strip()
    if not name:
        r.out("     amoCRM contact field: [sync] contact_client_field is empty; the 1C client is not kept on contacts")
        return
    try:
        fields = gw.list_contact_fields(max_age=0)
    except Exception as exc:  # noqa: BLE001
        r.line(False, f"amoCRM contact fields: {_why(exc)}")
        return
    plan = plan_contact_field(name, fields)
    assert plan is not None
    if plan.action == "exists":
        r.line(True, f"amoCRM contact field «{name}» ({plan.found_type}, id {plan.field_id})")
    elif plan.action == "wrong_type":
        r.line(False, f"amoCRM contact field «{name}» is a {plan.found_type} field; [sync] contact_client_field "
                      "needs a text field")
    else:
        r.line(False, f"amoCRM has no contact field «{name}» ([sync] contact_client_field); contact fields: "
                      f"{', '.join(str(f.get('name')) for f in fields)}. `amo1c-sync setup amocrm` creates it")


def _check_stages(settings, gw, r: _Report) -> None:
    """``[stages]`` against the account's pipelines (the lifecycle resolves them the same way)."""
    from amo1c_sync.domain.lifecycle import resolve_stages

    names = settings.stages.names()
    if not any(names.values()):
        r.line(True, "amoCRM stages: none configured ([stages]); leads are not moved")
        return
    try:
        stages = resolve_stages(names, gw.pipelines(), where=settings.source)
        r.line(True, "amoCRM stages: " + ", ".join(f"{k} = {v}" for k, v in stages.items()))
    except Exception as exc:  # noqa: BLE001
        r.line(False, f"amoCRM stages: {_why(exc)}")


def _check_onec(settings, store, r: _Report) -> None:
    from amo1c_sync import onec
    from amo1c_sync.onec import diagnostics

    o = settings.onec
    try:
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
            r.line(True, f"1C {o.base_url}: reachable as {o.username or '(no user)'} ({took * 1000:.0f} ms)")
        try:
            problems = diagnostics.check_names(gw1c)
        except Exception as exc:  # noqa: BLE001
            problems = [_why(exc)]
        if ping_error is not None and not problems:
            problems = [_why(ping_error)]
        for p in problems:
            r.line(False, f"1C names: {p}")
        if problems:
            r.out("     `amo1c-sync setup 1c` lists what the publication lacks")
        else:
            r.line(True, "1C names: catalogs, documents, attributes and default items present")
    except Exception as exc:  # noqa: BLE001
        r.line(False, f"1C {o.base_url}: {_why(exc)}")


def main(args) -> int:
    settings = settings_from(args)
    # check prints every problem itself: log lines would only interleave with its OK/FAIL lines
    if not getattr(args, "log_level", None):
        from amo1c_sync.commands.common import setup_logging

        setup_logging(args, settings, default_level="CRITICAL")
    return 0 if run_checks(settings) else 1
