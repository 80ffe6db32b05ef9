"""Proof that the emulator speaks the real amoCRM API, not just ours: a third-party client from
PyPI, aioamocrm, pointed at the emulator through its documented ``base_url=`` ("a proxy or a test
server"), exchanges an authorization code, lists leads and custom fields, updates a lead, adds a
note, and refreshes an expired access token by itself — without burning a refresh token.

(amocrm-api-wrapper 1.0.1 also takes a custom ``crm_url`` but its GET requests pass ``json=`` to
``httpx.Client.get`` and fail with TypeError; amocrm-sdk and amocrm-api hard-code *.amocrm.ru.)"""

from __future__ import annotations

import asyncio

import pytest
import requests

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator

aioamocrm = pytest.importorskip("aioamocrm", reason="test dependency aioamocrm")


@pytest.fixture
def emu():
    with AmoCRMEmulator(rate_limit=7) as e:
        yield e


async def _story(emu, lead_id: int) -> dict:
    code = emu.new_auth_code()
    storage = aioamocrm.MemoryTokenStorage()
    oauth = aioamocrm.OAuth2(client_id=code["client_id"], client_secret=code["client_secret"],
                             redirect_uri=code["redirect_uri"], storage=storage)
    out: dict = {}
    async with aioamocrm.AmoCRMClient(base_url=emu.url, auth=oauth) as amo:
        await amo.exchange_code(code["code"])
        out["leads"] = [lead async for lead in amo.leads.iterate(
            filter={"updated_at": {"from": 0}}, order={"updated_at": "asc"})]
        out["fields"] = [f async for f in amo.leads.custom_fields.iterate()]
        emu.expire_tokens()   # its access token dies: the next call gets 401 and refreshes
        price_field = next(f.id for f in out["fields"] if f.name == "Сумма1С")
        out["refs"] = await amo.leads.update([{"id": lead_id, "price": 1501, "custom_fields_values": [
            {"field_id": price_field, "values": [{"value": "1500.50"}]}]}])
        await amo.leads.notes.create([{"entity_id": lead_id, "note_type": "common",
                                       "params": {"text": "Создан документ Заявка № 219"}}])
        out["after"] = await amo.leads.get(lead_id)
    return out


def test_given_a_third_party_client_when_it_authorises_lists_and_updates_then_the_emulator_serves_it(emu):
    lead_id = emu.create_lead("Иванова", {"Врач": "Ефимова Е.В.", "Дата записи к врачу": "22.12.2021"})

    out = asyncio.run(_story(emu, lead_id))

    assert [lead.id for lead in out["leads"]] == [lead_id]
    assert {f.name for f in out["fields"]} >= {"Врач", "Сумма1С", "Дата записи к врачу"}
    assert [r.id for r in out["refs"]] == [lead_id]
    assert out["after"].price == 1501
    seen = requests.get(f"{emu.url}/_sandbox/leads/{lead_id}", timeout=5).json()
    assert seen["fields"]["Сумма1С"] == "1500.50"
    assert seen["notes"] == ["Создан документ Заявка № 219"]
    stats = emu.token_stats()
    assert stats["code_exchanges"] == 1
    assert stats["refresh_count"] == 1
    assert stats["refresh_reuse_count"] == 0
    assert emu.requests()["max_per_second"] <= 7
