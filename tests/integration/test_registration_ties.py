"""The registration cursor on ``updated_at`` ties: amoCRM stamps leads in whole seconds and a
batch shares one, so hundreds of leads can sit on the same second, across page boundaries
(at most 250 a page: https://www.amocrm.ru/developers/content/crm_platform/leads-api)."""

from __future__ import annotations

import time
from urllib.parse import unquote

from amo1c_sync.domain.registration import display_number
from amo1c_sync.store.models import Cursor
from tests.support.e2e import EFIMOVA, lead, requests_of, reset_requests, run, zayavki

FLAG = "Зарегистрировать в 1С"


def flag(amo_emu, lead_id: int, at: str) -> None:
    amo_emu.update_lead(lead_id, {"Дата записи к врачу": "22.12.2021", "Врач": EFIMOVA,
                                  "Время записи": at, FLAG: True})


def test_given_300_leads_on_one_second_across_pages_when_registering_then_none_is_skipped_and_none_loops(
        amo_emu, onec_emu, settings, store):
    second = int(time.time()) - 60
    amo_emu.book.clock = lambda: second   # every write below, and the job's own, on this second
    ids = [amo_emu.create_lead(f"Сделка {i}") for i in range(300)]
    edges = {ids[0]: "9:05", ids[249]: "10:05", ids[250]: "11:05", ids[299]: "12:05"}  # page 1 | page 2
    for lead_id, at in edges.items():
        flag(amo_emu, lead_id, at)

    first = run(settings, store)

    assert first.ok, first.errors
    assert sorted(int(z["lead"]) for z in zayavki(onec_emu)) == sorted(edges)
    assert all(lead(amo_emu, i)["notes"] == ["Создан документ Заявка № " + _number(onec_emu, i)] for i in edges)
    with store.session() as s:
        assert int(s.get(Cursor, "registration.updated_at").value) == second

    # a lead flagged later on that same second is still seen: the cursor keeps the second itself
    flag(amo_emu, ids[150], "12:35")
    reset_requests(amo_emu)
    second_run = run(settings, store)

    assert second_run.ok, second_run.errors
    assert [int(z["lead"]) for z in zayavki(onec_emu) if z["start"].endswith("12:35:00")] == [ids[150]]
    # bounded: two pages of the tie (plus, at most, page 1 again when the keyset moves to it)
    assert _listing_pages(amo_emu) <= 3

    # nothing left: the next run registers nothing again and ends as soon
    reset_requests(amo_emu)
    third = run(settings, store)
    assert third.ok
    assert len(zayavki(onec_emu)) == 5
    assert _listing_pages(amo_emu) <= 3
    assert "PATCH /api/v4/leads" not in requests_of(amo_emu)["counts"]
    assert all(len(lead(amo_emu, i)["notes"]) == 1 for i in [*edges, ids[150]])


def _number(onec_emu, lead_id: int) -> str:
    [z] = zayavki(onec_emu, lead_id)
    return display_number(z["number"])


def _listing_pages(amo_emu) -> int:
    """Requests of the listing by ``updated_at`` (not the by-id reads of flagged leads)."""
    return sum(1 for e in requests_of(amo_emu)["log"]
               if e["path"] == "/api/v4/leads" and "updated_at" in unquote(e["target"]))
