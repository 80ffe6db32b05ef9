"""Bad inputs, part 4: amounts with many decimals and negative amounts (refunds) in «Оказание
услуг» (issue 9's table; README, Troubleshooting).

What the user sees is the lead in amoCRM: «Сумма1С» holds the exact 1C total (no float
rounding, no "1.5E+2"), the budget holds it rounded half up to whole roubles and never goes
below 0 (amoCRM takes no negative budget), and nothing is lost. The end-to-end tests run the real
payments job against both emulators on loopback (in process, fast).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests

from amo1c_sync.config import load_settings
from amo1c_sync.jobs.base import JobContext, run_job
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator
from tests.support import quick_amocrm, quick_onec

TOKEN = "bad-inputs-token"


# --- end to end: the payments job against both emulators -------------------------------------------

@pytest.fixture
def emus():
    with AmoCRMEmulator(rate_limit=1000, long_lived_token=TOKEN) as amo, OneCEmulator() as onec:
        yield amo, onec


@pytest.fixture
def store(sqlite_store):
    """SQLite only: what these tests try does not depend on the database."""
    return sqlite_store


def run_payments(amo, onec, store):
    s = load_settings(None, overrides={
        "amocrm": {"base_url": amo.url, "long_lived_token": TOKEN, "rate_limit": "1000"},
        "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password}})
    gw = quick_amocrm(s.amocrm.base_url, store, token=TOKEN)
    onec_gw = quick_onec(s.onec.base_url, s.onec.username, s.onec.password)
    return run_job(JobContext(s, store, amocrm=gw, onec=onec_gw), "payments")


def lead_with_zayavka(amo, onec, start: str) -> int:
    lead_id = requests.post(amo.url + "/_sandbox/leads", json={"name": "Сделка", "fields": {}},
                            timeout=10).json()["id"]
    r = requests.post(onec.url + "/_sandbox/zayavki",
                      json={"lead": lead_id, "doctor": "Ефимова Е.В.", "start": start}, timeout=10)
    r.raise_for_status()
    return lead_id


def service(onec, lead_id: int, amount: str) -> str:
    r = requests.post(onec.url + "/_sandbox/services", json={"lead": lead_id, "amount": amount}, timeout=10)
    r.raise_for_status()
    return r.json()["ref"]


def view(amo, lead_id) -> dict:
    return requests.get(f"{amo.url}/_sandbox/leads/{lead_id}", timeout=10).json()


def test_given_many_decimals_and_refunds_in_1c_when_payments_run_then_each_lead_shows_the_exact_total(
        emus, store):
    amo, onec = emus
    decimals = lead_with_zayavka(amo, onec, "2021-12-22T08:15:00")
    service(onec, decimals, "150.123456789")
    service(onec, decimals, "0.000000001")
    refunded = lead_with_zayavka(amo, onec, "2021-12-22T08:30:00")
    service(onec, refunded, "1500.00")
    service(onec, refunded, "-499.50")
    refund_only = lead_with_zayavka(amo, onec, "2021-12-22T08:45:00")
    service(onec, refund_only, "-200.00")

    result = run_payments(amo, onec, store)

    assert result.ok, result.errors
    a, b, c = view(amo, decimals), view(amo, refunded), view(amo, refund_only)
    assert Decimal(a["fields"]["Сумма1С"]) == Decimal("150.12345679")
    assert a["price"] == 150
    assert Decimal(b["fields"]["Сумма1С"]) == Decimal("1000.50")
    assert b["price"] == 1001
    assert Decimal(c["fields"]["Сумма1С"]) == Decimal("-200")
    assert c["price"] == 0


def test_given_a_refund_that_brings_a_total_to_zero_when_payments_run_then_the_lead_shows_0_not_the_old_total(
        emus, store):
    amo, onec = emus
    lead_id = lead_with_zayavka(amo, onec, "2021-12-22T09:05:00")
    service(onec, lead_id, "150.00")
    assert run_payments(amo, onec, store).ok
    assert view(amo, lead_id)["price"] == 150
    service(onec, lead_id, "-150.00")
    result = run_payments(amo, onec, store)
    assert result.ok, result.errors
    v = view(amo, lead_id)
    assert Decimal(v["fields"]["Сумма1С"]) == 0
    assert v["price"] == 0
