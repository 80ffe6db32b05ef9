"""The amoCRM gateway against the emulator over HTTP: paging, batches, per-lead errors, rate
limiting, 429/5xx retries, 403 stop, fields and enums."""

from __future__ import annotations

import itertools

import threading
from datetime import date
from decimal import Decimal
from types import SimpleNamespace

import pytest

from amo1c_sync.amocrm import field_names, from_settings
from amo1c_sync.amocrm.auth import TokenManager
from amo1c_sync.amocrm.gateway import AmoCRM
from amo1c_sync.amocrm.ratelimit import RateLimiter
from amo1c_sync.errors import ConfigError, FatalError, RetriableError
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.store import Store

FIELDS = ["Дата записи к врачу", "Врач", "Время записи", "ФИО клиента", "Сумма1С",
          "Зарегистрировать в 1С", "Заявка 1С"]


@pytest.fixture
def store(sqlite_url):   # the token store is not the subject here: one SQLite file is enough
    s = Store(sqlite_url)
    s.upgrade()
    yield s
    s.dispose()


def _client(emu, store, *, rate: float | None = None, **kw) -> AmoCRM:
    tm = TokenManager(store, base_url=emu.url, client_id=emu.client_id,
                      client_secret=emu.client_secret, redirect_uri=emu.redirect_uri)
    tm.exchange_code(emu.new_auth_code()["code"])
    kw.setdefault("backoff_base", 0.05)
    kw.setdefault("backoff_max", 0.5)
    return AmoCRM(emu.url, token_manager=tm,
                  rate_limiter=RateLimiter(rate) if rate else None, **kw)


@pytest.fixture
def emu():
    with AmoCRMEmulator(rate_limit=1000) as e:
        yield e


@pytest.fixture
def api(emu, store):
    return _client(emu, store)


def test_given_seven_leads_when_listing_three_per_page_then_all_come_once_in_updated_order(emu, api):
    seconds = itertools.count(1_700_000_000)  # each write in a second of its own
    emu.book.clock = lambda: next(seconds)
    ids = [emu.create_lead(f"Лид {i}") for i in range(7)]
    emu.update_lead(ids[0], {"ФИО клиента": "Петров"})   # now the most recently updated

    leads = list(api.iter_leads_updated_since(0, limit=3))

    assert [lead["id"] for lead in leads] == ids[1:] + ids[:1]
    assert [lead["updated_at"] for lead in leads] == sorted(lead["updated_at"] for lead in leads)
    assert emu.requests()["counts"]["GET /api/v4/leads"] >= 3


def test_given_no_lead_changed_since_the_cursor_when_listing_then_204_ends_it(emu, api):
    lid = emu.create_lead("Старый")
    cursor = emu.lead(lid)["updated_at"] + 100

    assert list(api.iter_leads_updated_since(cursor, overlap=10)) == []
    assert emu.requests()["by_status"].get("204") == 1


def test_given_a_cursor_when_listing_then_the_overlap_brings_back_recent_leads(emu, api):
    emu.book.clock = lambda: 1_700_000_000
    a = emu.create_lead("A")
    emu.book.clock = lambda: 1_700_000_030
    b = emu.create_lead("B")
    ts_b = emu.lead(b)["updated_at"]

    assert [lead["id"] for lead in api.iter_leads_updated_since(ts_b, overlap=0)] == [b]
    assert [lead["id"] for lead in api.iter_leads_updated_since(ts_b, overlap=60)] == [a, b]


def test_given_120_ids_when_fetching_then_three_filtered_requests_return_them(emu, api):
    ids = [emu.create_lead(f"L{i}") for i in range(120)]
    emu.delete_lead(ids[5])

    leads = api.get_leads(ids)

    assert sorted(lead["id"] for lead in leads) == sorted(set(ids) - {ids[5]})
    assert emu.requests()["counts"]["GET /api/v4/leads"] == 3


def test_given_120_updates_when_writing_then_chunks_of_at_most_50(emu, api):
    fm = api.field_map(FIELDS)
    ids = [emu.create_lead(f"L{i}") for i in range(120)]

    result = api.update_leads([{"id": i, "price": 100 + n,
                                "custom_fields_values": [fm.cf("Сумма1С", Decimal("100.50") + n)]}
                               for n, i in enumerate(ids)])

    assert result.all_ok
    assert sorted(result.ok) == sorted(ids)
    assert emu.requests()["counts"]["PATCH /api/v4/leads"] == 3
    assert emu.lead(ids[7]) ["price"] == 107
    assert emu.lead(ids[7])["fields"]["Сумма1С"] == "107.50"
    assert set(result.updated_at) == set(ids)


