"""Helpers for the F7 lifecycle tests over HTTP against both emulators: settings with the stages
and the status attribute, a lead booked by hand in 1C, the 1C user's actions, job runs, and
:class:`Hooked`, a gateway that lets another job act at one exact point of a cycle."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Callable
from zoneinfo import ZoneInfo

import requests

from amo1c_sync.config import load_settings
from amo1c_sync.jobs.base import JobContext, run_job
from amo1c_sync.onec import OneC
from tests.support.e2e import EFIMOVA, TOKEN, lead, make_amo, new_lead, seed_lead, zayavki

MSK = ZoneInfo("Europe/Moscow")
STAGES = {"registered": "Запись к врачу / Записан на приём", "cancelled": "Запись к врачу / Отменена",
          "no_show": "Запись к врачу / Не пришёл", "paid": "Запись к врачу / Оплачено"}
TOMORROW = datetime.now(MSK).date() + timedelta(days=1)


def settings_for(amo_emu, onec_emu, *, stages=STAGES, **stage_extra):
    return load_settings(None, overrides={
        "amocrm": {"base_url": amo_emu.url, "long_lived_token": TOKEN, "rate_limit": "1000"},
        "onec": {"base_url": onec_emu.url, "username": onec_emu.username, "password": onec_emu.password},
        "onec_names": {"zayavka_state": "Состояние"},
        "sync": {"cancelled_states": "Отменена", "no_show_states": "Не пришел"},
        "stages": {**stages, **stage_extra},
        "fields": {"cancel_flag": "Отменить запись в 1С"},
    })


def at(day: date, hm: str) -> str:
    return f"{day.isoformat()}T{hm}:00"


def booked(amo_emu, onec_emu, *, day: date = TOMORROW, hm="09:05", doctor=EFIMOVA, status=None) -> tuple[int, str]:
    """A lead whose fields say what its «Заявка» says, and that «Заявка», made by hand in 1C."""
    lid = new_lead(amo_emu, **{"Дата записи к врачу": day.strftime("%d.%m.%Y"), "Врач": doctor,
                               "Время записи": hm})
    if status:
        requests.patch(f"{amo_emu.url}/_sandbox/leads/{lid}", json={"status": status}, timeout=5).raise_for_status()
    r = requests.post(onec_emu.url + "/_sandbox/zayavki", timeout=5,
                      json={"lead": lid, "doctor": doctor, "start": at(day, hm)})
    r.raise_for_status()
    return lid, r.json()["ref"]


def act(onec_emu, ref, action=None, **body):
    """What a 1C user does to a «Заявка»: ``delete``, ``unpost``, ``post``, or a PATCH of ``body``."""
    if action:
        r = requests.post(f"{onec_emu.url}/_sandbox/zayavki/{ref}/{action}", timeout=5)
    else:
        r = requests.patch(f"{onec_emu.url}/_sandbox/zayavki/{ref}", json=body, timeout=5)
    r.raise_for_status()


def gateways(settings, store) -> tuple[Any, OneC]:
    """amoCRM and 1C gateways that know the base's names (the status attribute)."""
    o = settings.onec
    onec = OneC(o.base_url, o.username, o.password, names=settings.onec_names, max_retries=0,
                backoff_base=0.01, backoff_max=0.05)
    return make_amo(settings, store), onec


def run(settings, store, job="lifecycle", *, amocrm=None, onec=None, **kw):
    """A job run; ``amocrm`` / ``onec`` replace a gateway (a :class:`Hooked` one)."""
    amo, one = gateways(settings, store)
    ctx = JobContext(settings, store, amocrm=amocrm or amo, onec=onec or one, **kw)
    return run_job(ctx, job)


def cycle(settings, store, **kw):
    result = run(settings, store, "lifecycle", **kw)
    assert result.status == "ok", result.errors
    return result


def notes(amo_emu, lid) -> list[str]:
    return [n for n in lead(amo_emu, lid)["notes"]]


def where(day: date, hm: str, doctor: str) -> str:
    return f"{day.strftime('%d.%m.%Y')} {int(hm[:2])}:{hm[3:]} {doctor}"


def registered_from_card(amo_emu, onec_emu, settings, store) -> tuple[int, dict]:
    lid = seed_lead(amo_emu)
    assert run(settings, store, "registration").status == "ok"
    (z,) = zayavki(onec_emu, lid)
    return lid, z


class Hooked:
    """A gateway whose method ``name`` runs ``before`` (or ``after``) once, around its first call:
    what another job or a person does at that exact point of this job's cycle, with no thread and
    no sleep. Everything else goes to ``gateway`` unchanged."""

    def __init__(self, gateway: Any, name: str, *, before: Callable[[], Any] | None = None,
                 after: Callable[[], Any] | None = None):
        self._gateway, self._name = gateway, name
        self._before, self._after = before, after
        self.fired = False

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._gateway, attr)
        if attr != self._name or self.fired:
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.fired:
                return value(*args, **kwargs)
            self.fired = True
            if self._before is not None:
                self._before()
            out = value(*args, **kwargs)
            if self._after is not None:
                self._after()
            return out
        return call
