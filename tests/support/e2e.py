"""Helpers for the F1/F2/F4 end-to-end tests (their fixtures ``amo_emu``, ``onec_emu`` and
``settings`` are in tests/integration/conftest.py): settings pointing at the emulators, gateways
with a high rate limit and no slow retries, and small helpers for the emulators' control APIs
(over HTTP, as a person in either UI would act)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import requests

from amo1c_sync.amocrm import AmoCRM, RateLimiter, TokenManager
from amo1c_sync.config import load_settings
from amo1c_sync.domain.registration import display_number
from amo1c_sync.jobs.base import JobContext, run_job
from amo1c_sync.onec import OneC
from amo1c_sync.store.models import Registration, RetryItem
from tests.support import wait_until

TOKEN = "long-lived-test-token"
SEED_DAY = date(2021, 12, 22)
EFIMOVA, PETROVA, ISHAEVA = "Ефимова Е.В.", "Петрова А.С.", "Ишаева М.И."


def make_settings(amo_emu, onec_emu, **sync):
    overrides = {
        "amocrm": {"base_url": amo_emu.url, "long_lived_token": TOKEN, "rate_limit": "1000"},
        "onec": {"base_url": onec_emu.url, "username": onec_emu.username, "password": onec_emu.password},
        "sync": {k: str(v) for k, v in sync.items()},
    }
    return load_settings(None, overrides=overrides)


def make_amo(settings, store) -> AmoCRM:
    tm = TokenManager(store, base_url=settings.amocrm.base_url, long_lived_token=TOKEN)
    return AmoCRM(settings.amocrm.base_url, token_manager=tm, rate_limiter=RateLimiter(1000),
                  max_retries=0, backoff_base=0.01, backoff_max=0.05)


def make_onec(settings, *, read_timeout: float = 60.0) -> OneC:
    o = settings.onec
    return OneC(o.base_url, o.username, o.password, max_retries=0, read_timeout=read_timeout,
                backoff_base=0.01, backoff_max=0.05)


def make_ctx(settings, store, *, dry_run=False, since=None) -> JobContext:
    return JobContext(settings, store, dry_run=dry_run, since=since, amocrm=make_amo(settings, store),
                      onec=make_onec(settings))


def run(settings, store, job="registration", **kw):
    return run_job(make_ctx(settings, store, **kw), job)


# --- the store, read back detached so assertions can follow a closed session ---------------------

def due_now(store, *lead_ids) -> None:
    """The leads' retry backoff (if they have one) is over."""
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    with store.session() as s:
        for lead_id in lead_ids:
            item = s.get(RetryItem, ("registration", lead_id))
            if item is not None:
                item.next_attempt_at = past


def runs_until_registered(settings, store, lead_id, *, ctx=None, timeout=20.0) -> list:
    """Registration cycles, each with the lead's backoff over, until the lead is done: a create
    whose answer was lost waits in later cycles (no cycle waits for it) until 1C shows it or the
    settle time has passed. ``ctx()`` makes each cycle's context. The results, in order."""
    results = []

    def done() -> bool:
        due_now(store, lead_id)
        results.append(run_job(ctx() if ctx else make_ctx(settings, store), "registration"))
        reg = registration(store, lead_id)
        return reg is not None and reg.status == "done"

    wait_until(done, timeout=timeout, interval=0.1, message=lambda: f"lead {lead_id} registered: {results[-1:]}")
    return results


def registration(store, lead_id) -> Registration | None:
    with store.session() as s:
        r = s.get(Registration, lead_id)
        if r is not None:
            s.expunge(r)
        return r


def retry_item(store, lead_id, job="registration") -> RetryItem | None:
    with store.session() as s:
        item = s.get(RetryItem, (job, lead_id))
        if item is not None:
            s.expunge(item)
        return item


# --- control APIs -------------------------------------------------------------------------------

def new_lead(amo_emu, **fields) -> int:
    r = requests.post(amo_emu.url + "/_sandbox/leads", json={"name": "Сделка", "fields": fields}, timeout=5)
    r.raise_for_status()
    return r.json()["id"]


def seed_lead(amo_emu, *, time="9:05", doctor=EFIMOVA, client=None, flag=True, day="22.12.2021") -> int:
    fields = {"Дата записи к врачу": day, "Врач": doctor, "Время записи": time,
              "Зарегистрировать в 1С": flag}
    if client is not None:
        fields["ФИО клиента"] = client
    return new_lead(amo_emu, **{k: v for k, v in fields.items() if v is not None})


def edit_lead(amo_emu, lead_id, **fields) -> None:
    r = requests.patch(f"{amo_emu.url}/_sandbox/leads/{lead_id}", json={"fields": fields}, timeout=5)
    r.raise_for_status()


def lead(amo_emu, lead_id) -> dict:
    r = requests.get(f"{amo_emu.url}/_sandbox/leads/{lead_id}", timeout=5)
    r.raise_for_status()
    return r.json()


def zayavki(onec_emu, lead_id=None) -> list[dict]:
    params = {"lead": str(lead_id)} if lead_id is not None else None
    r = requests.get(onec_emu.url + "/_sandbox/zayavki", params=params, timeout=5)
    r.raise_for_status()
    return r.json()


def requests_of(emu) -> dict:
    return requests.get(emu.url + "/_sandbox/requests", timeout=5).json()


def reset_requests(emu) -> None:
    requests.delete(emu.url + "/_sandbox/requests", timeout=5).raise_for_status()


def fault(emu, **spec) -> None:
    requests.post(emu.url + "/_sandbox/faults", json=spec, timeout=5).raise_for_status()


def number(onec_emu, counter: int = 219) -> str:
    """The «Заявка» number 1C gives ``counter`` in this run's format (``00000000219``, ``МС00-000219``)."""
    return onec_emu.number(counter)


def shown(onec_emu, counter: int = 219) -> str:
    """That number as the clinic sees it in a note: «219», or «МС00-000219» as it is."""
    return display_number(onec_emu.number(counter))


def writes(counts: dict) -> dict:
    """Only the writing requests (POST/PATCH/DELETE) of an emulator's counts."""
    return {k: v for k, v in counts.get("counts", {}).items() if k.split(" ")[0] in ("POST", "PATCH", "DELETE")}