def test_given_a_batch_with_bad_leads_when_writing_then_each_is_reported_and_the_rest_succeed(emu, api):
    fm = api.field_map(FIELDS)
    ids = [emu.create_lead(f"L{i}") for i in range(50)]
    emu.delete_lead(ids[30])
    patches = [{"id": i, "custom_fields_values": [fm.cf("ФИО клиента", f"Клиент {n}")]}
               for n, i in enumerate(ids)]
    patches[3]["custom_fields_values"] = [{"field_id": fm.id("Врач"), "values": [{"enum_id": 999}]}]
    patches[10]["custom_fields_values"] = [{"field_id": fm.id("Сумма1С"), "values": [{"value": "много"}]}]
    patches[20]["custom_fields_values"] = [{"field_id": 123, "values": [{"value": "x"}]}]

    result = api.update_leads(patches)

    assert {lid: e.code for lid, e in result.failed.items()} == {
        ids[3]: "amocrm:NotSupportedChoice", ids[10]: "amocrm:InvalidType",
        ids[20]: "amocrm:NotSupportedChoice", ids[30]: "amocrm:NotFound"}
    assert f"field {fm.id('Врач')}" in str(result.failed[ids[3]])
    assert sorted(result.ok) == sorted(set(ids) - set(result.failed))
    assert emu.lead(ids[4])["fields"]["ФИО клиента"] == "Клиент 4"
    assert "ФИО клиента" not in emu.lead(ids[3])["fields"]
    assert emu.requests()["counts"]["PATCH /api/v4/leads"] == 2   # rejected once, resent once


def test_given_a_400_that_names_no_lead_when_writing_then_the_batch_is_bisected(emu, api):
    ids = [emu.create_lead(f"L{i}") for i in range(8)]
    emu.add_fault(count=1, status=400, path_prefix="/api/v4/leads", method="PATCH")

    result = api.update_leads([{"id": i, "price": 5} for i in ids])

    assert result.all_ok
    assert sorted(result.ok) == sorted(ids)
    assert emu.requests()["counts"]["PATCH /api/v4/leads"] == 3
    assert all(emu.lead(i)["price"] == 5 for i in ids)


def test_given_notes_for_live_and_deleted_leads_when_adding_then_only_the_deleted_fails(emu, api):
    a, b, gone = (emu.create_lead(n) for n in ("A", "B", "C"))
    emu.delete_lead(gone)

    result = api.add_notes([(a, "Создан документ Заявка № 219"), (b, "Изменён документ"), (gone, "x")])

    assert sorted(result.ok) == sorted([a, b])
    assert set(result.failed) == {gone}
    assert emu.lead(a)["notes"] == ["Создан документ Заявка № 219"]


def test_given_configured_names_when_resolving_then_ids_and_enum_ids_are_known(emu, api):
    fm = api.field_map(FIELDS)

    assert fm.id("Врач") == emu.field_id("Врач")
    assert fm.enum_id("Врач", "Ишаева М.И.") is not None
    assert fm.type("Дата записи к врачу") == "date"


def test_given_an_unknown_field_name_when_resolving_then_config_error_lists_existing_names(api):
    with pytest.raises(ConfigError) as exc:
        api.field_map(["Врач", "Доктор"])
    msg = str(exc.value)
    assert "«Доктор»" in msg
    assert "«Врач»" in msg
    assert "«Сумма1С»" in msg


def test_given_typed_values_when_written_then_amocrm_stores_them_as_a_person_sees_them(emu, api):
    fm = api.field_map(FIELDS)
    lid = emu.create_lead("Пациент", {"Зарегистрировать в 1С": True})

    result = api.update_leads([{"id": lid, "price": 1501, "custom_fields_values": [
        fm.cf("Дата записи к врачу", date(2021, 12, 22)), fm.cf("Врач", "Ефимова Е.В."),
        fm.cf("Время записи", "08:15"), fm.cf("Сумма1С", Decimal("1500.50")),
        fm.cf("Зарегистрировать в 1С", False), fm.cf("Заявка 1С", "219")]}])

    assert result.all_ok
    seen = emu.lead(lid)["fields"]
    assert seen == {"Дата записи к врачу": "22.12.2021", "Врач": "Ефимова Е.В.",
                    "Время записи": "08:15", "Сумма1С": "1500.50",
                    "Зарегистрировать в 1С": False, "Заявка 1С": "219"}
    lead = api.get_lead(lid)
    assert fm.get(lead, "Дата записи к врачу") == date(2021, 12, 22)
    assert fm.get(lead, "Сумма1С") == Decimal("1500.50")
    assert fm.get(lead, "Врач") == "Ефимова Е.В."
    assert fm.get(lead, "Зарегистрировать в 1С") is False


def test_given_new_doctors_when_updating_enums_then_existing_ids_are_kept_and_new_ones_added(emu, api):
    fm = api.field_map(["Врач"])
    keep = [e for e in fm.enums("Врач") if e["value"] != "Петрова А.С."]

    field = api.update_field_enums(fm.id("Врач"), keep + ["Смирнов П.П."])

    got = {e["value"]: e["id"] for e in field["enums"]}
    assert set(got) == {"Ефимова Е.В.", "Ишаева М.И.", "Смирнов П.П."}
    assert got["Ефимова Е.В."] == fm.enum_id("Врач", "Ефимова Е.В.")


def test_given_a_429_storm_when_working_then_it_recovers_without_exceeding_7_per_second(store):
    with AmoCRMEmulator(rate_limit=7) as emu:
        api = _client(emu, store, rate=7, max_retries=8)
        lid = emu.create_lead("L")
        emu.add_fault(count=6, status=429, path_prefix="/api/")

        for _ in range(14):
            assert api.get_leads([lid])

        stats = emu.requests()
        assert stats["by_status"]["429"] == 6
        assert stats["max_per_second"] <= 7


def test_given_four_jobs_sharing_one_limiter_when_busy_then_amocrm_never_sees_more_than_7_per_second(store):
    with AmoCRMEmulator(rate_limit=7) as emu:
        shared = RateLimiter(7)
        base = _client(emu, store)
        apis = [AmoCRM(emu.url, token_manager=base.tokens, rate_limiter=shared) for _ in range(4)]
        errors = []

        def job(a):
            try:
                for _ in range(5):
                    a.account()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=job, args=(a,)) for a in apis]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)

        stats = emu.requests()
        assert errors == []
        assert stats["counts"]["GET /api/v4/account"] == 20
        assert stats["max_per_second"] <= 7
        assert "429" not in stats["by_status"]


def test_given_sustained_abuse_when_amocrm_blocks_with_403_then_the_gateway_stops_without_hammering(store):
    with AmoCRMEmulator(rate_limit=2, block_after=3, block_seconds=600) as emu:
        api = _client(emu, store, max_retries=10)   # no client limiter: the abuser
        with pytest.raises(FatalError) as exc:  # noqa: PT012 - the 403 comes at some call of the storm
            for _ in range(20):
                api.account()
        assert "403" in str(exc.value)
        after_block = emu.requests()["total"]
        assert emu.requests()["by_status"]["403"] == 1

        with pytest.raises(FatalError):
            api.get_leads([1])
        # the cooldown is the transport's; a gateway given it shares the block
        other_job = AmoCRM(emu.url, token_manager=api.tokens, cooldown=api.cooldown)
        with pytest.raises(FatalError):
            other_job.account()
        assert emu.requests()["total"] == after_block


def test_given_5xx_and_a_dropped_connection_when_reading_then_it_retries_and_succeeds(emu, api):
    emu.add_fault(count=2, status=503, path_prefix="/api/v4/account")
    emu.add_fault(count=1, status=None, drop=True, path_prefix="/api/v4/account")

    assert api.account_timezone() == "Europe/Moscow"
    assert emu.requests()["counts"]["GET /api/v4/account"] == 4


def test_given_a_persistent_outage_when_reading_then_retriable_error_after_max_retries(emu, store):
    api = _client(emu, store, max_retries=2)
    emu.add_fault(count=50, status=500, path_prefix="/api/")

    with pytest.raises(RetriableError):
        api.account()
    assert emu.requests()["counts"]["GET /api/v4/account"] == 3


def test_given_a_slow_amocrm_when_reading_then_the_read_timeout_applies(emu, store):
    api = _client(emu, store, read_timeout=0.2, max_retries=1)
    emu.add_fault(count=1, status=None, delay_ms=800, path_prefix="/api/v4/account")

    assert api.account()["id"]   # first attempt timed out, the retry succeeded
    assert emu.requests()["counts"]["GET /api/v4/account"] == 2


def test_given_settings_when_building_from_them_then_the_gateway_uses_them(emu, store):
    token = emu.issue_long_lived_token()
    settings = SimpleNamespace(
        amocrm=SimpleNamespace(base_url=emu.url, client_id="", client_secret=None, redirect_uri="",
                               long_lived_token=token, rate_limit=50.0, connect_timeout=2.0,
                               read_timeout=3.0, token_timeout=4.0),
        fields=SimpleNamespace(date="Дата записи к врачу", doctor="Врач", zayavka_number=""))

    api = from_settings(settings, store)

    assert api.timeouts == (2.0, 3.0)
    assert api.rate_limiter.rate == 50.0
    assert api.tokens.timeouts == (2.0, 4.0)   # the token endpoint's own, generous read timeout
    assert from_settings(settings, store).rate_limiter is api.rate_limiter   # one per process
    assert api.field_map(field_names(settings)).id("Врач") == emu.field_id("Врач")


def test_given_the_real_settings_class_when_building_then_it_fits(emu, store):
    import dataclasses

    from amo1c_sync import config

    defaults = config.Settings()
    settings = dataclasses.replace(defaults, amocrm=dataclasses.replace(
        defaults.amocrm, base_url=emu.url, long_lived_token=emu.issue_long_lived_token()))

    api = from_settings(settings, store)

    fm = api.field_map(field_names(settings))   # the default names are the sandbox account's fields
    assert fm.id(settings.fields.doctor) == emu.field_id("Врач")
    assert fm.id(settings.fields.flag) == emu.field_id(settings.fields.flag)
